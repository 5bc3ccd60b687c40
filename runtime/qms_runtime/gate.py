"""Who may run the model at a time: text sequences together, a media request alone.

Media requests run `generate` on their own thread while the batching thread steps the
same model. transformers keeps per-call state on the model object (Qwen3-Omni's
multimodal position deltas among it), and running both at once was seen to change
media outputs. So text sequences share the model freely (they batch together), while a
media request waits until the running text sequences finish and holds new ones back
until it is done. Turns are taken in arrival order (text sequences that arrive
together run together), so neither kind starves the other.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager


class ModelGate:
    def __init__(self) -> None:
        self._shared = 0
        self._exclusive = False
        self._tickets = itertools.count()
        self._waiting_shared: set[int] = set()
        self._waiting_exclusive: set[int] = set()
        self._changed = asyncio.Event()

    async def _until(self, ready: Callable[[], bool]) -> None:
        # One event loop: nothing runs between the check and clear(), so no wake-up is lost.
        while not ready():
            self._changed.clear()
            await self._changed.wait()

    @asynccontextmanager
    async def shared(self) -> AsyncIterator[None]:
        """For a text sequence in the continuous batch."""
        ticket = next(self._tickets)
        self._waiting_shared.add(ticket)
        try:
            await self._until(
                lambda: not self._exclusive and all(t > ticket for t in self._waiting_exclusive)
            )
        finally:
            self._waiting_shared.discard(ticket)
            self._changed.set()
        self._shared += 1
        try:
            yield
        finally:
            self._shared -= 1
            self._changed.set()

    @asynccontextmanager
    async def exclusive(self) -> AsyncIterator[None]:
        """For a media or speech request, which runs `generate` on its own thread."""
        ticket = next(self._tickets)
        self._waiting_exclusive.add(ticket)
        try:
            await self._until(
                lambda: (
                    not self._exclusive
                    and self._shared == 0
                    and all(
                        t > ticket
                        for t in self._waiting_shared | self._waiting_exclusive - {ticket}
                    )
                )
            )
        finally:
            self._waiting_exclusive.discard(ticket)
            self._changed.set()
        self._exclusive = True
        try:
            yield
        finally:
            self._exclusive = False
            self._changed.set()

    @property
    def state(self) -> tuple[int, bool, int]:
        """(text sequences running, media running, requests waiting), for tests."""
        return self._shared, self._exclusive, len(self._waiting_shared | self._waiting_exclusive)
