"""Nothing silently ignored: every OpenAI request field is honoured or refused by name;
vendor extras are accepted and logged once; omitted sampling fields take the model's
generation_config.json defaults."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from qms_testkit.processes import RuntimeServer, start_server
from qms_testkit.serving import auth

pytestmark = pytest.mark.runtime

MODEL = "tiny-qwen3"
USER = [{"role": "user", "content": "Say something."}]
SCHEMA = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}

# Every field of OpenAI's chat completions request, with a value that is not its default,
# and what QMS does with it: 200 (honoured) or the `param` of its 400.
CHAT_FIELDS: list[tuple[str, Any, str | None]] = [
    ("audio", {"voice": "ethan", "format": "wav"}, None),  # only with modalities audio
    ("frequency_penalty", 0.5, None),
    ("function_call", "auto", "function_call"),
    ("functions", [{"name": "f", "parameters": {}}], "functions"),
    ("logit_bias", {"5": 1.5}, None),
    ("logprobs", True, None),
    ("max_completion_tokens", 3, None),
    ("max_tokens", 3, None),
    ("metadata", {"k": "v"}, "metadata"),
    ("modalities", ["text"], None),
    ("n", 2, None),
    ("parallel_tool_calls", False, None),
    ("prediction", {"type": "content", "content": "x"}, "prediction"),
    ("presence_penalty", 0.5, None),
    ("prompt_cache_key", "user-1", None),  # prefix caching is automatic
    ("reasoning_effort", "low", "reasoning_effort"),
    ("response_format", {"type": "text"}, None),
    ("safety_identifier", "hash-1", None),
    ("seed", 3, None),
    ("service_tier", "auto", None),
    ("stop", ["\n\n"], None),
    ("store", False, None),
    ("stream", True, None),
    ("stream_options", {"include_usage": True}, None),
    ("temperature", 0.5, None),
    ("top_logprobs", 2, None),  # with logprobs (below)
    ("top_p", 0.9, None),
    ("user", "someone", None),
    ("verbosity", "low", "verbosity"),
    ("web_search_options", {}, None),  # empty: nothing asked
    ("web_search_options", {"search_context_size": "low"}, "web_search_options"),
]
COMPLETION_FIELDS: list[tuple[str, Any, str | None]] = [
    ("best_of", 2, "best_of"),
    ("echo", False, None),
    ("frequency_penalty", 0.5, None),
    ("logit_bias", {"5": 1.5}, None),
    ("logprobs", 2, None),
    ("max_tokens", 3, None),
    ("n", 2, None),
    ("presence_penalty", 0.5, None),
    ("seed", 3, None),
    ("stop", ["\n"], None),
    ("stream", True, None),
    ("stream_options", {"include_usage": True}, None),
    ("suffix", "end", "suffix"),
    ("temperature", 0.5, None),
    ("top_p", 0.9, None),
    ("user", "someone", None),
]
# vLLM's extras that QMS honours under the same names.
EXTRA_FIELDS: list[tuple[str, Any, str | None]] = [
    ("top_k", 5, None),
    ("min_p", 0.1, None),
    ("repetition_penalty", 1.2, None),
    ("min_tokens", 2, None),
    ("stop_token_ids", [5], None),
    ("ignore_eos", True, None),
    ("return_token_ids", True, None),
    ("chat_template_kwargs", {"enable_thinking": False}, None),
]


def _chat(**fields: Any) -> dict[str, Any]:
    body = {"model": MODEL, "messages": USER, "max_tokens": 3, **fields}
    if "top_logprobs" in fields:
        body["logprobs"] = True
    return body


@pytest.mark.parametrize(
    ("name", "value", "refused"),
    CHAT_FIELDS + EXTRA_FIELDS,
    ids=[f"chat-{n}-{i}" for i, (n, _, _) in enumerate(CHAT_FIELDS + EXTRA_FIELDS)],
)
def test_every_chat_field(
    main_server: RuntimeServer, name: str, value: Any, refused: str | None
) -> None:
    body = _chat(**{name: value})
    response = httpx.post(f"{main_server.base_url}/v1/chat/completions", json=body, headers=auth())
    if refused is None:
        assert response.status_code == 200, response.text
    else:
        assert response.status_code == 400, response.text
        assert response.json()["error"]["param"] == refused


@pytest.mark.parametrize(
    ("name", "value", "refused"),
    COMPLETION_FIELDS + EXTRA_FIELDS[:-1],
    ids=[f"cmpl-{n}" for n, _, _ in COMPLETION_FIELDS + EXTRA_FIELDS[:-1]],
)
def test_every_completion_field(
    main_server: RuntimeServer, name: str, value: Any, refused: str | None
) -> None:
    body = {"model": MODEL, "prompt": "Hello", "max_tokens": 3, name: value}
    response = httpx.post(f"{main_server.base_url}/v1/completions", json=body, headers=auth())
    if refused is None:
        assert response.status_code == 200, response.text
    else:
        assert response.status_code == 400, response.text
        assert response.json()["error"]["param"] == refused


def test_vendor_extras_are_accepted_and_logged_once(main_server: RuntimeServer) -> None:
    for _ in range(3):
        body = _chat(qms_test_vendor_extra={"x": 1}, another_vendor_flag=True)
        response = httpx.post(
            f"{main_server.base_url}/v1/chat/completions", json=body, headers=auth()
        )
        assert response.status_code == 200, response.text
    log = main_server.log_path.read_text(errors="replace")
    assert log.count("request field 'qms_test_vendor_extra' is not supported and was ignored") == 1
    assert log.count("request field 'another_vendor_flag' is not supported and was ignored") == 1


@pytest.fixture(scope="module")
def defaults_server(
    tiny_model: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RuntimeServer]:
    """A model whose generation_config.json asks for top_k 1 at temperature 1.5."""
    import shutil

    source: Path = tiny_model("qwen3")
    model_dir = tmp_path_factory.mktemp("defaults") / "model"
    shutil.copytree(source, model_dir)
    config_path = model_dir / "generation_config.json"
    config = json.loads(config_path.read_text())
    config.update(do_sample=True, temperature=1.5, top_k=1, top_p=0.95)
    config_path.write_text(json.dumps(config))
    (model_dir / "SHA256SUMS").unlink()
    server = start_server(
        model_dir, model_dir.parent, served_model_name="defaults", verify_checksums="false"
    )
    yield server
    assert server.stop() == 0


def _ids(server: RuntimeServer, **fields: Any) -> list[int]:
    body = {
        "model": "defaults",
        "prompt": "Once upon a time",
        "max_tokens": 10,
        "ignore_eos": True,
        "return_token_ids": True,
        **fields,
    }
    response = httpx.post(f"{server.base_url}/v1/completions", json=body)
    assert response.status_code == 200, response.text
    ids: list[int] = response.json()["choices"][0]["token_ids"]
    return ids


def test_model_generation_config_gives_the_defaults(defaults_server: RuntimeServer) -> None:
    greedy = _ids(defaults_server, temperature=0)
    # Omitted: the model's top_k 1 makes temperature 1.5 sampling greedy, whatever the seed.
    assert [_ids(defaults_server, seed=s) for s in (1, 2, 3)] == [greedy] * 3
    # Given by the request: the request wins (top_k off: temperature 1.5 samples).
    sampled = [_ids(defaults_server, seed=s, top_k=0) for s in (1, 2, 3)]
    assert any(ids != greedy for ids in sampled)
    log = defaults_server.log_path.read_text(errors="replace")
    expected = "{'temperature': 1.5, 'top_p': 0.95, 'top_k': 1.0}"
    assert f"sampling defaults from generation_config.json: {expected}" in log
