# ruff: noqa: E501  (the corpus reads best as one case per line)
"""A corpus of bad requests, each with its exact status and OpenAI error (param, code,
type): sent to a real server (tests/runtime/test_bad_requests.py) and to the app in
process over the fake backend (tests/runtime_units/test_api_in_process.py)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from qms_testkit.serving import auth

MODEL = "tiny-qwen3"
CHAT = "/v1/chat/completions"
COMPLETIONS = "/v1/completions"
USER = [{"role": "user", "content": "hi"}]
TOOL = {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}
CALL = {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}


@dataclass(frozen=True)
class Case:
    name: str
    path: str
    body: Any  # dict -> JSON; bytes -> sent as is
    status: int
    param: str | None = None
    code: str | None = None
    type: str = "invalid_request_error"
    method: str = "POST"
    headers: dict[str, str] = field(default_factory=auth)


def chat(**fields: Any) -> dict[str, Any]:
    return {"model": MODEL, "messages": USER, **fields}


def completion(**fields: Any) -> dict[str, Any]:
    return {"model": MODEL, "prompt": "hi", **fields}


CASES = [
    Case("malformed json", CHAT, b'{"model": "tiny-qwen3", "messages": [', 400, None, "invalid_json"),
    Case("not utf-8", CHAT, b"\xff\xfe{}", 400, None, "invalid_encoding"),
    Case("body is a list", CHAT, b"[1, 2]", 400, None, "invalid_json"),
    Case("empty body", CHAT, b"", 400, None, "invalid_json"),
    Case("lone surrogate in model", CHAT, chat(model="\ud800"), 400, "model", "invalid_unicode"),
    Case("lone surrogate in prompt", COMPLETIONS, completion(prompt="a\udfff"), 400, "prompt", "invalid_unicode"),
    Case("lone surrogate in a message", CHAT, chat(messages=[{"role": "user", "content": "\udbff"}]), 400, "messages.0.content", "invalid_unicode"),
    Case("100,000-deep json", CHAT, b"[" * 100_000 + b"]" * 100_000, 400, None, "too_deep"),
    Case("NaN temperature", CHAT, b'{"model": "tiny-qwen3", "messages": [], "temperature": NaN}', 400, None, "invalid_number"),
    Case("missing model", CHAT, {"messages": USER}, 400, "model"),
    Case("model not a string", CHAT, chat(model=7), 400, "model"),
    Case("unknown model", CHAT, chat(model="gpt-5"), 404, "model", "model_not_found"),
    Case("missing messages", CHAT, {"model": MODEL}, 400, "messages"),
    Case("empty messages", CHAT, chat(messages=[]), 400, "messages"),
    Case("messages not a list", CHAT, chat(messages="hi"), 400, "messages"),
    Case("bad role", CHAT, chat(messages=[{"role": "wizard", "content": "x"}]), 400, "messages.0.role"),
    Case("content wrong type", CHAT, chat(messages=[{"role": "user", "content": 5}]), 400, "messages.0.content"),
    Case("negative max_tokens", CHAT, chat(max_tokens=-1), 400, "max_tokens"),
    Case("zero max_tokens", CHAT, chat(max_tokens=0), 400, "max_tokens"),
    Case("max_tokens as string", CHAT, chat(max_tokens="10"), 400, "max_tokens"),
    Case("huge max_tokens", CHAT, chat(max_tokens=10**9), 400, "max_tokens", "context_length_exceeded"),
    Case("chat prompt over context", CHAT, chat(messages=[{"role": "user", "content": "word " * 2000}]), 400, "messages", "context_length_exceeded"),
    Case("prompt over context", COMPLETIONS, completion(prompt=[5] * 600), 400, "prompt", "context_length_exceeded"),
    Case("bad stream flag", CHAT, chat(stream="yes"), 400, "stream"),
    Case("negative temperature", CHAT, chat(temperature=-0.5), 400, "temperature"),
    Case("temperature as text", CHAT, chat(temperature="hot"), 400, "temperature"),
    Case("top_p zero", CHAT, chat(top_p=0), 400, "top_p"),
    Case("n zero", CHAT, chat(n=0), 400, "n"),
    Case("n too large", CHAT, chat(n=1000), 400, "n"),
    Case("33 stop sequences", CHAT, chat(stop=[f"s{i}" for i in range(33)]), 400, "stop"),
    Case("empty stop sequence", CHAT, chat(stop=[""]), 400, "stop"),
    Case("stream_options wrong type", CHAT, chat(stream=True, stream_options="usage"), 400, "stream_options"),
    Case("top_logprobs without logprobs", CHAT, chat(top_logprobs=2), 400, "top_logprobs", "unsupported_parameter"),
    Case("top_logprobs over 20", CHAT, chat(logprobs=True, top_logprobs=21), 400, "top_logprobs"),
    Case("completion logprobs over 20", COMPLETIONS, completion(logprobs=21), 400, "logprobs"),
    Case("penalty out of range", CHAT, chat(presence_penalty=2.5), 400, "presence_penalty"),
    Case("functions refused", CHAT, chat(functions=[{"name": "f"}]), 400, "functions", "unsupported_parameter"),
    Case("function_call refused", CHAT, chat(function_call="auto"), 400, "function_call", "unsupported_parameter"),
    Case("prediction refused", CHAT, chat(prediction={"type": "content", "content": "x"}), 400, "prediction", "unsupported_parameter"),
    Case("reasoning_effort refused", CHAT, chat(reasoning_effort="low"), 400, "reasoning_effort", "unsupported_parameter"),
    Case("store true refused", CHAT, chat(store=True), 400, "store"),
    Case("suffix refused", COMPLETIONS, completion(suffix="end"), 400, "suffix", "unsupported_parameter"),
    Case("logit_bias key not a token id", CHAT, chat(logit_bias={"hello": 1}), 400, "logit_bias"),
    Case("logit_bias key a superscript digit", CHAT, chat(logit_bias={"\u00b2": 1}), 400, "logit_bias"),
    Case("logit_bias out of range", CHAT, chat(logit_bias={"5": 101}), 400, "logit_bias"),
    Case("logit_bias token past vocab", CHAT, chat(logit_bias={str(10**6): 1}), 400, "logit_bias"),
    Case("stop_token_ids past vocab", COMPLETIONS, completion(stop_token_ids=[10**6]), 400, "stop_token_ids"),
    Case("top_k below -1", CHAT, chat(top_k=-2), 400, "top_k"),
    Case("min_p over 1", CHAT, chat(min_p=1.5), 400, "min_p"),
    Case("repetition_penalty zero", CHAT, chat(repetition_penalty=0), 400, "repetition_penalty"),
    Case("response_format unknown type", CHAT, chat(response_format={"type": "xml"}), 400, "response_format.type"),
    Case("json_schema without schema", CHAT, chat(response_format={"type": "json_schema", "json_schema": {"name": "x"}}), 400, "response_format.json_schema"),
    Case("tool without function", CHAT, chat(tools=[{"type": "function"}]), 400, "tools.0.function"),
    Case("tool of another type", CHAT, chat(tools=[TOOL, {"type": "custom", "custom": {"name": "x"}}]), 400, "tools.1.type"),
    Case("tool name not a string", CHAT, chat(tools=[{"type": "function", "function": {"name": 3}}]), 400, "tools.0.function.name"),
    Case("tool_choice names an unknown function", CHAT, chat(tools=[TOOL], tool_choice={"type": "function", "function": {"name": "nope"}}), 400, "tool_choice"),
    Case("tool_choice required without tools", CHAT, chat(tool_choice="required"), 400, "tool_choice"),
    Case("tool_choice unknown word", CHAT, chat(tools=[TOOL], tool_choice="sometimes"), 400, "tool_choice"),
    Case("parallel_tool_calls as text", CHAT, chat(tools=[TOOL], parallel_tool_calls="yes"), 400, "parallel_tool_calls"),
    Case("chat_template_kwargs not an object", CHAT, chat(chat_template_kwargs=["enable_thinking"]), 400, "chat_template_kwargs"),
    Case("chat_template_kwargs overriding tokenize", CHAT, chat(chat_template_kwargs={"tokenize": True}), 400, "chat_template_kwargs"),
    Case("tool_calls on a user message", CHAT, chat(messages=[{"role": "user", "content": "hi", "tool_calls": [CALL]}]), 400, "messages.0.tool_calls"),
    Case("tool call arguments not a string", CHAT, chat(messages=[*USER, {"role": "assistant", "tool_calls": [{"id": "c", "type": "function", "function": {"name": "f", "arguments": {}}}]}]), 400, "messages.1.tool_calls.0.function.arguments"),
    Case("missing prompt", COMPLETIONS, {"model": MODEL}, 400, "prompt"),
    Case("empty prompt", COMPLETIONS, completion(prompt=""), 400, "prompt"),
    Case("token id out of vocab", COMPLETIONS, completion(prompt=[1, 10**6]), 400, "prompt"),
    Case("max_tokens 0 without echo", COMPLETIONS, completion(max_tokens=0), 400, "max_tokens"),
    Case("echo not a bool", COMPLETIONS, completion(echo="yes"), 400, "echo"),
    Case("tokenize another model", "/tokenize", {"model": "gpt-5", "prompt": "x"}, 404, "model", "model_not_found"),
    Case("tokenize without prompt", "/tokenize", {"model": MODEL}, 400, "prompt"),
    Case("tokenize both template flags", "/tokenize", {"messages": USER, "continue_final_message": True}, 400, "continue_final_message"),
    Case("tokenize without key", "/tokenize", {"prompt": "x"}, 401, None, "invalid_api_key", "authentication_error", headers={}),
    Case("detokenize id out of range", "/detokenize", {"model": MODEL, "tokens": [1, 10**6]}, 400, "tokens.1", "invalid_token_id"),
    Case("detokenize negative id", "/detokenize", {"tokens": [-1]}, 400, "tokens.0", "invalid_token_id"),
    Case("detokenize ids as text", "/detokenize", {"tokens": "1 2"}, 400, "tokens"),
    Case("predict with bad body", "/v1/predict", {"model": MODEL}, 400, "messages"),
    Case("oversized body", CHAT, b'{"pad": "' + b"x" * (33_554_432 + 10) + b'"}', 413, None, "request_too_large"),
    Case("missing api key", CHAT, chat(), 401, None, "invalid_api_key", "authentication_error", headers={}),
    Case("wrong api key", CHAT, chat(), 401, None, "invalid_api_key", "authentication_error", headers={"Authorization": "Bearer nope"}),
    Case("models without key", "/v1/models", None, 401, None, "invalid_api_key", "authentication_error", "GET", {}),
    Case("unknown route", "/v1/nothing-here", chat(), 404, None, "not_found"),
    Case("wrong method", CHAT, None, 405, None, None, method="GET"),
]  # fmt: skip
