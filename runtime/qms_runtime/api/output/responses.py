"""OpenAI response bodies and stream chunks, built from plain internal results."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Literal

from qms_runtime.finish import FinishReason

Kind = Literal["chat", "completion"]


@dataclass
class ChoiceResult:
    index: int
    text: str = ""
    token_ids: list[int] = field(default_factory=list)
    finish_reason: FinishReason | None = None
    audio: dict[str, Any] | None = None  # speech out: {id, data (base64 WAV), transcript, ...}
    # Parsed out of `text` (api/output/chat_output.py): content, reasoning_content, tool_calls.
    message: dict[str, Any] | None = None
    logprobs: dict[str, Any] | None = None  # shaped by api/output/logprobs.py


@dataclass(frozen=True)
class ResponseMeta:
    kind: Kind
    response_id: str
    created: int
    model: str
    return_token_ids: bool


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def _choice(meta: ResponseMeta, choice: ChoiceResult) -> dict[str, Any]:
    body: dict[str, Any] = {"index": choice.index}
    if meta.kind == "chat":
        body["message"] = {"role": "assistant", "content": choice.text}
        if choice.message is not None:
            body["message"].update(choice.message)
        if choice.audio is not None:
            body["message"]["audio"] = choice.audio
    else:
        body["text"] = choice.text
    body["logprobs"] = choice.logprobs
    body["finish_reason"] = choice.finish_reason
    if meta.return_token_ids:
        body["token_ids"] = choice.token_ids
    return body


def full_response(
    meta: ResponseMeta, choices: list[ChoiceResult], prompt_tokens: int
) -> dict[str, Any]:
    return {
        "id": meta.response_id,
        "object": "chat.completion" if meta.kind == "chat" else "text_completion",
        "created": meta.created,
        "model": meta.model,
        "choices": [_choice(meta, choice) for choice in choices],
        "usage": usage(prompt_tokens, sum(len(c.token_ids) for c in choices)),
    }


def _chunk(meta: ResponseMeta, choices: list[dict[str, Any]], **extra: Any) -> str:
    body = {
        "id": meta.response_id,
        "object": "chat.completion.chunk" if meta.kind == "chat" else "text_completion",
        "created": meta.created,
        "model": meta.model,
        "choices": choices,
        **extra,
    }
    return sse(body)


def delta_chunk(
    meta: ResponseMeta,
    index: int,
    text: str,
    token_ids: list[int],
    finish_reason: FinishReason | None,
    first: bool = False,
    fields: dict[str, Any] | None = None,
    logprobs: dict[str, Any] | None = None,
) -> str:
    """`fields`: more of a chat delta (reasoning_content, tool_calls)."""
    choice: dict[str, Any] = {"index": index}
    if meta.kind == "chat":
        delta: dict[str, Any] = {"role": "assistant"} if first else {}
        if text or first:
            delta["content"] = text
        delta.update(fields or {})
        choice["delta"] = delta
    else:
        choice["text"] = text
    choice["logprobs"] = logprobs
    choice["finish_reason"] = finish_reason
    if meta.return_token_ids:
        choice["token_ids"] = token_ids
    return _chunk(meta, [choice])


def usage_chunk(meta: ResponseMeta, prompt_tokens: int, completion_tokens: int) -> str:
    return _chunk(meta, [], usage=usage(prompt_tokens, completion_tokens))


def sse(body: dict[str, Any]) -> str:
    return f"data: {json.dumps(body, separators=(',', ':'))}\n\n"


SSE_DONE = "data: [DONE]\n\n"
