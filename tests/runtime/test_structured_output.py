"""`response_format` json_schema / json_object on real tiny models with random weights:
every answer parses and validates, at concurrency 16 with unconstrained requests mixed
in, through raw HTTP and the official `openai` client, on the batch and the media path."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import openai
import pytest

from qms_testkit.processes import RuntimeServer, start_server
from qms_testkit.serving import ARCHS

pytestmark = pytest.mark.runtime

SCHEMAS: list[dict[str, Any]] = [
    {
        "type": "object",
        "properties": {
            "name": {"type": "string", "maxLength": 8},
            "age": {"type": "integer", "minimum": 0, "maximum": 120},
            "admin": {"type": "boolean"},
        },
        "required": ["name", "age", "admin"],
        "additionalProperties": False,
    },
    {
        "type": "object",
        "properties": {
            "colour": {"enum": ["red", "green", "blue"]},
            "tags": {
                "type": "array",
                "items": {"type": "string", "maxLength": 4},
                "maxItems": 3,
            },
        },
        "required": ["colour", "tags"],
        "additionalProperties": False,
    },
    {
        "type": "object",
        "properties": {
            "point": {
                "type": "object",
                "properties": {"x": {"type": "integer", "minimum": -9, "maximum": 9}},
                "required": ["x"],
                "additionalProperties": False,
            }
        },
        "required": ["point"],
        "additionalProperties": False,
    },
]


@pytest.fixture(scope="module", params=ARCHS)
def server(
    request: pytest.FixtureRequest, tiny_model: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RuntimeServer]:
    model_dir: Path = tiny_model(request.param)
    srv = start_server(
        model_dir, tmp_path_factory.mktemp(f"structured-{request.param}"), served_model_name="tiny"
    )
    yield srv
    assert srv.stop() == 0


def _format(schema: dict[str, Any]) -> dict[str, Any]:
    spec = {"name": "answer", "schema": schema, "strict": True}
    return {"type": "json_schema", "json_schema": spec}


def test_every_answer_validates_at_concurrency_16(server: RuntimeServer) -> None:
    async def run() -> list[tuple[int, dict[str, Any]]]:
        async with httpx.AsyncClient(base_url=server.base_url, timeout=300) as client:

            async def one(i: int) -> tuple[int, dict[str, Any]]:
                body: dict[str, Any] = {
                    "model": "tiny",
                    "messages": [{"role": "user", "content": f"Describe item {i} as JSON."}],
                    "max_tokens": 160,
                    "temperature": 1.0 if i % 2 else 0.0,
                    "seed": i,
                }
                if i % 4 != 3:  # three in four constrained, the rest free text
                    body["response_format"] = _format(SCHEMAS[i % len(SCHEMAS)])
                response = await client.post("/v1/chat/completions", json=body)
                assert response.status_code == 200, response.text
                return i, response.json()

            return list(await asyncio.gather(*(one(i) for i in range(16))))

    constrained = 0
    for i, answer in asyncio.run(run()):
        if i % 4 == 3:
            continue
        choice = answer["choices"][0]
        assert choice["finish_reason"] == "stop", choice
        jsonschema.validate(json.loads(choice["message"]["content"]), SCHEMAS[i % len(SCHEMAS)])
        constrained += 1
    assert constrained == 12


def test_openai_client_streams_valid_json(server: RuntimeServer) -> None:
    client = openai.OpenAI(base_url=f"{server.base_url}/v1", api_key="unused")
    schema = SCHEMAS[0]
    stream = client.chat.completions.create(
        model="tiny",
        messages=[{"role": "user", "content": "Who are you?"}],
        max_tokens=160,
        temperature=0.8,
        seed=5,
        response_format=_format(schema),  # type: ignore[arg-type]
        stream=True,
    )
    text = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
    jsonschema.validate(json.loads(text), schema)
    whole = client.chat.completions.create(
        model="tiny",
        messages=[{"role": "user", "content": "Who are you?"}],
        max_tokens=160,
        temperature=0.8,
        seed=5,
        response_format=_format(schema),  # type: ignore[arg-type]
    )
    assert whole.choices[0].message.content == text  # seeded: the same answer both ways


def test_json_object_and_completions(server: RuntimeServer, tiny_model: Any) -> None:
    """Any object: free strings and keys have no bound, so random weights get a nudge
    (logit_bias +4 on tokens with a quote or a brace, as in test_grammar.py) to end."""
    import transformers

    tokenizer = transformers.AutoTokenizer.from_pretrained(str(tiny_model("qwen3")))
    closing = [i for i in range(len(tokenizer)) if set(tokenizer.decode([i])) & set('"}')]
    body = {
        "model": "tiny",
        "prompt": "A JSON object:",
        "max_tokens": 300,
        "temperature": 0,
        "response_format": {"type": "json_object"},
        "logit_bias": {str(i): 4 for i in closing},
    }
    response = httpx.post(f"{server.base_url}/v1/completions", json=body, timeout=300)
    assert response.status_code == 200, response.text
    choice = response.json()["choices"][0]
    assert choice["finish_reason"] == "stop"
    assert isinstance(json.loads(choice["text"]), dict)


def test_bad_schema_is_a_400_naming_response_format(server: RuntimeServer) -> None:
    body = {
        "model": "tiny",
        "messages": [{"role": "user", "content": "x"}],
        "response_format": _format({"type": "object", "properties": {"a": {"type": "nonsense"}}}),
    }
    response = httpx.post(f"{server.base_url}/v1/chat/completions", json=body)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"].startswith("response_format")


@pytest.mark.parametrize("server", ["qwen3_omni_moe"], indirect=True)
def test_media_request_answers_valid_json(server: RuntimeServer) -> None:
    """The media path (plain `generate`) runs the same grammar as the batch."""
    from qms_testkit.media import chat, image_part, png

    schema = SCHEMAS[1]
    for seed in range(3):
        body = chat([image_part(png(32, 32, seed)), {"type": "text", "text": "Describe it."}])
        body.update(model="tiny", max_tokens=160, temperature=1.0, seed=seed,
                    response_format=_format(schema))  # fmt: skip
        response = httpx.post(f"{server.base_url}/v1/chat/completions", json=body, timeout=300)
        assert response.status_code == 200, response.text
        choice = response.json()["choices"][0]
        assert choice["finish_reason"] == "stop", choice
        jsonschema.validate(json.loads(choice["message"]["content"]), schema)
