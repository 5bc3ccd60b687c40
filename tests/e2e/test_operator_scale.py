"""The scale subresource (issue 14) on the real control plane: `kubectl scale` and an
HPA aimed at the QwenModelServer itself, as the shipped KEDA example makes one."""

from __future__ import annotations

import json
import time
from typing import Any

import yaml
from operator_helpers import (
    ROOT,
    Operator,
    apply_yaml,
    get,
    is_ready,
    quiet_writes,
    wait_for,
)

from qms_cluster import Cluster

NAMESPACE_PREFIX = "scale-"  # the operator fixture watches these (conftest.py)

SERVER = """
apiVersion: serving.qms.io/v1alpha1
kind: QwenModelServer
metadata: {name: small}
spec:
  model: {name: qwen3-small, source: {imagePath: /models/qwen3}}
  replicas: 1
  resources: {requests: {cpu: "1", memory: 1Gi}, limits: {cpu: "1", memory: 1Gi}, gpu: {count: 0}}
"""
SELECTOR = "app.kubernetes.io/name=qms-runtime,app.kubernetes.io/instance=small"
KEDA = yaml.safe_load((ROOT / "deploy/monitoring/keda/scaledobject.yaml").read_text())
REFUSED = "replicas cannot change while autoscaling.enabled is true"


def scale_of(cluster: Cluster, ns: str, name: str = "small") -> dict[str, Any]:
    path = f"/apis/serving.qms.io/v1alpha1/namespaces/{ns}/modelservers/{name}/scale"
    body: dict[str, Any] = json.loads(cluster.kubectl("get", "--raw", path).stdout)
    return body


def deployment_replicas(cluster: Cluster, ns: str) -> int | None:
    dep = get(cluster, "deployment", "small", ns)
    return None if dep is None else int(dep["spec"]["replicas"])


def ready_with(cluster: Cluster, ns: str, replicas: int) -> dict[str, Any] | None:
    obj = is_ready(cluster, "small", ns)
    if obj and obj["status"]["ready"] == f"{replicas}/{replicas}":
        return obj
    return None


def test_kubectl_scale_sets_the_deployment_and_the_scale_status(
    cluster: Cluster, op: Operator, ns: str
) -> None:
    apply_yaml(cluster, ns, SERVER)
    wait_for("one replica Ready", lambda: ready_with(cluster, ns, 1), 60)
    assert scale_of(cluster, ns)["status"] == {"replicas": 1, "selector": SELECTOR}
    before = op.writes("Deployment")
    cluster.kubectl("scale", "qms/small", "--replicas=3", "-n", ns)
    obj = wait_for("three replicas Ready", lambda: ready_with(cluster, ns, 3), 60)
    assert obj["spec"]["replicas"] == 3
    assert (obj["status"]["replicas"], obj["status"]["selector"]) == (3, SELECTOR)
    assert deployment_replicas(cluster, ns) == 3
    scale = scale_of(cluster, ns)
    assert (scale["kind"], scale["apiVersion"]) == ("Scale", "autoscaling/v1")
    assert (scale["spec"], scale["status"]) == (
        {"replicas": 3},
        {"replicas": 3, "selector": SELECTOR},
    )
    pods = cluster.kubectl("get", "pods", "-n", ns, "-l", SELECTOR, "-o", "name").stdout.split()
    assert len(pods) == 3
    # One Deployment write carried the new count; the scale itself wrote only the CR.
    assert quiet_writes(op, "Deployment") - before == 1
    # The Deployment follows the server: scaling it directly is drift, put back.
    cluster.kubectl("scale", "deployment/small", "--replicas=5", "-n", ns)
    wait_for("Deployment back to 3", lambda: deployment_replicas(cluster, ns) == 3, 15)


def test_an_hpa_aimed_at_the_server_scales_it_without_a_fight(
    cluster: Cluster, op: Operator, ns: str
) -> None:
    """The HPA KEDA makes from deploy/monitoring/keda: its scaleTargetRef, a floor of 3.

    No metrics API runs here, so the HPA acts on its bounds only: it raises the count
    to minReplicas through /scale, then holds it (its metrics fail, it changes nothing).
    While it holds, the operator sends no Deployment write at all.
    """
    apply_yaml(cluster, ns, SERVER)
    wait_for("one replica Ready", lambda: ready_with(cluster, ns, 1), 60)
    target = {**KEDA["spec"]["scaleTargetRef"], "name": "small"}
    assert target == {
        "apiVersion": "serving.qms.io/v1alpha1",
        "kind": "QwenModelServer",
        "name": "small",
    }
    hpa = {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": "keda-hpa-small"},
        "spec": {
            "scaleTargetRef": target,
            "minReplicas": 3,
            "maxReplicas": 4,
            "metrics": [
                {
                    "type": "Resource",
                    "resource": {
                        "name": "cpu",
                        "target": {"type": "Utilization", "averageUtilization": 50},
                    },
                }
            ],
        },
    }
    apply_yaml(cluster, ns, json.dumps(hpa))
    obj = wait_for("scaled to the HPA's floor, Ready", lambda: ready_with(cluster, ns, 3), 120)
    assert obj["spec"]["replicas"] == 3  # written by the HPA through /scale
    assert deployment_replicas(cluster, ns) == 3
    full = json.loads(
        cluster.kubectl(
            "get", "qms", "small", "-n", ns, "-o", "json", "--show-managed-fields"
        ).stdout
    )
    managers = {m["manager"]: m.get("subresource", "") for m in full["metadata"]["managedFields"]}
    assert managers.get("kube-controller-manager") == "scale"
    # The HPA read the server's scale status: total replicas and the pod selector.
    status = wait_for(
        "HPA status",
        lambda: (
            (h := get(cluster, "horizontalpodautoscaler.autoscaling", "keda-hpa-small", ns))
            and h["status"].get("currentReplicas") == 3
            and h["status"]
        ),
        60,
    )
    assert status["desiredReplicas"] == 3
    held = quiet_writes(op, "Deployment")
    reconciles = op.reconciles()
    time.sleep(35)  # two HPA syncs (15 s) and seven operator resyncs (5 s)
    assert op.reconciles() - reconciles >= 5
    assert op.writes("Deployment") - held == 0
    after = get(cluster, "modelserver", "small", ns)
    assert after is not None
    assert (after["spec"]["replicas"], deployment_replicas(cluster, ns)) == (3, 3)
    # Above the HPA's ceiling by hand: the HPA brings it back to 4, the operator follows.
    cluster.kubectl("scale", "qms/small", "--replicas=6", "-n", ns)
    wait_for("HPA caps it at 4", lambda: ready_with(cluster, ns, 4), 120)
    assert deployment_replicas(cluster, ns) == 4


def test_scale_is_refused_while_the_servers_own_hpa_owns_the_count(
    cluster: Cluster, crd: None, ns: str
) -> None:
    """No operator needed: the API server's transition rule refuses the write."""
    auto = SERVER.replace("replicas: 1", "autoscaling: {enabled: true}")
    apply_yaml(cluster, ns, auto)
    res = cluster.kubectl("scale", "qms/small", "--replicas=5", "-n", ns, check=False)
    assert res.returncode == 1
    assert "spec.replicas" in res.stderr and REFUSED in res.stderr, res.stderr
    obj = get(cluster, "modelserver", "small", ns)
    assert obj is not None and obj["spec"]["replicas"] == 1
    # Turning autoscaling off and setting the count in one change is allowed.
    cluster.kubectl(
        "patch",
        "qms",
        "small",
        "-n",
        ns,
        "--type=merge",
        "-p",
        json.dumps({"spec": {"autoscaling": {"enabled": False}, "replicas": 2}}),
    )
    cluster.kubectl("scale", "qms/small", "--replicas=3", "-n", ns)
    obj = get(cluster, "modelserver", "small", ns)
    assert obj is not None and obj["spec"]["replicas"] == 3
