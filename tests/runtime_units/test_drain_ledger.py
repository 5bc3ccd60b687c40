"""The connections ledger a drain waits on (issue 27): when may a draining runtime close
the connections still open without racing a client that sends on one of them."""

from __future__ import annotations

from qms_runtime.api.http.middleware import Connections
from qms_runtime.run import DRAIN_IDLE_SECONDS


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


A, B = ("10.245.0.1", 40001), ("10.245.0.1", 40002)


def test_a_drain_waits_for_requests_and_for_connections_idle_past_client_expiry() -> None:
    clock = Clock()
    ledger = Connections(clock)
    ledger.started(A)
    ledger.finished(A)  # A idle since 100
    ledger.started(B)  # B busy
    clock.now = 103.0
    ledger.begin_drain()
    assert not ledger.quiet([A, B], DRAIN_IDLE_SECONDS)  # B still in progress
    clock.now = 104.0
    ledger.finished(B)  # answered while draining (with Connection: close)
    assert ledger.answered_while_draining == 1
    # B's client closes its connection after that answer; A is still open, idle 4 s:
    # a pool with a 5 s expiry may still send on it.
    assert not ledger.quiet([A], DRAIN_IDLE_SECONDS)
    # A idle 6 s, but a request ended 2 s ago: a proxy may still send new connections.
    clock.now = 100.0 + DRAIN_IDLE_SECONDS
    assert not ledger.quiet([A], DRAIN_IDLE_SECONDS)
    assert not ledger.quiet([], DRAIN_IDLE_SECONDS)
    # A new connection's request (a proxy not yet updated) is answered and counted.
    ledger.started(None)
    ledger.finished(None)
    assert ledger.answered_while_draining == 2
    clock.now = 106.0 + DRAIN_IDLE_SECONDS - 0.1
    assert not ledger.quiet([A], DRAIN_IDLE_SECONDS)
    clock.now = 106.0 + DRAIN_IDLE_SECONDS
    assert ledger.quiet([A], DRAIN_IDLE_SECONDS)


def test_a_connection_never_seen_counts_as_idle_from_the_drain_on() -> None:
    clock = Clock()
    ledger = Connections(clock)
    ledger.begin_drain()
    clock.now = 100.0 + DRAIN_IDLE_SECONDS - 0.1
    assert not ledger.quiet([A], DRAIN_IDLE_SECONDS)
    clock.now = 100.0 + DRAIN_IDLE_SECONDS
    assert ledger.quiet([A, None], DRAIN_IDLE_SECONDS)
    assert ledger.answered_while_draining == 0


def test_the_ledger_forgets_old_connections_beyond_its_bound() -> None:
    clock = Clock()
    ledger = Connections(clock)
    for port in range(Connections.KEEP + 1):
        clock.now += 0.001
        ledger.started(("10.0.0.1", port))
        ledger.finished(("10.0.0.1", port))
    assert len(ledger.last_seen) == Connections.KEEP // 2
    assert ("10.0.0.1", Connections.KEEP) in ledger.last_seen  # the newest kept
    assert ("10.0.0.1", 0) not in ledger.last_seen
    assert ledger.active == 0
