"""Issue 16: a watch event cuts a retry backoff short.

Two servers whose reconcile keeps failing, each for a reason that no retry fixes:
``monitored`` wants a ServiceMonitor on a cluster without the Prometheus Operator's
CRD; ``refused`` has its NetworkPolicy refused by a ValidatingAdmissionPolicy. After
two minutes of failing, their retries are 60 s apart; a child deleted or edited by
hand must still be put back within 5 s, every time, while the failing child is
retried only at its backoff and stays named in the status.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import service_monitor_crd
from cluster_helpers import namespace_name
from operator_helpers import (
    ROOT,
    Operator,
    apply_yaml,
    condition,
    get,
    operator,
    wait_for,
)

from qms_cluster import Cluster

SERVER = """
apiVersion: serving.qms.io/v1alpha1
kind: QwenModelServer
metadata: {name: NAME}
spec:
  model: {name: qwen3-small, source: {imagePath: /models/qwen3}}
  resources: {requests: {cpu: 100m, memory: 128Mi}, limits: {cpu: 100m, memory: 128Mi},
              gpu: {count: 0}}
  ingress: {enabled: true, host: NAME.example.com}
  monitoring: {serviceMonitor: MONITOR}
"""
POLICY = """
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicy
metadata: {name: NS-no-netpol}
spec:
  failurePolicy: Fail
  matchConstraints:
    resourceRules:
      - apiGroups: [networking.k8s.io]
        apiVersions: [v1]
        operations: [CREATE, UPDATE]
        resources: [networkpolicies]
  validations:
    - expression: "object.metadata.name != 'refused'"
      message: NetworkPolicies here are the platform team's
---
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicyBinding
metadata: {name: NS-no-netpol}
spec:
  policyName: NS-no-netpol
  validationActions: [Deny]
  matchResources:
    namespaceSelector:
      matchLabels: {kubernetes.io/metadata.name: NS}
"""
PROBE = """
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: refused}
spec: {podSelector: {}}
"""
FAILING_FOR = 120.0  # seconds the servers fail before the children are touched
RESTORED_WITHIN = 5.0


def requests(op: Operator, verb: str, kind: str) -> float:
    key = ("qms_operator_api_requests_total", (("kind", kind), ("verb", verb)))
    return op.metrics().get(key, 0.0)


def error_reconciles(op: Operator) -> float:
    return op.metrics().get(("qms_operator_reconciles_total", (("result", "error"),)), 0.0)


@pytest.fixture
def ns(cluster: Cluster) -> Iterator[str]:
    cluster.kubectl(
        "apply", "--server-side", "-f", str(ROOT / "crds/modelservers.serving.qms.io.yaml")
    )
    cluster.kubectl("wait", "--for=condition=Established", "crd/modelservers.serving.qms.io")
    service_monitor_crd.remove(cluster)
    name = namespace_name("solo-backoff")
    cluster.kubectl("create", "namespace", name)
    policy = POLICY.replace("NS", name)
    cluster.kubectl("apply", "-f", "-", input=policy)

    def refuses() -> bool:
        res = cluster.kubectl(
            "create", "--dry-run=server", "-n", name, "-f", "-", input=PROBE, check=False
        )
        return res.returncode != 0 and "platform team" in res.stderr

    wait_for("the admission policy in force", refuses, 60)
    yield name
    cluster.kubectl("delete", "-f", "-", "--ignore-not-found", input=policy)
    cluster.kubectl("delete", "namespace", name, "--wait=false", "--ignore-not-found")


def recreated(cluster: Cluster, resource: str, name: str, ns: str, uid: str) -> Any:
    return (o := get(cluster, resource, name, ns)) and o["metadata"]["uid"] != uid and o


def host(obj: dict[str, Any] | None) -> str:
    return str(((obj or {}).get("spec") or {}).get("rules", [{}])[0].get("host"))


def image(obj: dict[str, Any] | None) -> str:
    return str((obj or {})["spec"]["template"]["spec"]["containers"][0]["image"])


def managed_by(obj: dict[str, Any] | None) -> str | None:
    return ((obj or {}).get("metadata", {}).get("labels") or {}).get("app.kubernetes.io/managed-by")


def repairs(cluster: Cluster, ns: str, name: str) -> list[tuple[str, Any, Any]]:
    """(what, break it, is it back?) for the Service, Deployment and Ingress of a server."""
    ingress = "ingress.networking.k8s.io"

    def delete(resource: str) -> tuple[Any, Any]:
        uid = get(cluster, resource, name, ns)["metadata"]["uid"]  # type: ignore[index]
        return (
            lambda: cluster.kubectl("delete", resource, name, "-n", ns),
            lambda: recreated(cluster, resource, name, ns, uid),
        )

    def edit(resource: str, patch: list[dict[str, Any]], back: Any) -> tuple[Any, Any]:
        body = json.dumps(patch)
        return (
            lambda: cluster.kubectl("patch", resource, name, "-n", ns, "--type=json", "-p", body),
            lambda: back(get(cluster, resource, name, ns)),
        )

    label = "/metadata/labels/app.kubernetes.io~1managed-by"
    container = "/spec/template/spec/containers/0/image"
    return [
        ("Service deleted", *delete("service")),
        (
            "Service label edited",
            *edit(
                "service",
                [{"op": "remove", "path": label}],
                lambda o: managed_by(o) == "qms-operator",
            ),
        ),
        ("Deployment deleted", *delete("deployment")),
        (
            "Deployment image edited",
            *edit(
                "deployment",
                [{"op": "replace", "path": container, "value": "evil.example.com/x:1"}],
                lambda o: image(o) == "ghcr.io/qms-io/qms-runtime:0.1.0",
            ),
        ),
        ("Ingress deleted", *delete(ingress)),
        (
            "Ingress host edited",
            *edit(
                ingress,
                [{"op": "replace", "path": "/spec/rules/0/host", "value": "evil.example.com"}],
                lambda o: host(o) == f"{name}.example.com",
            ),
        ),
    ]


def test_drift_is_repaired_in_seconds_on_a_server_that_keeps_failing(
    cluster: Cluster, ns: str, tmp_path: Path
) -> None:
    # No resync within the test: only events and the backoff bring reconciles.
    with operator(cluster, [ns], "--resync-seconds=3600", log=tmp_path / "operator.log") as op:
        for name, monitor in (("monitored", "true"), ("refused", "false")):
            apply_yaml(cluster, ns, SERVER.replace("NAME", name).replace("MONITOR", monitor))

        def failing() -> bool:
            monitored = get(cluster, "modelserver", "monitored", ns)
            refused = get(cluster, "modelserver", "refused", ns)
            return (
                condition(monitored, "MonitoringReady").get("reason") == "ServiceMonitorNotServed"
                and condition(monitored, "Ready").get("status") == "True"
                and condition(refused, "Stalled").get("reason") == "ApplyFailed"
            )

        wait_for("both servers failing (and monitored Ready without monitoring)", failing, 90)
        failing_since = time.monotonic()
        stalled = condition(get(cluster, "modelserver", "refused", ns), "Stalled")
        assert stalled["message"].startswith("apply NetworkPolicy refused: 422 ")
        assert "NetworkPolicies here are the platform team's" in stalled["message"]

        time.sleep(FAILING_FOR - 30)
        errors = error_reconciles(op)
        time.sleep(30)
        # In a long backoff: at most one retry per server in these 30 s (not a hot loop).
        assert error_reconciles(op) - errors <= 2
        netpol_attempts = requests(op, "apply", "NetworkPolicy")
        discovery = requests(op, "discovery", "")
        assert netpol_attempts <= 10  # 1, 2, 4 ... 60 s apart over two minutes

        started = time.monotonic()
        seconds: dict[str, list[float]] = {}
        for _ in range(3):
            for name in ("monitored", "refused"):
                for what, break_it, is_back in repairs(cluster, ns, name):
                    t0 = time.monotonic()
                    break_it()
                    wait_for(f"{name}: {what}: put back", is_back, RESTORED_WITHIN, every=0.05)
                    took = time.monotonic() - t0
                    seconds.setdefault(f"{name}: {what}", []).append(round(took, 2))
                    assert took < RESTORED_WITHIN, (name, what, took)
        elapsed = time.monotonic() - started
        print(f"\nrestored after (s), 3 rounds, failing for {FAILING_FOR:g}+ s: {seconds}")
        print(f"repairs took {elapsed:.1f}s in all")
        assert time.monotonic() - failing_since >= FAILING_FOR

        # Only the failing child's retry backs off: the refused apply was not retried on
        # each of the 18 events of its server, nor ServiceMonitor discovery on each of
        # the other's (one discovery request per 10 s at most).
        assert requests(op, "apply", "NetworkPolicy") - netpol_attempts <= 2 + elapsed / 60
        assert requests(op, "discovery", "") - discovery <= 1 + elapsed / 10
        # The failing children are still named.
        wait_for(
            "monitored Ready again, still without its ServiceMonitor",
            lambda: (
                (o := get(cluster, "modelserver", "monitored", ns))
                and condition(o, "Ready").get("status") == "True"
                and condition(o, "MonitoringReady").get("reason") == "ServiceMonitorNotServed"
            ),
            60,
        )
        refused = get(cluster, "modelserver", "refused", ns)
        assert condition(refused, "Stalled")["message"] == stalled["message"]
        assert get(cluster, "networkpolicy", "monitored", ns) is not None
        assert get(cluster, "networkpolicy", "refused", ns) is None
        assert "Traceback" not in (tmp_path / "operator.log").read_text()
