"""Per-sequence logits controls that transformers' batching has no processor for.

Penalties (repetition, presence, frequency), `logit_bias`, `min_tokens`, `min_p`, a
grammar (engine/grammar.py) and log-probabilities, each per sequence in the batch. Two
steps around transformers' own warpers (temperature, top-k, top-p):

- `adjust(rows, scores)` on the raw logits: records the raw log-probabilities of rows
  that asked for them (before any processing, as OpenAI and vLLM report them), then
  adds the bias, applies the penalties, masks end-of-sequence before `min_tokens` and
  masks what the grammar forbids;
- `pick(rows, scores)` on the warped scores: applies `min_p`, chooses each controlled
  row's token (seeded rows by Gumbel-max, greedy rows by argmax, the others by sampling)
  and makes the row one-hot, so the engine's own sampling returns exactly that token;
  the sequence then advances: its grammar, its token counts, its log-probabilities.

A `Row` is a sequence's controls with the position of the token chosen now (the prompt
plus the tokens before it). Both steps take the rows of one forward in batch order and
run on the thread that runs the forward (the batching thread, or `generate()`'s).
Should a forward be redone for a position already chosen, the sequence first rolls back.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch

from qms_runtime.engine.sampling import gumbel_noise
from qms_runtime.types import SamplingParams, TokenLogprob

MAX_TOP_LOGPROBS = 20


class SequenceControls:
    """The controls and running state of one sequence."""

    def __init__(
        self,
        params: SamplingParams,
        prompt_ids: list[int],
        stream_seed: int | None,
        end_ids: tuple[int, ...],
        grammar: Any = None,
    ) -> None:
        self.params = params
        self.prompt_len = len(prompt_ids)
        self._prompt_ids = prompt_ids
        self.stream_seed = stream_seed  # Gumbel-max stream of a seeded sequence
        self._end_ids = end_ids  # what min_tokens holds back: EOS and stop_token_ids
        self.grammar = grammar  # a GrammarMatcher or None
        self.tokens: list[int] = []
        self.logprobs: dict[int, TokenLogprob] = {}  # by index among generated tokens
        self._counts: torch.Tensor | None = None
        self._seen: torch.Tensor | None = None
        self._raw: torch.Tensor | None = None  # raw log-probs of the row being chosen

    @property
    def penalised(self) -> bool:
        p = self.params
        return p.repetition_penalty != 1.0 or bool(p.presence_penalty or p.frequency_penalty)

    def take_logprobs(self, start: int, count: int) -> list[TokenLogprob] | None:
        """Log-probabilities of generated tokens start .. start+count (the engine's chunk)."""
        if self.params.logprobs is None:
            return None
        return [self.logprobs[i] for i in range(start, start + count) if i in self.logprobs]

    # --------------------------------------------------------------- state
    def _state(self, vocab: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        if self._counts is None or self._seen is None:
            self._counts = torch.zeros(vocab, dtype=torch.float32, device=device)
            self._seen = torch.zeros(vocab, dtype=torch.bool, device=device)
            prompt = torch.tensor(
                [t for t in self._prompt_ids if 0 <= t < vocab], dtype=torch.long, device=device
            )
            self._seen[prompt] = True
            for token in self.tokens:
                self._count(token)
        return self._counts, self._seen

    def _count(self, token: int) -> None:
        if self._counts is not None and self._seen is not None and token < self._counts.numel():
            self._counts[token] += 1
            self._seen[token] = True

    def rewind(self, generated: int) -> None:
        """Forget tokens after the first `generated` (a forward redone for a position)."""
        extra = len(self.tokens) - generated
        if extra <= 0:
            return
        del self.tokens[generated:]
        for index in [i for i in self.logprobs if i >= generated]:
            del self.logprobs[index]
        if self.grammar is not None:
            self.grammar.rollback(extra)
        self._counts = self._seen = None  # rebuilt from prompt + tokens on next use

    def accept(self, token: int) -> None:
        self.tokens.append(token)
        self._count(token)
        if self.grammar is not None:
            self.grammar.accept(token)


@dataclass
class Row:
    controls: SequenceControls
    position: int  # of the token chosen in this forward (prompt + tokens before it)
    greedy: bool = field(init=False)

    def __post_init__(self) -> None:
        self.greedy = self.controls.params.greedy
        generated = self.position - self.controls.prompt_len
        self.controls.rewind(max(0, generated))

    @property
    def generated(self) -> int:
        return self.position - self.controls.prompt_len


def adjust(rows: list[Row], scores: torch.Tensor) -> torch.Tensor:
    """Raw logits [len(rows), vocab] -> adjusted logits (see the module docstring)."""
    vocab, device = scores.size(-1), scores.device
    grammar_rows: list[int] = []
    for i, row in enumerate(rows):
        c, p = row.controls, row.controls.params
        if p.logprobs is not None:
            c._raw = torch.log_softmax(scores[i], dim=-1)
        if p.logit_bias:
            ids = torch.tensor([t for t, _ in p.logit_bias], device=device)
            bias = torch.tensor([b for _, b in p.logit_bias], device=device, dtype=scores.dtype)
            scores[i].index_add_(0, ids, bias)
        if c.penalised:
            counts, seen = c._state(vocab, device)
            line = scores[i]
            if p.repetition_penalty != 1.0:  # prompt and output tokens, as vLLM and HF do
                penalised = torch.where(
                    line > 0, line / p.repetition_penalty, line * p.repetition_penalty
                )
                line = torch.where(seen, penalised, line)
            if p.frequency_penalty:
                line = line - p.frequency_penalty * counts
            if p.presence_penalty:
                line = line - p.presence_penalty * (counts > 0).to(line.dtype)
            scores[i] = line
        if p.min_tokens and row.generated < p.min_tokens and c._end_ids:
            scores[i, list(c._end_ids)] = -math.inf
        if c.grammar is not None:
            grammar_rows.append(i)
    if grammar_rows:
        from qms_runtime.engine.grammar import mask_rows

        index = torch.tensor(grammar_rows, device=device)
        masked = scores.index_select(0, index)
        mask_rows(masked, [rows[i].controls.grammar for i in grammar_rows])
        scores.index_copy_(0, index, masked)
    return scores


def choose(row: Row, line: torch.Tensor) -> int:
    """The token of one controlled row from its warped scores [vocab]."""
    c = row.controls
    if row.greedy:
        return int(line.argmax())
    if c.stream_seed is not None:
        noise = gumbel_noise(c.stream_seed, row.position, line.numel(), line.device)
        return int((line + noise).argmax())
    probs = torch.softmax(line, dim=-1)
    return int(torch.multinomial(probs, 1))


def pick(rows: list[Row], scores: torch.Tensor) -> torch.Tensor:
    """Warped scores -> one-hot rows at each controlled row's chosen token."""
    for i, row in enumerate(rows):
        c, p = row.controls, row.controls.params
        line = scores[i]
        if p.min_p and not row.greedy:
            probs = torch.softmax(line, dim=-1)
            line = line.masked_fill(probs < p.min_p * probs.max(), -math.inf)
        token = choose(row, line)
        if p.logprobs is not None and c._raw is not None:
            c.logprobs[row.generated] = _logprob(c._raw, token, p.logprobs)
            c._raw = None
        c.accept(token)
        kept = scores[i, token].clone()
        scores[i] = -math.inf
        scores[i, token] = kept if math.isfinite(float(kept)) else 0.0
    return scores


def _logprob(raw: torch.Tensor, token: int, top: int) -> TokenLogprob:
    alternatives: tuple[tuple[int, float], ...] = ()
    if top:
        values, ids = torch.topk(raw, min(top, MAX_TOP_LOGPROBS, raw.numel()))
        alternatives = tuple(zip(ids.tolist(), values.tolist(), strict=True))
    return TokenLogprob(token, float(raw[token]), alternatives)


def generate_kwargs_with(kwargs: dict[str, Any], controls: SequenceControls) -> dict[str, Any]:
    """Plain `generate()` arguments (sampling.generate_kwargs) turned into the same
    controls as in the batch: adjust, temperature, top-k, top-p, pick; then greedy
    decoding takes the one-hot row. One sequence per `generate()` (the media runner)."""
    from transformers import (
        LogitsProcessor,
        LogitsProcessorList,
        TemperatureLogitsWarper,
        TopKLogitsWarper,
        TopPLogitsWarper,
    )

    class Step(LogitsProcessor):
        def __init__(self, step: Any) -> None:
            self.step = step

        def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
            rows = [Row(controls, int(input_ids.size(-1)))]
            result: torch.Tensor = self.step(rows, scores)
            return result

    p = controls.params
    processors: list[LogitsProcessor] = [Step(adjust)]
    if not p.greedy:
        if p.temperature != 1.0:
            processors.append(TemperatureLogitsWarper(p.temperature))
        if p.top_k:
            processors.append(TopKLogitsWarper(p.top_k))
        if p.top_p < 1.0:
            processors.append(TopPLogitsWarper(p.top_p))
    processors.append(Step(pick))
    plain = {k: v for k, v in kwargs.items() if k not in ("temperature", "top_p", "top_k")}
    return {
        **plain,
        "do_sample": False,
        "logits_processor": LogitsProcessorList(processors),
    }
