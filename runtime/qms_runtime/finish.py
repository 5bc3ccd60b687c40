"""Every finish reason a choice can end with, decided here and nowhere else.

- "stop": the model ended its turn (an end-of-sequence token, or one of the request's
  `stop_token_ids`), or a `stop` string was met;
- "length": `max_tokens` (or the context) ran out, or `max_tokens` 0 with `echo` (the
  prompt is the answer);
- "tool_calls": the model ended its turn after tool calls (chat, parsed output).

A sequence the client abandons ends without a reason: nobody reads it.
"""

from __future__ import annotations

from typing import Literal

FinishReason = Literal["stop", "length", "tool_calls"]

STOP_STRING: FinishReason = "stop"
ECHO_ONLY: FinishReason = "length"


def after_tokens(
    tokens: list[int],
    eos_token_ids: tuple[int, ...],
    stop_token_ids: tuple[int, ...] = (),
    ignore_eos: bool = False,
) -> FinishReason:
    """How a generated sequence ended, from its last token: "stop" on an end-of-sequence
    token (unless `ignore_eos`) or a `stop_token_ids` entry, else "length"."""
    eos = stop_token_ids + (() if ignore_eos else eos_token_ids)
    return "stop" if tokens and tokens[-1] in eos else "length"


def after_parsing(reason: FinishReason | None, has_calls: bool) -> FinishReason | None:
    """A chat choice's reason once its output is parsed: "tool_calls" when the model
    ended its turn after calls; a cut ("length") stays what it was."""
    return "tool_calls" if reason == "stop" and has_calls else reason
