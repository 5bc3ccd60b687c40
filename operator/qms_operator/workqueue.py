"""A coalescing, bounded, retrying work queue of server keys, and the resync loop.

Generic: it knows keys and a work function, nothing of Kubernetes (see ``WorkQueue``).
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from .metrics import QUEUE_DEPTH, RECONCILE_SECONDS, RECONCILES, SERVERS
from .store import Key, Store

log = logging.getLogger("qms_operator")


class WorkQueue:
    """Coalescing, bounded, retrying queue of server keys.

    A key is in the queue at most once, due at the earliest time anything asked
    for: a watch event (the server or one of its children changed) and the resync
    ask for "now, after the coalescing delay"; a failed reconcile asks for "after
    the backoff" (``retry_base`` doubling up to ``retry_max``; the count resets on
    success). So an event cuts a backoff short, and retries nothing prompted back
    off, as with client-go's rate-limited work queue.

    Due keys wait for one of ``concurrency`` slots, earliest deadline first: an
    event's deadline is when it fell due, a resync's or a retry's ``grace``
    seconds later. An event thus overtakes a resync burst of every server, and a
    resynced key runs once it has waited ``grace``: neither starves the other.
    """

    def __init__(
        self,
        work: Callable[[Key], Awaitable[bool]],
        concurrency: int = 16,
        delay: float = 0.25,
        retry_base: float = 1.0,
        retry_max: float = 60.0,
        grace: float = 2.0,
    ) -> None:
        self._work = work
        self._concurrency = concurrency
        self._delay = delay
        self._retry = (retry_base, retry_max)
        self._grace = grace
        # Waiting for their time: key -> [when (loop time), prompted by an event, timer].
        self._timers: dict[Key, list[Any]] = {}
        # Due, waiting for a slot: a heap of (deadline, seq, key); _queued holds each
        # key's live entry (deadline, seq): an entry moved ahead leaves a stale one.
        self._ready: list[tuple[float, int, Key]] = []
        self._queued: dict[Key, tuple[float, int]] = {}
        self._running: set[Key] = set()
        self._dirty: dict[Key, bool] = {}  # asked for while running: by an event?
        self._failures: dict[Key, int] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._seq = itertools.count()

    def enqueue(self, key: Key, delay: float | None = None, *, resync: bool = False) -> None:
        """Reconcile ``key`` after ``delay`` (default: the coalescing delay), or sooner
        if it is due sooner already; ``resync``: asked by the resync loop, not an event."""
        self._schedule(key, self._delay if delay is None else delay, event=not resync)

    def waiting(self, key: Key) -> float | None:
        """Seconds until ``key`` falls due (0 when due), None when not queued."""
        if key in self._queued:
            return 0.0
        timer = self._timers.get(key)
        if timer is None:
            return None
        return max(0.0, float(timer[0]) - asyncio.get_running_loop().time())

    def _schedule(self, key: Key, delay: float, event: bool) -> None:
        loop = asyncio.get_running_loop()
        if key in self._running:
            self._dirty[key] = self._dirty.get(key, False) or event
            return
        if key in self._queued:
            if event:
                self._push(key, loop.time())  # ahead of resyncs and retries
            return
        when = loop.time() + delay
        timer = self._timers.get(key)
        if timer is not None:
            if timer[0] <= when:  # due sooner already
                timer[1] = timer[1] or event
                return
            timer[2].cancel()
            event = event or timer[1]
        self._timers[key] = [when, event, loop.call_at(when, self._due, key)]
        QUEUE_DEPTH.set(len(self._timers) + len(self._queued))

    def _due(self, key: Key) -> None:
        when, event, _ = self._timers.pop(key)
        self._push(key, when if event else when + self._grace)
        self._dispatch()

    def _push(self, key: Key, deadline: float) -> None:
        if key in self._queued and self._queued[key][0] <= deadline:
            return
        seq = next(self._seq)
        self._queued[key] = (deadline, seq)
        heapq.heappush(self._ready, (deadline, seq, key))

    def _dispatch(self) -> None:
        while self._ready and len(self._running) < self._concurrency:
            deadline, seq, key = heapq.heappop(self._ready)
            if self._queued.get(key) != (deadline, seq):
                continue  # moved ahead: its live entry ran or is further up
            del self._queued[key]
            self._running.add(key)
            task = asyncio.get_running_loop().create_task(self._run(key))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        QUEUE_DEPTH.set(len(self._timers) + len(self._queued))

    async def _run(self, key: Key) -> None:
        try:
            ok = await self._once(key)
        finally:
            self._running.discard(key)
        if ok:
            self._failures.pop(key, None)
        else:
            self._failures[key] = self._failures.get(key, 0) + 1
        if key in self._dirty:
            self._schedule(key, self._delay, event=self._dirty.pop(key))
        elif not ok:
            base, most = self._retry
            backoff = min(most, base * 2 ** (self._failures[key] - 1))
            self._schedule(key, backoff, event=False)
        self._dispatch()

    async def _once(self, key: Key) -> bool:
        started = time.perf_counter()
        try:
            ok = await self._work(key)
        except Exception:
            log.exception("reconcile of %s/%s failed", *key)
            ok = False
        RECONCILE_SECONDS.observe(time.perf_counter() - started)
        RECONCILES.labels(result="ok" if ok else "error").inc()
        return ok

    def idle(self) -> bool:
        return not (self._timers or self._queued or self._running)


async def resync(store: Store, queue: WorkQueue, every: float) -> None:
    """Reconcile every known server periodically (drift that sent no event, lost events)."""
    while True:
        await asyncio.sleep(every)
        SERVERS.set(len(store.servers))
        for key in list(store.servers):
            queue.enqueue(key, resync=True)
