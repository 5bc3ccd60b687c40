"""Who may run the model at a time: text sequences together, a media request alone.

Media requests run `generate` on their own thread while the batching thread steps the
same model. transformers keeps per-call state on the model object (Qwen3-Omni's
multimodal position deltas among it), and running both at once was seen to change
media outputs. So text sequences share the model freely (they batch together), while a
media request waits until the running text sequences finish and holds new ones back
until it is done. A waiting media request goes first, so it is never starved.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager


class ModelGate:
    def __init__(self) -> None:
        self._shared = 0
        self._exclusive = False
        self._waiting = 0
        self._changed = asyncio.Event()

    async def _until(self, ready: Callable[[], bool]) -> None:
        # One event loop: nothing runs between the check and clear(), so no wake-up is lost.
        while not ready():
            self._changed.clear()
            await self._changed.wait()

    @asynccontextmanager
    async def shared(self) -> AsyncIterator[None]:
        """For a text sequence in the continuous batch."""
        await self._until(lambda: not self._exclusive and self._waiting == 0)
        self._shared += 1
        try:
            yield
        finally:
            self._shared -= 1
            self._changed.set()

    @asynccontextmanager
    async def exclusive(self) -> AsyncIterator[None]:
        """For a media or speech request, which runs `generate` on its own thread."""
        self._waiting += 1
        try:
            await self._until(lambda: not self._exclusive and self._shared == 0)
        finally:
            self._waiting -= 1
            self._changed.set()
        self._exclusive = True
        try:
            yield
        finally:
            self._exclusive = False
            self._changed.set()

    @property
    def state(self) -> tuple[int, bool, int]:
        """(text sequences running, media running, media waiting), for tests."""
        return self._shared, self._exclusive, self._waiting
