"""Helpers for the runtime tests: real server processes and /metrics reading."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

API_KEY = "test-key-0123456789"
ARCHS = ("qwen3", "qwen3_moe", "qwen3_omni_moe")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class RuntimeServer:
    """`qms-runtime serve` in a subprocess on a free loopback port."""

    def __init__(
        self,
        model_dir: Path,
        log_path: Path,
        *,
        launcher: Path | None = None,
        extra_env: dict[str, str] | None = None,
        **settings: Any,
    ) -> None:
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        env = {k: v for k, v in os.environ.items() if not k.startswith("QMS_")}
        env.update({f"QMS_{k.upper()}": str(v) for k, v in settings.items()})
        env["QMS_LOG_FORMAT"] = env.get("QMS_LOG_FORMAT", "text")
        env.update(extra_env or {})
        self._log = log_path.open("wb")
        # A launcher is a script that prepares the process (stubs) and then runs the CLI.
        program = [str(launcher)] if launcher is not None else ["-m", "qms_runtime.cli"]
        command = [
            sys.executable, *program, "serve",
            "--model-dir", str(model_dir), "--host", "127.0.0.1", "--port", str(self.port),
        ]  # fmt: skip
        self.process = subprocess.Popen(command, env=env, stdout=self._log, stderr=self._log)

    def wait_ready(self, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"server exited {self.process.returncode}: {self.logs()}")
            try:
                if httpx.get(f"{self.base_url}/ready", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"server not ready after {timeout}s: {self.logs()}")

    def logs(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")[-4000:]

    def terminate(self) -> None:
        self.process.send_signal(signal.SIGTERM)

    def stop(self, timeout: float = 60.0) -> int:
        if self.process.poll() is None:
            self.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()
        return self.process.returncode


def start_server(model_dir: Path, log_dir: Path, **settings: Any) -> RuntimeServer:
    server = RuntimeServer(model_dir, log_dir / f"server-{time.time_ns()}.log", **settings)
    try:
        server.wait_ready()
    except BaseException:
        server.stop(timeout=10)
        raise
    return server


def auth() -> dict[str, str]:
    return {"Authorization": f"Bearer {API_KEY}"}


def metric_value(base_url: str, name: str, labels: dict[str, str] | None = None) -> float:
    """One sample of /metrics, parsed with prometheus-client's own parser (0 if absent)."""
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(f"{base_url}/metrics", timeout=10).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(
                sample.labels.get(k) == v for k, v in (labels or {}).items()
            ):
                return float(sample.value)
    return 0.0
