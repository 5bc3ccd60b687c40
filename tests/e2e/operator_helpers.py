"""Helpers for the operator e2e tests: run the operator, read objects, poll (the
operator process and the polling are qms_testkit's, re-exported here)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from cluster_helpers import condition as condition

from qms_cluster import Cluster
from qms_testkit.net import free_port as free_port
from qms_testkit.polling import wait_for as wait_for
from qms_testkit.processes import WRITE_VERBS as WRITE_VERBS
from qms_testkit.processes import Operator as Operator

ROOT = Path(__file__).resolve().parents[2]
KINDS = {
    "Deployment": "deployment",
    "Service": "service",
    "HorizontalPodAutoscaler": "horizontalpodautoscaler.autoscaling",
    "PodDisruptionBudget": "poddisruptionbudget",
    "NetworkPolicy": "networkpolicy",
    "Ingress": "ingress",
}


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


def install_crd(cluster: Cluster) -> None:
    """The QwenModelServer CRD, applied and Established."""
    cluster.kubectl(
        "apply", "--server-side", "-f", str(ROOT / "crds/modelservers.serving.qms.io.yaml")
    )
    cluster.kubectl("wait", "--for=condition=Established", "crd/modelservers.serving.qms.io")


@contextmanager
def fresh_namespace(cluster: Cluster, name: str) -> Iterator[str]:
    """A namespace with its default ServiceAccount, deleted (without waiting) after."""
    cluster.kubectl("create", "namespace", name)
    wait_for(
        "default ServiceAccount",
        lambda: (
            not cluster.kubectl(
                "get", "serviceaccount", "default", "-n", name, check=False
            ).returncode
        ),
    )
    yield name
    cluster.kubectl("delete", "namespace", name, "--wait=false", "--ignore-not-found")


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


def quiet_writes(op: Operator, kind: str, quiet: float = 3.0, timeout: float = 30) -> int:
    """The operator's write count for kind once it has not changed for `quiet` seconds."""
    deadline = time.monotonic() + timeout
    last, since = op.writes(kind), time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.2)
        now = op.writes(kind)
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet:
            return last
    raise AssertionError(f"{kind} writes did not settle within {timeout:g}s (last {last})")
