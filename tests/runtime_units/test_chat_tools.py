"""Tool calling and reasoning through the in-process API over the FAKE backend
(qms_testkit.fake_backend): the backend answers scripted text (encoded with the tiny model's
real tokenizer); the real template, protocol, serving and parsers run. Raw HTTP and the
official `openai` client, stream and non-stream."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
from fastapi.testclient import TestClient

from qms_runtime.types import GrammarSpec
from qms_testkit.fake_backend import FakeBackend, fake_app
from qms_testkit.serving import API_KEY, auth
from qms_testkit.tool_examples import HISTORY, TIME, WEATHER

pytestmark = pytest.mark.runtime

MODEL = "tiny-qwen3"
EOS = 2
CHAT = "/v1/chat/completions"
TWO_CALLS = (
    "Let me look.\n"
    '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>\n'
    '<tool_call>\n{"name": "get_time", "arguments": {}}\n</tool_call>'
)
EXPECTED_CALLS = [("get_weather", '{"city": "Paris"}'), ("get_time", "{}")]
THINKING = "<think>\nThe user greets me.\n</think>\n\nHello there!"


@pytest.fixture(scope="module")
def tokenizer(qwen3_dir: Path) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(qwen3_dir))


@pytest.fixture
def backend() -> FakeBackend:
    return FakeBackend([], (EOS,), capacity=8)


@pytest.fixture
def client(qwen3_dir: Path, backend: FakeBackend, tmp_path: Path) -> Iterator[TestClient]:
    key_file = tmp_path / "key"
    key_file.write_text(API_KEY)
    with fake_app(qwen3_dir, backend, 4096, served_model_name=MODEL, api_key_file=key_file) as made:
        yield made[0]


def _say(backend: FakeBackend, tokenizer: Any, text: str) -> None:
    backend.script = [*tokenizer.encode(text), EOS]


def _chat(**fields: Any) -> dict[str, Any]:
    return {
        "model": MODEL,
        "messages": [{"role": "user", "content": "Weather in Paris?"}],
        **fields,
    }


def _stream(client: TestClient, body: dict[str, Any]) -> list[dict[str, Any]]:
    with client.stream("POST", CHAT, json={**body, "stream": True}, headers=auth()) as response:
        assert response.status_code == 200, response.read()
        lines = [line for line in response.iter_lines() if line.startswith("data: ")]
    assert lines[-1] == "data: [DONE]"
    return [json.loads(line[6:]) for line in lines[:-1]]


def _openai(client: TestClient) -> openai.OpenAI:
    return openai.OpenAI(base_url="http://testserver/v1", api_key=API_KEY, http_client=client)


def _calls(message: dict[str, Any]) -> list[tuple[str, str]]:
    for call in message["tool_calls"]:
        assert re.fullmatch(r"call_[0-9a-f]{24}", call["id"]) and call["type"] == "function"
    return [(c["function"]["name"], c["function"]["arguments"]) for c in message["tool_calls"]]


def test_tool_calls_parsed(client: TestClient, backend: FakeBackend, tokenizer: Any) -> None:
    _say(backend, tokenizer, TWO_CALLS)
    body = client.post(CHAT, json=_chat(tools=[WEATHER, TIME]), headers=auth()).json()
    choice = body["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    message = choice["message"]
    assert set(message) == {"role", "content", "tool_calls"}
    assert message["content"] == "Let me look.\n"
    assert _calls(message) == EXPECTED_CALLS
    assert backend.params[-1].grammar is None  # "auto": nothing forced


def test_only_tool_calls_gives_null_content(
    client: TestClient, backend: FakeBackend, tokenizer: Any
) -> None:
    _say(backend, tokenizer, TWO_CALLS.removeprefix("Let me look.\n"))
    body = client.post(CHAT, json=_chat(tools=[WEATHER, TIME]), headers=auth()).json()
    assert body["choices"][0]["message"]["content"] is None
    assert _calls(body["choices"][0]["message"]) == EXPECTED_CALLS


def test_broken_tool_call_stays_content(
    client: TestClient, backend: FakeBackend, tokenizer: Any
) -> None:
    broken = '<tool_call>\n{"name": "get_weather", "arguments": {"city": \n</tool_call>'
    _say(backend, tokenizer, broken)
    body = client.post(CHAT, json=_chat(tools=[WEATHER]), headers=auth()).json()
    assert body["choices"][0]["message"] == {"role": "assistant", "content": broken}
    assert body["choices"][0]["finish_reason"] == "stop"


def test_without_tools_or_with_choice_none_the_text_is_content(
    client: TestClient, backend: FakeBackend, tokenizer: Any
) -> None:
    _say(backend, tokenizer, TWO_CALLS)
    for extra in ({}, {"tools": [WEATHER], "tool_choice": "none"}):
        body = client.post(CHAT, json=_chat(**extra), headers=auth()).json()
        assert body["choices"][0]["message"] == {"role": "assistant", "content": TWO_CALLS}
        assert body["choices"][0]["finish_reason"] == "stop"
        prompt = tokenizer.decode(backend.prompts[-1].token_ids)
        assert "<tools>" not in prompt


def test_stream_tool_call_deltas(client: TestClient, backend: FakeBackend, tokenizer: Any) -> None:
    _say(backend, tokenizer, TWO_CALLS)
    chunks = _stream(client, _chat(tools=[WEATHER, TIME]))
    deltas = [chunk["choices"][0]["delta"] for chunk in chunks]
    assert deltas[0] == {"role": "assistant", "content": ""}
    content = "".join(d.get("content") or "" for d in deltas)
    assert content == "Let me look.\n"
    tool_deltas = [entry for d in deltas for entry in d.get("tool_calls", [])]
    assert len(tool_deltas) == 4
    first, args, second, args2 = tool_deltas
    assert re.fullmatch(r"call_[0-9a-f]{24}", first["id"]) and first["id"] != second["id"]
    assert first == {"index": 0, "id": first["id"], "type": "function",
                     "function": {"name": "get_weather", "arguments": ""}}  # fmt: skip
    assert args == {"index": 0, "function": {"arguments": '{"city": "Paris"}'}}
    assert second["index"] == 1 and second["function"] == {"name": "get_time", "arguments": ""}
    assert args2 == {"index": 1, "function": {"arguments": "{}"}}
    reasons = [chunk["choices"][0]["finish_reason"] for chunk in chunks]
    assert reasons[-1] == "tool_calls" and set(reasons[:-1]) == {None}
    assert not any("<tool_call" in (d.get("content") or "") for d in deltas)


def test_openai_client_tool_calls(client: TestClient, backend: FakeBackend, tokenizer: Any) -> None:
    _say(backend, tokenizer, TWO_CALLS)
    api = _openai(client)
    result = api.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "Weather in Paris?"}],
        tools=[WEATHER, TIME],  # type: ignore[list-item]
    )
    choice = result.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content == "Let me look.\n"
    calls = choice.message.tool_calls or []
    assert [(c.function.name, c.function.arguments) for c in calls] == EXPECTED_CALLS  # type: ignore[union-attr]
    stream = api.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "Weather in Paris?"}],
        tools=[WEATHER, TIME],  # type: ignore[list-item]
        stream=True,
    )
    names: dict[int, str] = {}
    arguments: dict[int, str] = {}
    reason = None
    for chunk in stream:
        for call in chunk.choices[0].delta.tool_calls or []:
            if call.function and call.function.name:
                names[call.index] = call.function.name
            arguments[call.index] = arguments.get(call.index, "") + (
                (call.function.arguments if call.function else None) or ""
            )
        reason = chunk.choices[0].finish_reason or reason
    assert [(names[i], arguments[i]) for i in sorted(names)] == EXPECTED_CALLS
    assert reason == "tool_calls"


def test_reasoning_split(client: TestClient, backend: FakeBackend, tokenizer: Any) -> None:
    _say(backend, tokenizer, THINKING)
    body = client.post(CHAT, json=_chat(), headers=auth()).json()
    assert body["choices"][0]["message"] == {
        "role": "assistant",
        "content": "Hello there!",
        "reasoning_content": "The user greets me.",
    }
    deltas = [chunk["choices"][0]["delta"] for chunk in _stream(client, _chat())]
    assert "".join(d.get("reasoning_content", "") for d in deltas) == "The user greets me."
    assert "".join(d.get("content") or "" for d in deltas) == "Hello there!"
    result = _openai(client).chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "hi"}]
    )
    assert result.choices[0].message.content == "Hello there!"
    assert result.choices[0].message.model_extra == {"reasoning_content": "The user greets me."}


def test_reasoning_then_tool_call(client: TestClient, backend: FakeBackend, tokenizer: Any) -> None:
    _say(backend, tokenizer, "<think>\nI need the weather.\n</think>\n\n" + TWO_CALLS)
    body = client.post(CHAT, json=_chat(tools=[WEATHER, TIME]), headers=auth()).json()
    message = body["choices"][0]["message"]
    assert message["reasoning_content"] == "I need the weather."
    assert message["content"] == "Let me look.\n"
    assert _calls(message) == EXPECTED_CALLS
    deltas = [c["choices"][0]["delta"] for c in _stream(client, _chat(tools=[WEATHER, TIME]))]
    assert "".join(d.get("reasoning_content", "") for d in deltas) == "I need the weather."
    assert "".join(d.get("content") or "" for d in deltas) == "Let me look.\n"
    assert len([e for d in deltas for e in d.get("tool_calls", [])]) == 4


def test_enable_thinking_false(client: TestClient, backend: FakeBackend, tokenizer: Any) -> None:
    _say(backend, tokenizer, THINKING)
    body = client.post(
        CHAT, json=_chat(chat_template_kwargs={"enable_thinking": False}), headers=auth()
    ).json()
    assert body["choices"][0]["message"] == {"role": "assistant", "content": THINKING}
    prompt = tokenizer.decode(backend.prompts[-1].token_ids)
    assert prompt == (
        "<|im_start|>user\nWeather in Paris?<|im_end|>\n"
        "<|im_start|>assistant\n<think>\n\n</think>\n\n"
    )
    client.post(CHAT, json=_chat(chat_template_kwargs={"enable_thinking": True}), headers=auth())
    assert tokenizer.decode(backend.prompts[-1].token_ids) == (
        "<|im_start|>user\nWeather in Paris?<|im_end|>\n<|im_start|>assistant\n"
    )


HISTORY_PROMPT = (
    "<|im_start|>system\nBe brief.\n\n# Tools\n\n"
    "You may call one or more functions to assist with the user query.\n\n"
    "You are provided with function signatures within <tools></tools> XML tags:\n<tools>\n"
    + json.dumps(WEATHER, ensure_ascii=False)
    + "\n"
    + json.dumps(TIME, ensure_ascii=False)
    + "\n</tools>\n\nFor each function call, return a json object with function name and "
    "arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n"
    '{"name": <function-name>, "arguments": <args-json-object>}\n</tool_call><|im_end|>\n'
    "<|im_start|>user\nWeather in Paris and the time?<|im_end|>\n"
    "<|im_start|>assistant\n<think>\nTwo tools.\n</think>\n\n"
    '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>\n'
    '<tool_call>\n{"name": "get_time", "arguments": {}}\n</tool_call><|im_end|>\n'
    "<|im_start|>user\n<tool_response>\nsunny, 21 C\n</tool_response>\n"
    "<tool_response>\n14:05\n</tool_response><|im_end|>\n<|im_start|>assistant\n"
)


def test_tool_history_reaches_the_prompt(
    client: TestClient, backend: FakeBackend, tokenizer: Any
) -> None:
    _say(backend, tokenizer, "Sunny, 21 C; it is 14:05.")
    body = {"model": MODEL, "messages": HISTORY, "tools": [WEATHER, TIME]}
    response = client.post(CHAT, json=body, headers=auth())
    assert response.status_code == 200, response.text
    assert response.json()["choices"][0]["message"] == {
        "role": "assistant",
        "content": "Sunny, 21 C; it is 14:05.",
    }
    assert response.json()["choices"][0]["finish_reason"] == "stop"
    assert tokenizer.decode(backend.prompts[-1].token_ids) == HISTORY_PROMPT
    result = _openai(client).chat.completions.create(
        model=MODEL,
        messages=HISTORY,  # type: ignore[arg-type]
        tools=[WEATHER, TIME],  # type: ignore[list-item]
    )
    assert result.choices[0].message.content == "Sunny, 21 C; it is 14:05."
    assert tokenizer.decode(backend.prompts[-1].token_ids) == HISTORY_PROMPT


@pytest.mark.parametrize(
    ("choice", "mode"),
    [
        ("required", "required"),
        ({"type": "function", "function": {"name": "get_time"}}, "get_time"),
    ],
)
def test_forced_tool_choice_sets_the_grammar(
    client: TestClient, backend: FakeBackend, tokenizer: Any, choice: Any, mode: str
) -> None:
    _say(backend, tokenizer, TWO_CALLS)
    for parallel in (True, False):
        body = _chat(tools=[WEATHER, TIME], tool_choice=choice, parallel_tool_calls=parallel)
        response = client.post(CHAT, json=body, headers=auth())
        assert response.status_code == 200, response.text
        grammar = backend.params[-1].grammar
        assert grammar == GrammarSpec(
            "tool_calls",
            json.dumps(
                {
                    "tools": [WEATHER["function"], TIME["function"]],
                    "choice": mode,
                    "parallel": parallel,
                }
            ),
        )
        assert _calls(response.json()["choices"][0]["message"]) == EXPECTED_CALLS


def test_openai_client_400_names_the_param(client: TestClient) -> None:
    api = _openai(client)
    with pytest.raises(openai.BadRequestError) as caught:
        api.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": "hi"}],
            tools=[WEATHER],  # type: ignore[list-item]
            tool_choice={"type": "function", "function": {"name": "nope"}},
        )
    assert caught.value.status_code == 400
    assert caught.value.param == "tool_choice"
    with pytest.raises(openai.BadRequestError) as caught:
        api.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": "hi"}],
            tools=[{"type": "custom", "custom": {"name": "grep"}}],  # type: ignore[list-item]
        )
    assert caught.value.param == "tools.0.type"


def test_chat_template_kwargs_may_not_override_arguments(client: TestClient) -> None:
    unknown = _chat(chat_template_kwargs={"enable_thinking": {"deep": [1]}, "x": 1})
    assert client.post(CHAT, json=unknown, headers=auth()).status_code == 200  # template vars
    for key in ("chat_template", "tools", "add_generation_prompt", "messages"):
        body = _chat(chat_template_kwargs={key: "{{ x }}"})
        reserved = client.post(CHAT, json=body, headers=auth())
        assert reserved.status_code == 400
        assert reserved.json()["error"]["param"] == "chat_template_kwargs"
