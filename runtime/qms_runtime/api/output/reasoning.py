"""Qwen3's thinking, split out of generated text: `<think>...</think>` is the reasoning,
what follows is the content.

Qwen3 (dense and MoE) and Qwen3-Omni write `<think>\\n...\\n</think>\\n\\n` before the
answer. When the prompt already ends inside the think block (a template whose
generation prompt ends with `<think>`), the output starts in the reasoning and only
`</think>` closes it (`starts_in_think`). An output that does not start with `<think>`
has no reasoning; one whose think block never closes (cut by max_tokens) is all
reasoning. The reasoning is stripped of surrounding whitespace, the content of its
leading whitespace. With `enable_thinking` false the template closes an empty think
block itself and serving does not parse at all.

`split_reasoning` reads a complete output; `ReasoningStream` gives the same split for
any split of the text into deltas (a possible start of a marker is held back).
"""

from __future__ import annotations

from dataclasses import dataclass

START = "<think>"
END = "</think>"


def split_reasoning(text: str, starts_in_think: bool = False) -> tuple[str | None, str]:
    """(reasoning or None when there is no think block, content)."""
    if not starts_in_think:
        if not text.startswith(START):
            return None, text
        text = text[len(START) :]
    end = text.find(END)
    if end < 0:
        return text.strip(), ""
    return text[:end].strip(), text[end + len(END) :].lstrip()


class _Trim:
    """Drops leading whitespace; with `trailing`, holds trailing whitespace until more text
    follows (dropped at the end)."""

    def __init__(self, trailing: bool) -> None:
        self._trailing = trailing
        self._started = False
        self._held = ""

    def push(self, text: str) -> str:
        if not self._started:
            text = text.lstrip()
            self._started = bool(text)
        if not self._trailing:
            return text
        combined = self._held + text
        kept = combined.rstrip()
        self._held = combined[len(kept) :]
        return kept


@dataclass
class ReasoningOutput:
    reasoning: str = ""
    content: str = ""


def _held_prefix(text: str, marker: str) -> int:
    for size in range(min(len(text), len(marker) - 1), 0, -1):
        if marker.startswith(text[-size:]):
            return size
    return 0


class ReasoningStream:
    def __init__(self, starts_in_think: bool = False) -> None:
        self._state = "think" if starts_in_think else "start"
        self.found = starts_in_think  # a think block was opened
        self._buffer = ""
        self._reasoning = _Trim(trailing=True)
        self._answer = _Trim(trailing=False)

    def feed(self, text: str) -> ReasoningOutput:
        out = ReasoningOutput()
        self._buffer += text
        if self._state == "start":
            if self._buffer.startswith(START):
                self._buffer = self._buffer[len(START) :]
                self._state, self.found = "think", True
            elif START.startswith(self._buffer):
                return out
            else:
                self._state = "plain"
        if self._state == "think":
            end = self._buffer.find(END)
            if end < 0:
                held = _held_prefix(self._buffer, END)
                cut = len(self._buffer) - held
                out.reasoning = self._reasoning.push(self._buffer[:cut])
                self._buffer = self._buffer[cut:]
                return out
            out.reasoning = self._reasoning.push(self._buffer[:end])
            self._buffer = self._buffer[end + len(END) :]
            self._state = "answer"
        if self._state == "answer":
            out.content = self._answer.push(self._buffer)
        else:
            out.content = self._buffer
        self._buffer = ""
        return out

    def finish(self) -> ReasoningOutput:
        out = ReasoningOutput()
        if self._state == "think":
            out.reasoning = self._reasoning.push(self._buffer)
        else:  # "start": the whole output is a proper start of <think>
            out.content = self._buffer
        self._buffer = ""
        return out
