"""Suite-wide rule: in CI (CI=true) a skipped test fails the run, except GPU-only tests
on a machine without a GPU; a skip must never pass for a success."""

from __future__ import annotations

import os

import pytest

_skipped: list[str] = []


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.skipped and "gpu" not in report.keywords:
        _skipped.append(report.nodeid)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if os.environ.get("CI") == "true" and _skipped and exitstatus == 0:
        print(f"\nCI: {len(_skipped)} test(s) skipped, which CI does not allow:")
        for nodeid in _skipped:
            print(f"  {nodeid}")
        session.exitstatus = 1
