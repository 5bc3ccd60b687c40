"""Helpers for the operator e2e tests: run the operator, read objects, poll."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from polling import wait_for as wait_for  # re-exported: test_operator, test_install, bench
from prometheus_client.parser import text_string_to_metric_families

from qms_cluster import Cluster

ROOT = Path(__file__).resolve().parents[2]
KINDS = {
    "Deployment": "deployment",
    "Service": "service",
    "HorizontalPodAutoscaler": "horizontalpodautoscaler.autoscaling",
    "PodDisruptionBudget": "poddisruptionbudget",
    "NetworkPolicy": "networkpolicy",
    "Ingress": "ingress",
}
WRITE_VERBS = ("apply", "delete", "patch_status", "create")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Operator:
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
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "qms_operator.cli",
                "run",
                *args,
                f"--metrics-port={self.metrics_port}",
                f"--health-port={self.health_port}",
                *extra,
            ],
            stdout=log.open("ab"),
            stderr=subprocess.STDOUT,
            env=env,
        )

    def metrics(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as rsp:
            text = rsp.read().decode()
        out = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
        return out

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
            "operator /healthz", lambda: self.healthy() or self.proc.poll() is not None, timeout
        )
        assert self.proc.poll() is None, self.log.read_text()[-3000:]

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@contextmanager
def operator(
    cluster: Cluster,
    namespaces: list[str],
    *extra: str,
    log: Path,
    kubeconfig: Path | None = None,
) -> Iterator[Operator]:
    op = Operator(cluster, namespaces, *extra, log=log, kubeconfig=kubeconfig)
    try:
        op.wait_healthy()
        yield op
    finally:
        op.stop()


def get(cluster: Cluster, kind: str, name: str, namespace: str) -> dict[str, Any] | None:
    res = cluster.kubectl("get", kind, name, "-n", namespace, "-o", "json", check=False)
    if res.returncode:
        assert "NotFound" in res.stderr, res.stderr
        return None
    obj: dict[str, Any] = json.loads(res.stdout)
    return obj


def items(cluster: Cluster, kind: str, namespace: str, selector: str = "") -> list[dict[str, Any]]:
    args = ["get", kind, "-n", namespace, "-o", "json"]
    if selector:
        args += ["-l", selector]
    found: list[dict[str, Any]] = json.loads(cluster.kubectl(*args).stdout)["items"]
    return found


def condition(obj: dict[str, Any] | None, kind: str) -> dict[str, Any]:
    for cond in ((obj or {}).get("status") or {}).get("conditions", []):
        if cond["type"] == kind:
            return dict(cond)
    return {}


def patch_spec(cluster: Cluster, name: str, namespace: str, spec: dict[str, Any]) -> None:
    """Merge-patch a QwenModelServer's spec, as a user would."""
    body = json.dumps({"spec": spec})
    cluster.kubectl("patch", "modelserver", name, "-n", namespace, "--type=merge", "-p", body)


def apply_yaml(cluster: Cluster, namespace: str, text: str) -> None:
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=text)


def is_ready(cluster: Cluster, name: str, namespace: str) -> dict[str, Any] | None:
    obj = get(cluster, "modelserver", name, namespace)
    if not obj:
        return None
    gen = obj["metadata"]["generation"]
    ready = condition(obj, "Ready")
    if ready.get("status") == "True" and obj["status"].get("observedGeneration") == gen:
        return obj
    return None
