"""One generation path for every backend: token chunks in, events out.

A backend (the continuous-batching engine, the media runner, or a fake in tests) yields
`TokenChunk`s; `generate_events` turns them into `GenerationEvent`s. It alone computes
the finish reason and observes the per-sequence metrics (time to first token,
inter-token latency, generated tokens, end-to-end latency), so they mean the same on
every path. A new per-sequence metric goes here.
"""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator
from contextlib import aclosing

from qms_runtime.metrics import RuntimeMetrics
from qms_runtime.types import GenerationBackend, GenerationEvent, Prompt, SamplingParams


def finish_reason(tokens: list[int], params: SamplingParams, eos_token_ids: tuple[int, ...]) -> str:
    """ "stop" when the sequence ended on an end-of-sequence token (or one of its
    `stop_token_ids`), else "length"."""
    eos = params.stop_token_ids + (() if params.ignore_eos else eos_token_ids)
    return "stop" if tokens and tokens[-1] in eos else "length"


class SequenceObserver:
    """The metrics of one sequence, from its arrival on."""

    def __init__(self, metrics: RuntimeMetrics, arrival: float) -> None:
        self._metrics = metrics
        self._arrival = arrival
        self._last = arrival
        self._first = True

    def tokens(self, count: int) -> None:
        if not count:
            return
        now = time.perf_counter()
        if self._first:
            self._metrics.time_to_first_token.observe(now - self._arrival)
            self._first = False
        else:
            for _ in range(count):
                self._metrics.inter_token_latency.observe((now - self._last) / count)
        self._metrics.generation_tokens.inc(count)
        self._last = now

    def finished(self) -> None:
        self._metrics.e2e_latency.observe(time.perf_counter() - self._arrival)


async def generate_events(
    backend: GenerationBackend,
    prompt: Prompt,
    params: SamplingParams,
    arrival: float,
    choice: int,
    metrics: RuntimeMetrics,
) -> AsyncGenerator[GenerationEvent, None]:
    """The events of one sequence; closing early cancels it in the backend."""
    observer = SequenceObserver(metrics, arrival)
    tail: list[int] = []
    async with aclosing(backend.tokens(prompt, params, choice)) as chunks:
        async for chunk in chunks:
            observer.tokens(len(chunk.token_ids))
            if chunk.token_ids:
                tail = chunk.token_ids[-1:]
            if not chunk.finished:
                yield GenerationEvent(chunk.token_ids, None, chunk.logprobs)
                continue
            observer.finished()
            reason = finish_reason(tail, params, backend.eos_token_ids)
            yield GenerationEvent(chunk.token_ids, reason, chunk.logprobs)
            return
