"""The one polling helper of the tests and benchmarks."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_for(
    what: str, probe: Callable[[], T | None], timeout: float = 60, every: float = 0.2
) -> T:
    """Poll until probe returns something truthy; fail naming what was awaited.

    The probe runs at least once and once more after the deadline has passed,
    so a slow probe or a stalled test process never fails without a last look.
    """
    deadline = time.monotonic() + timeout
    while True:
        last = probe()
        if last:
            return last
        if time.monotonic() > deadline:
            raise AssertionError(
                f"timed out after {timeout:g}s waiting for {what} (last: {last!r})"
            )
        time.sleep(every)
