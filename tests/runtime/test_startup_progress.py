"""Start-up you can watch, on a real server with the tiny Qwen3: /ready's 503 body and
the qms_startup_* gauges walk through verifying (file by file, byte by byte), loading
and ready, in order; the log says each phase once and ends with the breakdown. The
server waits at gates the test opens (gated_start_serve.py), so nothing is timed."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import httpx
import pytest

from qms_runtime.models.checksums import read_manifest
from qms_testkit.polling import wait_for
from qms_testkit.processes import RuntimeServer
from qms_testkit.prom import sample_value, scrape

pytestmark = pytest.mark.runtime


def _ready(server: RuntimeServer) -> tuple[int, dict[str, Any]]:
    response = httpx.get(f"{server.base_url}/ready", timeout=5)
    return response.status_code, response.json()


def _phase_gauges(server: RuntimeServer) -> dict[str, float]:
    text = scrape(f"{server.base_url}/metrics")
    phases = ("starting", "checking-fit", "verifying", "loading", "warming-up", "ready", "failed")
    return {p: sample_value(text, "qms_startup_phase", {"phase": p}) for p in phases}


def test_ready_body_and_gauges_walk_through_the_phases_in_order(
    model_copy: Path, tmp_path: Path
) -> None:
    manifest = read_manifest(model_copy)
    listed = sorted(manifest.entries)
    sizes = [(model_copy / name).stat().st_size for name in listed]
    gates = tmp_path / "gates"
    gates.mkdir()
    server = RuntimeServer(
        model_copy,
        tmp_path / "server.log",
        launcher=Path(__file__).with_name("gated_start_serve.py"),
        extra_env={"QMS_TEST_GATES": str(gates)},
    )
    try:
        status, body = wait_for(
            "verifying, nothing hashed yet",
            lambda: (
                (r := _try(server)) and r[1].get("startup", {}).get("phase") == "verifying" and r
            ),
            60,
        )
        assert status == 503 and body["error"]["code"] == "loading"
        startup = body["startup"]
        assert (startup["filesDone"], startup["filesTotal"]) == (0, len(listed))
        assert (startup["bytesDone"], startup["bytesTotal"], startup["percent"]) == (
            0, sum(sizes), 0.0,
        )  # fmt: skip
        assert "etaSeconds" not in startup  # no rate yet, so no ETA
        gauges = _phase_gauges(server)
        assert gauges == {**dict.fromkeys(gauges, 0.0), "verifying": 1.0}
        for k in range(1, len(listed) + 1):
            (gates / f"file-{k}").touch()
            if k == len(listed):
                break
            _, body = wait_for(
                f"{k} files hashed",
                lambda k=k: (r := _try(server)) and r[1]["startup"].get("filesDone") == k and r,
                30,
            )
            assert body["startup"]["bytesDone"] == sum(sizes[:k])
            assert body["startup"]["percent"] == round(100 * sum(sizes[:k]) / sum(sizes), 1)
            text = scrape(f"{server.base_url}/metrics")
            assert sample_value(text, "qms_startup_files", {"state": "done"}) == k
            assert sample_value(text, "qms_startup_bytes", {"state": "total"}) == sum(sizes)
        _, body = wait_for(
            "loading",
            lambda: (r := _try(server)) and r[1]["startup"]["phase"] == "loading" and r,
            30,
        )
        assert set(body["startup"]) == {"phase", "phaseSeconds", "startedSecondsAgo"}
        assert _phase_gauges(server)["loading"] == 1.0
        (gates / "load").touch()
        server.wait_ready()
        assert _ready(server) == (200, {"status": "ready"})
        gauges = _phase_gauges(server)
        assert gauges == {**dict.fromkeys(gauges, 0.0), "ready": 1.0}
    finally:
        assert server.stop() == 0
    lines = [line for line in server.log_path.read_text().splitlines() if "startup: " in line]
    phases = [re.sub(r"^.*startup: (\S+).*$", r"\1", line) for line in lines]
    assert phases == ["checking-fit", "verifying", "loading", "warming-up", "ready"]
    gib = sum(sizes) / 1024**3
    assert lines[1].endswith(f"startup: verifying ({len(listed)} files, "
                             f"{gib:.1f} GiB)" if gib >= 0.1 else
                             f"startup: verifying ({len(listed)} files, "
                             f"{sum(sizes) / 1024**2:.0f} MiB)")  # fmt: skip
    assert re.search(
        r"startup: ready after [0-9.]+s \(checking-fit [0-9.]+s, verifying [0-9.]+s, "
        r"loading [0-9.]+s, warming-up [0-9.]+s\)$",
        lines[-1],
    ), lines[-1]


def _try(server: RuntimeServer) -> tuple[int, dict[str, Any]] | None:
    try:
        return _ready(server)
    except httpx.TransportError:
        return None  # not listening yet
