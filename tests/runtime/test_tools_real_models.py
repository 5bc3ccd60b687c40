"""Tools and a tool-result history on the real tiny models, one server per family
(qwen3, qwen3_moe, qwen3_omni_moe): 200, a well-formed message that is exactly the
parse of the generated tokens, the exact prompt length, and stream == non-stream."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from media_support import image_part, png
from runtime_support import ARCHS, RuntimeServer, start_server
from test_chat_tools import HISTORY, TIME, WEATHER

from qms_runtime.api.chat_output import OutputParsing, parse_message

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
