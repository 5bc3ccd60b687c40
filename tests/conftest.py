"""Suite-wide: in CI (CI=true) a skipped test fails the run, except GPU-only tests on a
machine without a GPU (a skip must never pass for a success); and the tiny models
(random weights, built with qms_runtime.tools once per session, in the session's temp
dir) that the runtime tiers share: `tiny_model(arch)` and `qwen3_dir`."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

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


@pytest.fixture(scope="session")
def model_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="session")
def tiny_model(model_root: Path) -> Any:
    """`tiny_model(arch)` -> directory of that tiny model, built once per session."""
    from qms_runtime.tools.tiny_model import write_tiny_model

    built: dict[str, Path] = {}

    def get(arch: str) -> Path:
        if arch not in built:
            built[arch] = write_tiny_model(model_root / arch, arch)  # type: ignore[arg-type]
        return built[arch]

    return get


@pytest.fixture(scope="session")
def qwen3_dir(tiny_model: Any) -> Path:
    path: Path = tiny_model("qwen3")
    return path
