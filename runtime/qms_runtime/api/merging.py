"""Several sequences of one request as one stream of deltas, as their tokens arrive."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any, TypeVar

T = TypeVar("T")

_DONE = object()


async def merge(runs: list[AsyncGenerator[T, None]]) -> AsyncIterator[T]:
    """Interleave several sequences as their tokens arrive."""
    queue: asyncio.Queue[Any] = asyncio.Queue()

    async def pump(run: AsyncGenerator[T, None]) -> None:
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
