"""Several sequences of one request, interleaved as their tokens arrive."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass
from typing import Any

from qms_runtime.finish import FinishReason
from qms_runtime.types import TokenLogprob


@dataclass(frozen=True)
class ChoiceDelta:
    index: int
    text: str
    token_ids: list[int]
    finish_reason: FinishReason | None
    logprobs: list[TokenLogprob] | None = None


_DONE = object()


async def merge(runs: list[AsyncGenerator[ChoiceDelta, None]]) -> AsyncIterator[ChoiceDelta]:
    """Interleave several sequences as their tokens arrive."""
    queue: asyncio.Queue[Any] = asyncio.Queue()

    async def pump(run: AsyncGenerator[ChoiceDelta, None]) -> None:
        try:
            async for delta in run:
                await queue.put(delta)
        except Exception as exc:
            await queue.put(exc)
        finally:
            await queue.put(_DONE)

    tasks = [asyncio.create_task(pump(run)) for run in runs]
    try:
        remaining = len(tasks)
        while remaining:
            item = await queue.get()
            if item is _DONE:
                remaining -= 1
            elif isinstance(item, Exception):
                raise item
            else:
                yield item
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
