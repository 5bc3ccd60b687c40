"""Tools and a tool-result history on the real tiny models, one server per family
(qwen3, qwen3_moe, qwen3_omni_moe): 200, a well-formed message that is exactly the
parse of the generated tokens, the exact prompt length, and stream == non-stream."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from qms_runtime.api.output.chat_output import OutputParsing, parse_message
from qms_testkit.media import image_part, png
from qms_testkit.processes import RuntimeServer, start_server
from qms_testkit.serving import ARCHS
from qms_testkit.tool_examples import HISTORY, TIME, WEATHER

pytestmark = pytest.mark.runtime

SERVED = "tiny"
MAX_TOKENS = 24


@pytest.fixture(scope="module", params=ARCHS)
def arch_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, Path, RuntimeServer]]:
    from qms_runtime.tools.tiny_model import write_tiny_model

    arch = request.param
    # The tools preamble alone is ~500 tokens of the tiny tokenizer: a longer context.
    model_dir = write_tiny_model(tmp_path_factory.mktemp(f"model-{arch}"), arch, max_positions=2048)
    server = start_server(
        model_dir, tmp_path_factory.mktemp(f"tools-{arch}"), served_model_name=SERVED
    )
    yield arch, model_dir, server
    assert server.stop() == 0


def _without_ids(message: dict[str, Any]) -> dict[str, Any]:
    calls = [{**call, "id": "x"} for call in message.get("tool_calls", [])]
    return {**message, **({"tool_calls": calls} if calls else {})}


def test_tools_and_tool_history(arch_server: tuple[str, Path, RuntimeServer]) -> None:
    from transformers import AutoTokenizer

    _, model_dir, server = arch_server
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    body = {"model": SERVED, "messages": HISTORY, "tools": [WEATHER, TIME],
            "max_tokens": MAX_TOKENS, "temperature": 0, "return_token_ids": True}  # fmt: skip
    response = httpx.post(f"{server.base_url}/v1/chat/completions", json=body, timeout=120)
    assert response.status_code == 200, response.text
    result = response.json()
    prompt = tokenizer.apply_chat_template(
        HISTORY, tools=[WEATHER, TIME], add_generation_prompt=True, tokenize=False
    )
    assert result["usage"]["prompt_tokens"] == len(tokenizer.encode(prompt))
    choice = result["choices"][0]
    text = tokenizer.decode(choice["token_ids"], skip_special_tokens=True)
    parsed = parse_message(text, OutputParsing(tools=True, reasoning=True)).fields()
    assert _without_ids(choice["message"]) == _without_ids({"role": "assistant", **parsed})
    expected_reason = "tool_calls" if parsed.get("tool_calls") else None
    assert choice["finish_reason"] in ({expected_reason} if expected_reason else {"stop", "length"})

    client = openai.OpenAI(base_url=f"{server.base_url}/v1", api_key="unused")
    stream = client.chat.completions.create(
        model=SERVED, messages=HISTORY, tools=[WEATHER, TIME],  # type: ignore[arg-type, list-item]
        max_tokens=MAX_TOKENS, temperature=0, stream=True,
    )  # fmt: skip
    content, reasoning, names, reason = "", "", [], None
    for chunk in stream:
        delta = chunk.choices[0].delta
        content += delta.content or ""
        reasoning += (delta.model_extra or {}).get("reasoning_content", "")
        names += [c.function.name for c in delta.tool_calls or [] if c.function and c.function.name]
        reason = chunk.choices[0].finish_reason or reason
    assert content == (choice["message"]["content"] or "")
    assert reasoning == (choice["message"].get("reasoning_content") or "")
    assert names == [c["function"]["name"] for c in choice["message"].get("tool_calls", [])]
    assert reason == choice["finish_reason"]


def test_thinking_off_and_media_with_tools(arch_server: tuple[str, Path, RuntimeServer]) -> None:
    arch, _, server = arch_server
    client = openai.OpenAI(base_url=f"{server.base_url}/v1", api_key="unused")
    off = client.chat.completions.create(
        model=SERVED, messages=[{"role": "user", "content": "hi"}], max_tokens=4,
        extra_body={"chat_template_kwargs": {"enable_thinking": False}},
    )  # fmt: skip
    assert off.choices[0].message.model_extra == {}  # no reasoning_content
    assert off.usage is not None and off.usage.completion_tokens >= 1
    if arch != "qwen3_omni_moe":
        return
    content = [image_part(png(32, 32)), {"type": "text", "text": "Weather here?"}]
    media = client.chat.completions.create(
        model=SERVED, messages=[{"role": "user", "content": content}, *HISTORY[2:]],  # type: ignore[list-item]
        tools=[WEATHER, TIME], max_tokens=4,  # type: ignore[list-item]
    )  # fmt: skip
    assert media.choices[0].message.role == "assistant"
    assert media.choices[0].finish_reason in {"stop", "length", "tool_calls"}


BOUNDED = [
    {"type": "function", "function": {"name": "set_light", "description": "Switch a light.",
     "parameters": {"type": "object", "properties": {
         "room": {"enum": ["kitchen", "hall"]}, "level": {"type": "integer", "minimum": 0,
         "maximum": 10}}, "required": ["room", "level"], "additionalProperties": False}}},
    {"type": "function", "function": {"name": "lock", "description": "Lock a door.",
     "parameters": {"type": "object", "properties": {"door": {"type": "string", "maxLength": 6}},
     "required": ["door"], "additionalProperties": False}}},
]  # fmt: skip


def _validate_calls(message: dict[str, Any], allowed: set[str]) -> list[str]:
    import jsonschema

    schemas = {tool["function"]["name"]: tool["function"]["parameters"] for tool in BOUNDED}
    names = []
    for call in message["tool_calls"]:
        name = call["function"]["name"]
        assert name in allowed
        jsonschema.validate(json.loads(call["function"]["arguments"]), schemas[name])
        assert call["id"].startswith("call_") and call["type"] == "function"
        names.append(name)
    return names


@pytest.mark.parametrize(
    ("choice", "parallel"),
    [
        ("required", False),
        ("required", True),
        ({"type": "function", "function": {"name": "lock"}}, False),
    ],
    ids=["required", "required-parallel", "named"],
)
def test_required_tool_calls_are_grammar_constrained(
    arch_server: tuple[str, Path, RuntimeServer], choice: Any, parallel: bool
) -> None:
    """With tool_choice required or a named function, random weights still call a listed
    function with arguments that validate, for greedy and sampled requests alike."""
    _, model_dir, server = arch_server
    allowed = {"lock"} if isinstance(choice, dict) else {"set_light", "lock"}
    # Parallel: after each block the grammar allows another or the end; random weights
    # would go on to max_tokens, so the end of turn gets a nudge (the grammar decides where).
    end = json.loads((model_dir / "generation_config.json").read_text())["eos_token_id"][0]
    bias = {str(end): 5} if parallel else {}
    for seed in range(4):
        body = {"model": SERVED, "messages": [{"role": "user", "content": f"Do task {seed}."}],
                "tools": BOUNDED, "tool_choice": choice, "parallel_tool_calls": parallel,
                "max_tokens": 200, "temperature": 1.0 if seed else 0, "seed": seed,
                "logit_bias": bias}  # fmt: skip
        response = httpx.post(f"{server.base_url}/v1/chat/completions", json=body, timeout=300)
        assert response.status_code == 200, response.text
        choice_out = response.json()["choices"][0]
        assert choice_out["finish_reason"] == "tool_calls", choice_out
        names = _validate_calls(choice_out["message"], allowed)
        assert len(names) >= 1 and (parallel or len(names) == 1)
        assert choice_out["message"]["content"] is None


def test_required_tool_call_streams_through_openai(
    arch_server: tuple[str, Path, RuntimeServer],
) -> None:
    _, _, server = arch_server
    client = openai.OpenAI(base_url=f"{server.base_url}/v1", api_key="unused")
    kwargs: dict[str, Any] = {
        "model": SERVED,
        "messages": [{"role": "user", "content": "Lock it."}],
        "tools": BOUNDED,
        "tool_choice": "required",
        "max_tokens": 200,
        "temperature": 0.7,
        "seed": 11,
    }
    whole = client.chat.completions.create(**kwargs)
    calls: dict[int, dict[str, str]] = {}
    reasons = []
    for chunk in client.chat.completions.create(stream=True, **kwargs):
        for part in chunk.choices:
            reasons.append(part.finish_reason)
            for delta in part.delta.tool_calls or []:
                entry = calls.setdefault(delta.index, {"name": "", "arguments": ""})
                if delta.function and delta.function.name:
                    entry["name"] += delta.function.name
                if delta.function and delta.function.arguments:
                    entry["arguments"] += delta.function.arguments
    expected = [
        {"name": c.function.name, "arguments": c.function.arguments}
        for c in whole.choices[0].message.tool_calls or []
    ]
    assert [calls[i] for i in sorted(calls)] == expected
    assert whole.choices[0].finish_reason == "tool_calls" and "tool_calls" in reasons
