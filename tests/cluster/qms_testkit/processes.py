"""The one process runner of the tests and benchmarks: `ServiceProcess` (a program with
its log file, waited for over HTTP, stopped with SIGTERM then SIGKILL), and the two QMS
programs on it, `qms-runtime serve` (`RuntimeServer`) and `qms-operator run`
(`Operator`), each on free loopback ports. The local cluster's components are not run
here: they outlive the `qms-cluster up` that starts them, so qms_cluster/procs.py keeps
them detached, with their pids in the cluster's state file."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import httpx

from qms_cluster import Cluster
from qms_testkit.net import free_port
from qms_testkit.polling import wait_for
from qms_testkit.prom import Samples, samples, scrape

WRITE_VERBS = ("apply", "delete", "patch_status", "create")


class ServiceProcess:
    """One program the tests or benchmarks start and talk to over HTTP: its output in a
    log file, `wait_http` until an endpoint answers 200 (failing with the log's tail if
    the program exits first), `stop` with SIGTERM then SIGKILL. The runtime, the operator,
    `transformers serve` and the benchmarks' workers all run through it."""

    def __init__(self, command: list[str], log_path: Path, env: dict[str, str]) -> None:
        self.log_path = log_path
        self._log = log_path.open("ab")
        self.process = subprocess.Popen(command, env=env, stdout=self._log, stderr=self._log)

    @property
    def pid(self) -> int:
        return self.process.pid

    def running(self) -> bool:
        return self.process.poll() is None

    def logs(self, chars: int = 4000) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")[-chars:]

    def wait_http(self, url: str, timeout: float = 120.0) -> None:
        """Until `url` answers 200; AssertionError naming the exit code or the timeout,
        with the log's tail."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"{url}: exited {self.process.returncode}: {self.logs()}")
            try:
                if httpx.get(url, timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"{url} not answering 200 after {timeout}s: {self.logs()}")

    def terminate(self, sig: int = signal.SIGTERM) -> None:
        self.process.send_signal(sig)

    def stop(self, timeout: float = 60.0, sig: int = signal.SIGTERM) -> int:
        """`sig` (SIGTERM), SIGKILL after `timeout`; the exit code."""
        if self.process.poll() is None:
            self.terminate(sig)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()
        return self.process.returncode


def runtime_command(model_dir: Path, port: int, launcher: Path | None = None) -> list[str]:
    """`qms-runtime serve` on loopback `port`; a launcher is a script that prepares the
    process (stubs) and then runs the CLI."""
    program = [str(launcher)] if launcher is not None else ["-m", "qms_runtime.cli"]
    return [
        sys.executable, *program, "serve",
        "--model-dir", str(model_dir), "--host", "127.0.0.1", "--port", str(port),
    ]  # fmt: skip


def runtime_env(
    settings: dict[str, Any], extra_env: dict[str, str] | None = None
) -> dict[str, str]:
    """This environment without its QMS_ variables, plus `settings` as QMS_<NAME>."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("QMS_")}
    env.update({f"QMS_{k.upper()}": str(v) for k, v in settings.items()})
    env["QMS_LOG_FORMAT"] = env.get("QMS_LOG_FORMAT", "text")
    env.update(extra_env or {})
    return env


class RuntimeServer(ServiceProcess):
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
        # A test's own clients keep idle connections open: the default 6 s of idle the
        # drain waits for would add that to every server's stop. Tests of the drain
        # itself set drain_idle_seconds (test_overload_drain, the monitoring tier).
        settings.setdefault("drain_idle_seconds", 0.5)
        env = runtime_env(settings, extra_env)
        super().__init__(runtime_command(model_dir, self.port, launcher), log_path, env)

    def wait_ready(self, timeout: float = 120.0) -> None:
        self.wait_http(f"{self.base_url}/ready", timeout)


def start_server(model_dir: Path, log_dir: Path, **settings: Any) -> RuntimeServer:
    server = RuntimeServer(model_dir, log_dir / f"server-{time.time_ns()}.log", **settings)
    try:
        server.wait_ready()
    except BaseException:
        server.stop(timeout=10)
        raise
    return server


class Operator(ServiceProcess):
    """A `qms-operator run` subprocess with its metrics and health ports."""

    def __init__(
        self,
        cluster: Cluster,
        namespaces: list[str],
        *extra: str,
        log: Path,
        kubeconfig: Path | None = None,
    ) -> None:
        self.metrics_port = free_port()
        self.health_port = free_port()
        args = [f"--namespace={ns}" for ns in namespaces] or ["--all-namespaces"]
        self.log = log
        config = kubeconfig or cluster.kubeconfig
        env = {**os.environ, "KUBECONFIG": str(config), "PYTHONUNBUFFERED": "1"}
        command = [
            sys.executable, "-m", "qms_operator.cli", "run", *args,
            f"--metrics-port={self.metrics_port}", f"--health-port={self.health_port}", *extra,
        ]  # fmt: skip
        super().__init__(command, log, env)

    def metrics(self) -> Samples:
        return samples(scrape(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5))

    def writes(self, kind: str | None = None) -> int:
        """API write requests sent so far (optionally for one kind)."""
        total = 0.0
        for (name, labels), value in self.metrics().items():
            lab = dict(labels)
            if (
                name == "qms_operator_api_requests_total"
                and lab["verb"] in WRITE_VERBS
                and (kind is None or lab["kind"] == kind)
            ):
                total += value
        return int(total)

    def reconciles(self) -> float:
        return sum(
            v for (n, _), v in self.metrics().items() if n == "qms_operator_reconciles_total"
        )

    def healthy(self) -> bool:
        try:
            url = f"http://127.0.0.1:{self.health_port}/healthz"
            with urllib.request.urlopen(url, timeout=2) as rsp:
                return bool(rsp.status == 200)
        except OSError:
            return False

    def wait_healthy(self, timeout: float = 60) -> None:
        wait_for(
            "operator /healthz", lambda: self.healthy() or self.process.poll() is not None, timeout
        )
        assert self.process.poll() is None, self.log.read_text()[-3000:]

    def stop(self, timeout: float = 20.0, sig: int = signal.SIGTERM) -> int:
        return super().stop(timeout, sig)
