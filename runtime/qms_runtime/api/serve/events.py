"""One generation path for every backend: token chunks in, events out.

A backend (the continuous-batching engine, the media runner, or a fake in tests) yields
`TokenChunk`s; `generate_events` turns them into `GenerationEvent`s, with the finish
reason from qms_runtime.finish and the per-sequence metrics (time to first token,
inter-token latency, generated tokens, end-to-end latency) observed by
`metrics.SequenceObserver`, so they mean the same on every path.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from contextlib import aclosing

from qms_runtime.finish import after_tokens
from qms_runtime.metrics import RuntimeMetrics, SequenceObserver
from qms_runtime.types import GenerationBackend, GenerationEvent, Prompt, SamplingParams


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
            reason = after_tokens(
                tail, backend.eos_token_ids, params.stop_token_ids, params.ignore_eos
            )
            yield GenerationEvent(chunk.token_ids, reason, chunk.logprobs)
            return
