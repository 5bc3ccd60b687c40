"""The start-up tracker (qms_runtime.startup) with a clock the test moves: its snapshot,
its one-line description, and log lines at phase changes and at most every 5 s."""

from __future__ import annotations

import logging

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from qms_runtime.startup import StartupProgress

GIB = 1024**3


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_verifying_counts_files_and_bytes_with_rate_and_eta(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock, registry = Clock(), CollectorRegistry()
    progress = StartupProgress(registry, clock)
    caplog.set_level(logging.INFO, logger="qms_runtime.startup")
    clock.now += 2.0
    progress.begin("verifying", files=16, nbytes=int(30.1 * GIB))
    clock.now += 1.0
    progress.advance(nbytes=int(4 * GIB))  # within 5 s of the phase's start: no line
    clock.now += 144.0
    progress.advance(files=7, nbytes=int(8.3 * GIB))  # 12.3 GiB in 145 s
    assert progress.snapshot() == {
        "phase": "verifying",
        "phaseSeconds": 145.0,
        "startedSecondsAgo": 147.0,
        "filesDone": 7,
        "filesTotal": 16,
        "bytesDone": int(4 * GIB) + int(8.3 * GIB),
        "bytesTotal": int(30.1 * GIB),
        "percent": 40.9,
        "bytesPerSecond": 91_082_927,
        "etaSeconds": 209.8,
    }
    assert progress.describe() == ("verifying 41% (7/16 files, 12.3/30.1 GiB, 91 MB/s, ETA 3m30s)")
    assert [r.getMessage() for r in caplog.records] == [
        "startup: verifying (16 files, 30.1 GiB)",
        "startup: verifying 41% (7/16 files, 12.3/30.1 GiB, 91 MB/s, ETA 3m30s)",
    ]
    text = generate_latest(registry).decode()
    assert 'qms_startup_phase{phase="verifying"} 1.0' in text
    assert 'qms_startup_phase{phase="starting"} 0.0' in text
    assert 'qms_startup_files{state="done"} 7.0' in text


def test_phases_without_counts_and_the_breakdown(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    progress = StartupProgress(CollectorRegistry(), clock)
    caplog.set_level(logging.INFO, logger="qms_runtime.startup")
    progress.begin("loading")
    clock.now += 75.0
    assert progress.snapshot() == {"phase": "loading", "phaseSeconds": 75.0,
                                   "startedSecondsAgo": 75.0}  # fmt: skip
    assert progress.describe() == "loading (1m15s so far)"
    progress.begin("warming-up")
    clock.now += 2.5
    progress.begin("ready")
    assert caplog.records[-1].getMessage() == (
        "startup: ready after 77.5s (loading 75.0s, warming-up 2.5s)"
    )
    assert progress.durations == {"starting": 0.0, "loading": 75.0, "warming-up": 2.5}
