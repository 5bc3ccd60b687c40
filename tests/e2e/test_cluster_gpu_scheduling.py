"""Acceptance of the local control plane (issue 3): fake GPU nodes and pod placement."""

from __future__ import annotations

import time
from typing import Any

from cluster_helpers import TIMEOUT, apply, condition, get_json

import qms_cluster
from qms_cluster import Cluster
from qms_testkit.polling import wait_for

NODES = {
    # name: (zone, accelerator label, nvidia.com/gpu, cpu, memory, taints)
    "cpu-a": ("zone-a", None, None, "32", "128Gi", None),
    "gpu-h200-a": ("zone-a", "nvidia-h200", "8", "64", "512Gi", None),
    "gpu-h200-b": ("zone-b", "nvidia-h200", "8", "64", "512Gi", None),
    "gpu-t4-a": ("zone-a", "nvidia-tesla-t4", "4", "64", "512Gi", None),
    "gpu-t4-b": ("zone-b", "nvidia-tesla-t4", "4", "64", "512Gi", None),
    "spot-h200-c": (
        "zone-c",
        "nvidia-h200",
        "8",
        "64",
        "512Gi",
        [{"effect": "NoSchedule", "key": "spot", "value": "true"}],
    ),
}


def gpu_pod_spec(gpus: int, *, h200_only: bool, tolerate_spot: bool = False) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "containers": [
            {
                "name": "model",
                "image": "registry.invalid/qms-runtime:e2e",
                "resources": {"limits": {"nvidia.com/gpu": str(gpus), "cpu": "1"}},
            }
        ],
        "terminationGracePeriodSeconds": 0,
    }
    if h200_only:
        term = {"key": "accelerator", "operator": "In", "values": ["nvidia-h200"]}
        required = {"nodeSelectorTerms": [{"matchExpressions": [term]}]}
        spec["affinity"] = {
            "nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": required}
        }
    if tolerate_spot:
        spec["tolerations"] = [
            {"key": "spot", "operator": "Equal", "value": "true", "effect": "NoSchedule"}
        ]
    return spec


def is_running_ready(pod: dict[str, Any]) -> bool:
    ready = condition(pod, "Ready")
    running = pod["status"].get("phase") == "Running"
    return running and ready.get("status") == "True"


def test_get_nodes_lists_fake_nodes_with_gpu_capacity(cluster: Cluster) -> None:
    cols = (
        "NAME:.metadata.name,GPU:.status.capacity.nvidia\\.com/gpu,"
        "ACCELERATOR:.metadata.labels.accelerator,ZONE:.metadata.labels.topology\\.kubernetes\\.io/zone"
    )
    out = cluster.kubectl(
        "get", "nodes", "-o", f"custom-columns={cols}", "--sort-by=.metadata.name"
    )
    assert [line.split() for line in out.stdout.splitlines()] == [
        ["NAME", "GPU", "ACCELERATOR", "ZONE"],
        ["cpu-a", "<none>", "<none>", "zone-a"],
        ["gpu-h200-a", "8", "nvidia-h200", "zone-a"],
        ["gpu-h200-b", "8", "nvidia-h200", "zone-b"],
        ["gpu-t4-a", "4", "nvidia-tesla-t4", "zone-a"],
        ["gpu-t4-b", "4", "nvidia-tesla-t4", "zone-b"],
        ["spot-h200-c", "8", "nvidia-h200", "zone-c"],
    ]
    nodes = {n["metadata"]["name"]: n for n in get_json(cluster, "nodes")["items"]}
    assert sorted(nodes) == sorted(NODES) == sorted(qms_cluster.node_names())
    for name, (zone, accel, gpus, cpu, memory, taints) in NODES.items():
        n = nodes[name]
        labels = {
            "beta.kubernetes.io/arch": "amd64",  # added by the API server
            "beta.kubernetes.io/os": "linux",
            "kubernetes.io/arch": "amd64",
            "kubernetes.io/hostname": name,
            "kubernetes.io/os": "linux",
            "topology.kubernetes.io/zone": zone,
            "type": "kwok",
        }
        if accel:
            labels["accelerator"] = accel
        assert n["metadata"]["labels"] == labels
        assert n["metadata"]["annotations"]["kwok.x-k8s.io/node"] == "fake"
        want = {"cpu": cpu, "memory": memory, "pods": "110", "ephemeral-storage": "1Ti"}
        if gpus:
            want["nvidia.com/gpu"] = gpus
        assert n["status"]["capacity"] == want
        assert n["status"]["allocatable"] == want
        assert n["spec"].get("taints") == taints
        ready = condition(n, "Ready")
        assert ready.get("status") == "True"


def test_gpu_deployment_runs_on_h200_nodes_only_never_on_spot(
    cluster: Cluster, namespace: str
) -> None:
    # 5 pods x 4 GPUs: the two untainted H200 nodes (8 GPUs each) take two
    # pods each; the fifth fits only on the spot node, which it may not use.
    labels = {"app": "h200"}
    apply(
        cluster,
        namespace,
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "h200"},
            "spec": {
                "replicas": 5,
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": gpu_pod_spec(4, h200_only=True),
                },
            },
        },
    )

    def settled() -> list[dict[str, Any]] | None:
        pods = get_json(cluster, "pods", "-n", namespace, "-l", "app=h200")["items"]
        running = [p for p in pods if is_running_ready(p)]
        pending = [p for p in pods if not p["spec"].get("nodeName")]
        ok = len(pods) == 5 and len(running) == 4 and len(pending) == 1
        return pods if ok and condition(pending[0], "PodScheduled") else None

    pods = wait_for("4 Running/Ready pods and 1 Pending", settled, TIMEOUT)
    placed = sorted(p["spec"]["nodeName"] for p in pods if p["spec"].get("nodeName"))
    assert placed == ["gpu-h200-a", "gpu-h200-a", "gpu-h200-b", "gpu-h200-b"]
    for p in pods:
        if p["spec"].get("nodeName"):
            assert is_running_ready(p)
            assert p["status"]["podIP"].startswith("10.244.")
    (pending,) = [p for p in pods if not p["spec"].get("nodeName")]
    assert pending["status"]["phase"] == "Pending"
    sched = condition(pending, "PodScheduled")
    assert sched
    assert (sched["status"], sched["reason"]) == ("False", "Unschedulable")
    assert sched["message"] == (
        "0/6 nodes are available: 1 node(s) had untolerated taint(s), "
        "2 Insufficient nvidia.com/gpu, 3 node(s) didn't match Pod's node affinity/selector. "
        "no new claims to deallocate, preemption: 0/6 nodes are available: "
        "2 No preemption victims found for incoming pod, "
        "4 Preemption is not helpful for scheduling."
    )

    # The Deployment's status follows its pods through two controllers: poll.
    def four_ready() -> dict[str, Any] | None:
        d: dict[str, Any] = get_json(cluster, "deployment", "h200", "-n", namespace)
        return d if d["status"].get("readyReplicas") == 4 else None

    deploy = wait_for("the Deployment to report 4 ready replicas", four_ready, TIMEOUT)
    assert (deploy["status"]["replicas"], deploy["status"]["readyReplicas"]) == (5, 4)

    # Control: the same pod that tolerates the taint is placed on the spot node.
    apply(
        cluster,
        namespace,
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "tolerates-spot"},
            "spec": gpu_pod_spec(4, h200_only=True, tolerate_spot=True),
        },
    )
    pod = wait_for(
        "the tolerating pod to run",
        lambda: (
            (p := get_json(cluster, "pod", "tolerates-spot", "-n", namespace))
            and is_running_ready(p)
            and p
        ),
        TIMEOUT,
    )
    assert pod["spec"]["nodeName"] == "spot-h200-c"

    # Deletion completes (kwok plays the kubelet's part), freeing the GPUs.
    cluster.kubectl("delete", "deployment/h200", "pod/tolerates-spot", "-n", namespace)
    wait_for(
        "the pods to be gone",
        lambda: not get_json(cluster, "pods", "-n", namespace)["items"] or None,
        TIMEOUT,
    )


def test_pod_wanting_more_gpus_than_any_node_stays_pending(
    cluster: Cluster, namespace: str
) -> None:
    apply(
        cluster,
        namespace,
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "nine-gpus"},
            "spec": gpu_pod_spec(9, h200_only=False),
        },
    )

    def unschedulable() -> dict[str, Any] | None:
        c = condition(get_json(cluster, "pod", "nine-gpus", "-n", namespace), "PodScheduled")
        return c if c and c["status"] == "False" else None

    sched = wait_for("the scheduler's verdict", unschedulable, TIMEOUT)
    assert sched["reason"] == "Unschedulable"
    assert sched["message"] == (
        "0/6 nodes are available: 1 node(s) had untolerated taint(s), "
        "5 Insufficient nvidia.com/gpu. no new claims to deallocate, "
        "preemption: 0/6 nodes are available: 6 Preemption is not helpful for scheduling."
    )
    time.sleep(3)  # and it stays so
    pod = get_json(cluster, "pod", "nine-gpus", "-n", namespace)
    assert pod["status"]["phase"] == "Pending"
    assert "nodeName" not in pod["spec"]
