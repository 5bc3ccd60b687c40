"""signing tier: cosign and crane, built from the Go module proxy by ``qms-cluster build``.

A cold build of cosign takes about eleven minutes on two busy cores; it runs here,
after collection and outside any test's timeout, when the binaries are not cached.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

from qms_cluster import build, signing

HERE = Path(__file__).resolve().parent
SETS = build.SIGNING


def _log(msg: str) -> None:
    print(f"qms-cluster: {msg}", file=sys.stderr, flush=True)


def pytest_collection_finish(session: pytest.Session) -> None:
    if not any(item.path.resolve().is_relative_to(HERE) for item in session.items):
        return
    if all(build.is_built(s) for s in SETS) or shutil.which("go") is None:
        return  # cached, or the `tools` fixture skips with the reason
    capman = session.config.pluginmanager.getplugin("capturemanager")
    if capman is None:
        signing.ensure_tools(_log)
        return
    with capman.global_and_fixture_disabled():
        signing.ensure_tools(_log)


@pytest.fixture(scope="session")
def tools() -> None:
    missing = [f"{s.name} {s.version}" for s in SETS if not build.is_built(s)]
    if missing:
        pytest.skip(f"{', '.join(missing)} not built and no Go toolchain to build them")
