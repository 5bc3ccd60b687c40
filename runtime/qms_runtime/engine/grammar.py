"""Grammar-constrained decoding on llguidance: structured output and forced tool calls.

`Grammars` (one per engine) compiles a `GrammarSpec` once (`check`, at request time) and
hands out one `GrammarMatcher` per sequence (`matcher`); at every decode step the engine
calls `mask_rows` on the constrained rows' logits before sampling and `accept` with the
sampled token after it. llguidance computes the token masks on CPU (a thread pool for
the batch, `LLExecutor`); the mask is applied on the logits' device.

Why llguidance: its per-token mask cost does not grow with the vocabulary the way a
naive scan does (a token trie with lexer slices), it compiles JSON schemas lazily (ms,
not seconds), it takes Lark grammars with `%json` sub-grammars (the tool-call format)
and it is a wheel on PyPI with no torch-version coupling.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from typing import Any

import llguidance
import llguidance.hf
import numpy as np
import torch
from llguidance.torch import allocate_token_bitmask, fill_next_token_bitmask_par

from qms_runtime.engine.grammar_source import GrammarError, grammar_text
from qms_runtime.quoting import safe_text
from qms_runtime.types import GrammarSpec

__all__ = ["GrammarError", "GrammarMatcher", "Grammars", "mask_rows"]

log = logging.getLogger(__name__)

CACHE_SIZE = 64  # compiled grammars kept (pristine matchers; each sequence gets a copy)
_LIMITS = llguidance.LLParserLimits(verbose_errors=False)  # no parser dumps in messages


class GrammarMatcher:
    """One sequence's position in its grammar."""

    __slots__ = ("_accepted", "_matcher", "_owner", "_unrecorded")

    def __init__(self, matcher: llguidance.LLMatcher, owner: Grammars) -> None:
        self._matcher = matcher
        self._owner = owner
        self._accepted = 0
        self._unrecorded = 0  # EOS accepted once stopped: llguidance keeps no record of it

    @property
    def accepted(self) -> int:
        """Tokens accepted so far (the sampled EOS included)."""
        return self._accepted

    @property
    def done(self) -> bool:
        """The grammar is complete (or broken): only the EOS ids are allowed now."""
        return bool(self._matcher.is_stopped())

    @property
    def error(self) -> str | None:
        """Why the matcher broke (a token the mask forbade was accepted), else None."""
        return self._matcher.get_error() if self._matcher.is_error() else None

    def accept(self, token_id: int) -> None:
        """Advance with the sampled token. A token the mask forbade (only possible if
        something changed the logits after `mask_rows`) breaks the matcher: it is logged
        and the sequence may then only end (EOS)."""
        stopped = self._matcher.is_stopped()
        if self._matcher.consume_token(token_id):
            self._accepted += 1
            self._unrecorded += stopped
        else:
            log.warning("grammar matcher rejected token %d: %s", token_id, self.error)

    def rollback(self, count: int) -> None:
        """Undo the last `count` accepted tokens."""
        if not 0 <= count <= self._accepted:
            raise ValueError(f"cannot roll back {count} of {self._accepted} tokens")
        trailing = min(count, self._unrecorded)  # the last ones: only EOS follows a stop
        if count > trailing and not self._matcher.rollback(count - trailing):
            raise ValueError(f"grammar matcher cannot roll back: {self.error}")
        self._unrecorded -= trailing
        self._accepted -= count


class Grammars:
    """Compiled grammars for one tokenizer and logits width.

    `check` may run on the event loop while `matcher` and `mask_rows` run on the batching
    thread: the cache is behind a lock; the matchers themselves are used by one thread.
    """

    def __init__(
        self,
        tokenizer: Any,
        vocab_size: int,
        eos_token_ids: tuple[int, ...],
        *,
        threads: int | None = None,
    ) -> None:
        if vocab_size < len(tokenizer):
            raise ValueError(f"vocab_size {vocab_size} < the tokenizer's {len(tokenizer)}")
        if not eos_token_ids:
            raise ValueError("at least one EOS token id is needed")
        self.vocab_size = vocab_size
        self.eos_token_ids = tuple(eos_token_ids)
        # n_vocab = the logits width: ids past the tokenizer are tokens with no bytes,
        # which no grammar allows.
        self._tokenizer = llguidance.hf.from_tokenizer(
            tokenizer, n_vocab=vocab_size, eos_token=list(self.eos_token_ids)
        )
        # llguidance treats every added token as special (so a literal "<tool_call>" in
        # a grammar never matches Qwen's <tool_call> token): grammars name those by token.
        self._added = frozenset(str(name) for name in tokenizer.get_added_vocab())
        self._executor = llguidance.LLExecutor(threads)
        self._cache: OrderedDict[GrammarSpec, llguidance.LLMatcher] = OrderedDict()
        self._lock = threading.Lock()
        self._bitmasks: dict[int, torch.Tensor] = {}
        eos_row = torch.zeros((self.vocab_size + 31) // 32, dtype=torch.int32)
        for token in self.eos_token_ids:
            eos_row[token // 32] |= _bit(token % 32)
        self._eos_row = eos_row

    def check(self, spec: GrammarSpec, param: str) -> None:
        """Compile `spec` (cached) or raise `GrammarError(message, param)`."""
        self._compiled(spec, param)

    def matcher(self, spec: GrammarSpec) -> GrammarMatcher:
        """A fresh matcher for one sequence (compiles `spec` if it is not cached)."""
        return GrammarMatcher(self._compiled(spec, "grammar").deep_copy(), self)

    def _compiled(self, spec: GrammarSpec, param: str) -> llguidance.LLMatcher:
        with self._lock:
            pristine = self._cache.get(spec)
            if pristine is not None:
                self._cache.move_to_end(spec)
                return pristine
        text = grammar_text(spec, param, self._added)
        # Compiling releases the GIL (ms for usual schemas, up to ~1 s for huge ones).
        pristine = llguidance.LLMatcher(self._tokenizer, text, log_level=0, limits=_LIMITS)
        if pristine.is_error():
            raise GrammarError(f"invalid {_WHAT[spec.kind]}: {_first_lines(pristine)}", param)
        with self._lock:
            self._cache[spec] = pristine
            self._cache.move_to_end(spec)
            while len(self._cache) > CACHE_SIZE:
                self._cache.popitem(last=False)
        return pristine

    def _bitmask(self, rows: int) -> torch.Tensor:
        bitmask = self._bitmasks.get(rows)
        if bitmask is None:
            bitmask = allocate_token_bitmask(rows, self.vocab_size)  # pinned with CUDA
            self._bitmasks[rows] = bitmask
        return bitmask


_WHAT = {
    "json_object": "JSON object grammar",
    "json_schema": "JSON schema",
    "tool_calls": "tool definitions",
    "lark": "grammar",
}


def _first_lines(matcher: llguidance.LLMatcher) -> str:
    return safe_text(" ".join(matcher.get_error().strip().splitlines()[:2]), 300)


def _bit(index: int) -> int:
    """Bit `index` of an int32 word, as a Python int torch accepts for int32."""
    return -(1 << 31) if index == 31 else 1 << index


def mask_rows(scores: torch.Tensor, matchers: list[GrammarMatcher]) -> None:
    """Set to -inf, in place, each token that row i's matcher forbids.

    `scores` is [len(matchers), width] float (CPU or CUDA), width <= the Grammars'
    vocab_size (ids past the tokenizer are never allowed). One batched mask computation
    (llguidance's thread pool) and one batched fill for all rows.
    """
    if not matchers:
        return
    rows, width = scores.shape
    if rows != len(matchers):
        raise ValueError(f"{rows} rows of scores for {len(matchers)} matchers")
    owner = matchers[0]._owner
    if width > owner.vocab_size:
        raise ValueError(f"scores width {width} > the grammar vocab {owner.vocab_size}")
    bitmask = owner._bitmask(rows)
    fill_next_token_bitmask_par(
        owner._executor, [(m._matcher, i) for i, m in enumerate(matchers)], bitmask
    )
    for i, m in enumerate(matchers):
        if m._matcher.is_error():  # a broken matcher lets the sequence end, nothing else
            bitmask[i] = owner._eos_row
    if scores.device.type == "cpu":
        apply_bitmask_numpy(scores, bitmask)
    else:
        apply_bitmask_torch(scores, bitmask.to(scores.device))


def apply_bitmask_numpy(scores: torch.Tensor, bitmask: torch.Tensor) -> None:
    """-inf where the bit is 0 (bit j of int32 word i is token 32*i + j), on CPU:
    numpy unpacks bits several times faster than torch's shift-and-compare there."""
    words = np.invert(bitmask.numpy()).view(np.uint8)  # little-endian words
    forbidden = np.unpackbits(words, axis=1, bitorder="little")[:, : scores.shape[1]]
    scores.masked_fill_(torch.from_numpy(forbidden.view(np.bool_)), float("-inf"))


def apply_bitmask_torch(scores: torch.Tensor, bitmask: torch.Tensor) -> None:
    """The same on the scores' device (CUDA): a few elementwise kernels, no compile
    step (llguidance's own apply_token_bitmask_inplace is torch.compile'd)."""
    rows, width = scores.shape
    shifts = torch.arange(32, device=scores.device, dtype=torch.int32)
    bits = (bitmask.unsqueeze(-1) >> shifts) & 1
    scores.masked_fill_(bits.view(rows, -1)[:, :width] == 0, float("-inf"))
