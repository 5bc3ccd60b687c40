"""Hermes-style tool calls (what Qwen3 and Qwen3-Omni write) parsed out of generated text.

A call is `<tool_call>{"name": ..., "arguments": {...}}</tool_call>`. As in vLLM's hermes
parser, a block whose JSON does not parse (or has no string `name`, or arguments that are
not an object) is not a call: its text stays content, and so does an unclosed block.
Text outside the calls is content; when there are calls, the whitespace-only stretches
between and around them (the newlines the model writes between blocks) are dropped.

`parse_tool_calls` reads a complete output; `ToolCallStream` turns text deltas into
OpenAI stream deltas and gives the same calls and the same content for any split of the
text: a block is held until it closes, then sent as two deltas (id and name, then the
arguments), and a text end that may be the start of `<tool_call>` is held back.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

START = "<tool_call>"
END = "</tool_call>"


def new_call_id() -> str:
    return f"call_{uuid.uuid4().hex[:24]}"


@dataclass(frozen=True)
class ToolCall:
    id: str
    name: str
    arguments: str  # JSON text

    def message_entry(self) -> dict[str, Any]:
        """The OpenAI `message.tool_calls[i]` object."""
        return {
            "id": self.id,
            "type": "function",
            "function": {"name": self.name, "arguments": self.arguments},
        }


@dataclass(frozen=True)
class ParsedToolCalls:
    content: str | None  # None when there are calls and no other text
    calls: list[ToolCall]


def parse_block(body: str) -> tuple[str, str] | None:
    """(name, arguments as JSON text) of a block's body, or None when it is not a call."""
    try:
        value = json.loads(body)
    except ValueError:
        return None
    if not isinstance(value, dict) or not isinstance(value.get("name"), str):
        return None
    arguments = value.get("arguments", {})
    if not isinstance(arguments, dict):
        return None
    return value["name"], json.dumps(arguments, ensure_ascii=False)


def parse_tool_calls(text: str, new_id: Callable[[], str] = new_call_id) -> ParsedToolCalls:
    segments: list[str] = []  # the text between valid calls (broken blocks included)
    calls: list[ToolCall] = []
    current = ""
    position = 0
    while True:
        start = text.find(START, position)
        end = -1 if start < 0 else text.find(END, start + len(START))
        if end < 0:
            current += text[position:]
            break
        current += text[position:start]
        parsed = parse_block(text[start + len(START) : end])
        if parsed is None:
            current += text[start : end + len(END)]
        else:
            segments.append(current)
            current = ""
            calls.append(ToolCall(new_id(), *parsed))
        position = end + len(END)
    segments.append(current)
    if not calls:
        return ParsedToolCalls(text, [])
    content = "".join(segment for segment in segments if segment.strip())
    return ParsedToolCalls(content or None, calls)


def _held_prefix(text: str, marker: str) -> int:
    """Length of the longest end of `text` that is a proper start of `marker`."""
    for size in range(min(len(text), len(marker) - 1), 0, -1):
        if marker.startswith(text[-size:]):
            return size
    return 0


@dataclass
class StreamOutput:
    """What one text delta gave: content text and OpenAI `delta.tool_calls` entries."""

    content: str = ""
    tool_calls: list[dict[str, Any]] = field(default_factory=list)


class ToolCallStream:
    def __init__(self, new_id: Callable[[], str] = new_call_id) -> None:
        self._new_id = new_id
        self._buffer = ""
        self._in_block = False
        self._pending = ""  # a whitespace-only stretch of content, held
        self._segment_has_text = False
        self.calls: list[ToolCall] = []

    def feed(self, text: str) -> StreamOutput:
        out = StreamOutput()
        self._buffer += text
        while True:
            if not self._in_block:
                start = self._buffer.find(START)
                if start < 0:
                    held = _held_prefix(self._buffer, START)
                    self._content(self._buffer[: len(self._buffer) - held], out)
                    self._buffer = self._buffer[len(self._buffer) - held :]
                    return out
                self._content(self._buffer[:start], out)
                self._buffer = self._buffer[start + len(START) :]
                self._in_block = True
            end = self._buffer.find(END)
            if end < 0:
                return out
            body, self._buffer = self._buffer[:end], self._buffer[end + len(END) :]
            self._in_block = False
            self._block(body, out)

    def finish(self) -> StreamOutput:
        out = StreamOutput()
        rest = (START if self._in_block else "") + self._buffer
        self._buffer, self._in_block = "", False
        self._content(rest, out)
        if not self.calls:
            out.content += self._pending
        self._pending = ""
        return out

    def _content(self, text: str, out: StreamOutput) -> None:
        if self._segment_has_text:
            out.content += text
            return
        self._pending += text
        if self._pending.strip():
            out.content += self._pending
            self._pending = ""
            self._segment_has_text = True

    def _block(self, body: str, out: StreamOutput) -> None:
        parsed = parse_block(body)
        if parsed is None:
            self._content(START + body + END, out)
            return
        call = ToolCall(self._new_id(), *parsed)
        index = len(self.calls)
        self.calls.append(call)
        self._pending, self._segment_has_text = "", False
        named = {"name": call.name, "arguments": ""}
        out.tool_calls.append(
            {"index": index, "id": call.id, "type": "function", "function": named}
        )
        out.tool_calls.append({"index": index, "function": {"arguments": call.arguments}})
