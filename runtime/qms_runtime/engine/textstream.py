"""Token ids to text, piece by piece: incremental detokenization and stop sequences.

Both are pure and testable without a model (the decoder takes any `decode` callable).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

Decode = Callable[[list[int]], str]


class IncrementalDecoder:
    """Emit the text of newly arrived tokens, never half a UTF-8 character.

    Decodes a small window (the tokens since the last emitted boundary) rather than the
    whole sequence, so the cost per token stays flat for long outputs.
    """

    def __init__(self, decode: Decode) -> None:
        self._decode = decode
        self._tokens: list[int] = []
        self._prefix_offset = 0  # start of the decode window
        self._read_offset = 0  # tokens up to here have been emitted

    def push(self, token_ids: Sequence[int]) -> str:
        self._tokens.extend(token_ids)
        window = self._tokens[self._prefix_offset : self._read_offset]
        prefix_text = self._decode(window)
        full_text = self._decode(self._tokens[self._prefix_offset :])
        if len(full_text) > len(prefix_text) and not full_text.endswith("\ufffd"):
            self._prefix_offset = self._read_offset
            self._read_offset = len(self._tokens)
            return full_text[len(prefix_text) :]
        return ""

    def flush(self) -> str:
        """Whatever is still held back (an incomplete character at the very end)."""
        prefix_text = self._decode(self._tokens[self._prefix_offset : self._read_offset])
        full_text = self._decode(self._tokens[self._prefix_offset :])
        self._prefix_offset = self._read_offset = len(self._tokens)
        return full_text[len(prefix_text) :]


class StopChecker:
    """Cut the text at the first stop sequence; hold back what may be the start of one."""

    def __init__(self, stops: Sequence[str]) -> None:
        self._stops = [stop for stop in stops if stop]
        self._pending = ""
        self.stopped = False

    def feed(self, text: str) -> str:
        """Return the text that is safe to emit; sets `stopped` when a stop sequence appeared."""
        if self.stopped:
            return ""
        if not self._stops:
            return text
        self._pending += text
        first = min(
            (index for stop in self._stops if (index := self._pending.find(stop)) != -1),
            default=-1,
        )
        if first != -1:
            emitted = self._pending[:first]
            self._pending = ""
            self.stopped = True
            return emitted
        hold = max((self._partial_match(stop) for stop in self._stops), default=0)
        cut = len(self._pending) - hold
        emitted, self._pending = self._pending[:cut], self._pending[cut:]
        return emitted

    def _partial_match(self, stop: str) -> int:
        for length in range(min(len(stop) - 1, len(self._pending)), 0, -1):
            if self._pending.endswith(stop[:length]):
                return length
        return 0

    def flush(self) -> str:
        emitted, self._pending = self._pending, ""
        return "" if self.stopped else emitted
