"""The reconcile work queue (issue 16): events cut a backoff short, retries back off,
resync and events do not starve each other. Real asyncio timers, no fakes."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Awaitable, Callable
from typing import Any

from qms_operator.store import Key
from qms_operator.workqueue import WorkQueue

A: Key = ("ns", "a")


class Work:
    """Records each run (key, loop time); fails while ``failing`` holds the key."""

    def __init__(self, hold: float = 0.0) -> None:
        self.runs: list[tuple[Key, float]] = []
        self.failing: set[Key] = set()
        self.hold = hold
        self.ran = asyncio.Condition()

    async def __call__(self, key: Key) -> bool:
        self.runs.append((key, asyncio.get_running_loop().time()))
        if self.hold:
            await asyncio.sleep(self.hold)
        async with self.ran:
            self.ran.notify_all()
        return key not in self.failing

    def count(self, key: Key) -> int:
        return sum(1 for k, _ in self.runs if k == key)

    async def until(self, what: Callable[[], bool], timeout: float) -> None:
        async with self.ran:
            await asyncio.wait_for(self.ran.wait_for(what), timeout)


def run(test: Callable[[], Awaitable[Any]]) -> Any:
    return asyncio.run(test())


def test_a_key_in_a_60s_backoff_runs_within_1s_of_an_event() -> None:
    async def test() -> None:
        work = Work()
        work.failing.add(A)
        queue = WorkQueue(work, retry_base=60.0, retry_max=60.0)
        queue.enqueue(A)
        await work.until(lambda: work.count(A) == 1, 5)
        await asyncio.sleep(0)  # let the run finish and schedule its retry
        waiting = queue.waiting(A)
        assert waiting is not None and 59.0 < waiting <= 60.0  # in its 60 s backoff
        event = asyncio.get_running_loop().time()
        queue.enqueue(A)  # a watch event: the child was deleted
        await work.until(lambda: work.count(A) == 2, 1.0)
        assert work.runs[1][1] - event < 1.0
        # It failed again: back in backoff (longer, nothing prompted this one).
        await asyncio.sleep(0)
        waiting = queue.waiting(A)
        assert waiting is not None and waiting > 59.0

    run(test)


def test_retries_nothing_prompted_back_off_and_reset_on_success() -> None:
    async def test() -> None:
        work = Work()
        work.failing.add(A)
        queue = WorkQueue(work, delay=0.0, retry_base=0.05, retry_max=0.2)
        queue.enqueue(A)
        await work.until(lambda: work.count(A) == 6, 5)
        work.failing.clear()
        times = [t for _, t in work.runs]
        gaps = [b - a for a, b in itertools.pairwise(times)]
        # 0.05, 0.1, 0.2, then capped at 0.2 (timers never fire early; 1 ms of slack).
        for gap, least in zip(gaps, [0.05, 0.1, 0.2, 0.2, 0.2], strict=True):
            assert gap >= least - 0.001, gaps
        await work.until(lambda: work.count(A) == 7, 5)  # the retry that succeeds
        await asyncio.sleep(0)
        assert queue.waiting(A) is None and queue.idle()  # no retry after a success

    run(test)


def test_an_event_never_postpones_a_key_already_due_sooner() -> None:
    async def test() -> None:
        work = Work()
        queue = WorkQueue(work, delay=0.05)
        queue.enqueue(A)
        queue.enqueue(A, delay=30.0)  # a later ask: the earlier time stands
        waiting = queue.waiting(A)
        assert waiting is not None and waiting <= 0.05
        await work.until(lambda: work.count(A) == 1, 1)
        await asyncio.sleep(0)
        assert queue.waiting(A) is None and queue.idle()  # the two asks gave one run

    run(test)


def test_an_event_during_a_run_reruns_once_after_it() -> None:
    async def test() -> None:
        work = Work(hold=0.1)
        queue = WorkQueue(work, delay=0.0)
        queue.enqueue(A)
        await work.until(lambda: work.count(A) == 1, 1)
        for _ in range(5):
            queue.enqueue(A)  # while it runs: coalesced into one rerun
        await work.until(lambda: work.count(A) == 2, 1)
        await asyncio.sleep(0)
        assert queue.waiting(A) is None and queue.idle()  # one rerun, no more

    run(test)


def test_a_resync_of_every_server_does_not_starve_an_event() -> None:
    async def test() -> None:
        work = Work(hold=0.01)
        queue = WorkQueue(work, concurrency=1, delay=0.05, grace=2.0)
        keys = [("ns", f"s{i:03d}") for i in range(100)]
        for key in keys:
            queue.enqueue(key, resync=True)
        queue.enqueue(A)  # an event just after the resync burst
        await work.until(lambda: work.count(A) == 1, 5)
        order = [k for k, _ in work.runs]
        # At most the one resync that took the free slot first runs before it.
        assert order.index(A) <= 1, order[:5]
        await work.until(lambda: len(work.runs) == 101, 10)

    run(test)


def test_a_stream_of_events_does_not_starve_a_resync() -> None:
    async def test() -> None:
        work = Work(hold=0.01)
        queue = WorkQueue(work, concurrency=1, delay=0.0, grace=0.1)
        resynced: Key = ("ns", "resynced")
        queue.enqueue(resynced, resync=True)
        # Events for new keys arrive twice as fast as they are served: a backlog grows.
        for i in range(150):
            queue.enqueue(("ns", f"e{i:03d}"))
            await asyncio.sleep(0.005)
        order = [k for k, _ in work.runs]
        assert len(order) < 151  # events are still waiting ...
        assert resynced in order  # ... and the resync has run
        await work.until(lambda: len(work.runs) == 151, 10)

    run(test)
