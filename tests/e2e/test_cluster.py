"""Acceptance of the local control plane (issue 3), against the real binaries."""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest

import qms_cluster
from qms_cluster import Cluster

T = TypeVar("T")

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


def wait_for(what: str, fn: Callable[[], T | None], timeout: float = 120) -> T:
    """Poll fn until it returns something truthy; generous, timing is not asserted."""
    deadline = time.monotonic() + timeout
    while True:
        value = fn()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.2)


def get_json(cluster: Cluster, *args: str) -> Any:
    return json.loads(cluster.kubectl("get", "-o", "json", *args).stdout)


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


def apply(cluster: Cluster, namespace: str, obj: dict[str, Any]) -> None:
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(obj))


def condition(obj: dict[str, Any], type_: str) -> dict[str, Any] | None:
    for c in obj.get("status", {}).get("conditions", []):
        if c["type"] == type_:
            return dict(c)
    return None


def is_running_ready(pod: dict[str, Any]) -> bool:
    ready = condition(pod, "Ready")
    running = pod["status"].get("phase") == "Running"
    return running and ready is not None and ready["status"] == "True"


def test_server_reports_pinned_version(cluster: Cluster) -> None:
    v = json.loads(cluster.kubectl("version", "-o", "json").stdout)
    assert v["serverVersion"]["gitVersion"] == "v1.34.4"
    assert (v["serverVersion"]["major"], v["serverVersion"]["minor"]) == ("1", "34")
    assert v["clientVersion"]["gitVersion"] == "v1.34.4"
    assert qms_cluster.K8S_VERSION == "v1.34.4"


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
        assert ready is not None and ready["status"] == "True"


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

    pods = wait_for("4 Running/Ready pods and 1 Pending", settled)
    placed = sorted(p["spec"]["nodeName"] for p in pods if p["spec"].get("nodeName"))
    assert placed == ["gpu-h200-a", "gpu-h200-a", "gpu-h200-b", "gpu-h200-b"]
    for p in pods:
        if p["spec"].get("nodeName"):
            assert is_running_ready(p)
            assert p["status"]["podIP"].startswith("10.244.")
    (pending,) = [p for p in pods if not p["spec"].get("nodeName")]
    assert pending["status"]["phase"] == "Pending"
    sched = condition(pending, "PodScheduled")
    assert sched is not None
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

    deploy = wait_for("the Deployment to report 4 ready replicas", four_ready)
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
    )
    assert pod["spec"]["nodeName"] == "spot-h200-c"

    # Deletion completes (kwok plays the kubelet's part), freeing the GPUs.
    cluster.kubectl("delete", "deployment/h200", "pod/tolerates-spot", "-n", namespace)
    wait_for(
        "the pods to be gone",
        lambda: not get_json(cluster, "pods", "-n", namespace)["items"] or None,
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

    sched = wait_for("the scheduler's verdict", unschedulable)
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


def test_deleting_owner_deletes_owned_objects(cluster: Cluster, namespace: str) -> None:
    cluster.kubectl("create", "configmap", "owner", "-n", namespace)
    uid = get_json(cluster, "configmap", "owner", "-n", namespace)["metadata"]["uid"]
    ref = {"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": uid}
    meta = {"ownerReferences": [ref]}
    apply(
        cluster,
        namespace,
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "child", **meta}},
    )
    apply(
        cluster,
        namespace,
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "child", **meta}},
    )
    apply(
        cluster, namespace, {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "free"}}
    )

    cluster.kubectl("delete", "configmap", "owner", "-n", namespace)

    def children_gone() -> bool:
        r = cluster.kubectl("get", "configmap/child", "secret/child", "-n", namespace, check=False)
        return r.stderr.count("NotFound") == 2

    wait_for("the garbage collector to delete the owned objects", children_gone)
    names = cluster.kubectl("get", "configmaps", "-n", namespace, "-o", "name").stdout.split()
    # kube-root-ca.crt is published into every namespace by the controller-manager, async.
    assert sorted(set(names) - {"configmap/kube-root-ca.crt"}) == ["configmap/free"]


def test_crd_cel_rule_rejects_breaking_object(cluster: Cluster, namespace: str) -> None:
    group = f"e2e-{secrets.token_hex(3)}.qms.io"  # fresh per run: CRD deletion is async
    spec_schema = {
        "type": "object",
        "required": ["minReplicas", "maxReplicas"],
        "properties": {"minReplicas": {"type": "integer"}, "maxReplicas": {"type": "integer"}},
        "x-kubernetes-validations": [
            {
                "rule": "self.minReplicas <= self.maxReplicas",
                "message": "minReplicas must not exceed maxReplicas",
            }
        ],
    }
    crd = {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"widgets.{group}"},
        "spec": {
            "group": group,
            "names": {"kind": "Widget", "plural": "widgets", "singular": "widget"},
            "scope": "Namespaced",
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "properties": {"spec": spec_schema},
                        }
                    },
                }
            ],
        },
    }
    cluster.kubectl("apply", "-f", "-", input=json.dumps(crd))
    try:
        # (kubectl wait errors out while the new CRD has no conditions yet)
        def established() -> bool:
            c = condition(get_json(cluster, "crd", f"widgets.{group}"), "Established")
            return c is not None and c["status"] == "True"

        wait_for("the CRD to be Established", established)

        def widget(name: str, lo: int, hi: int) -> subprocess.CompletedProcess[str]:
            obj = {
                "apiVersion": f"{group}/v1",
                "kind": "Widget",
                "metadata": {"name": name},
                "spec": {"minReplicas": lo, "maxReplicas": hi},
            }
            return cluster.kubectl(
                "create", "-n", namespace, "-f", "-", input=json.dumps(obj), check=False
            )

        def created() -> subprocess.CompletedProcess[str] | None:
            r = widget("good", 1, 3)
            return r if r.returncode == 0 else None

        # Discovery may lag the Established condition by a moment.
        good = wait_for("the Widget kind to be served", created)
        assert good.stdout.strip() == f"widget.{group}/good created"
        bad = widget("bad", 3, 2)
        assert bad.returncode == 1
        assert bad.stderr.strip() == (
            'The Widget "bad" is invalid: spec: Invalid value: "object": '
            "minReplicas must not exceed maxReplicas"
        )
        assert cluster.kubectl(
            "get", f"widgets.{group}", "-n", namespace, "-o", "name"
        ).stdout.split() == [f"widget.{group}/good"]
    finally:
        cluster.kubectl("delete", "crd", f"widgets.{group}", "--wait=false")


def test_build_is_a_noop_when_cached() -> None:
    ok, reason = qms_cluster.binaries_available()
    if not ok:
        pytest.skip(f"control-plane binaries cannot exist here: {reason}")
    argv = [sys.executable, "-m", "qms_cluster.cli", "build"]
    r = subprocess.run(argv, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    assert r.stderr.splitlines() == [
        "qms-cluster: binaries cached (k8s v1.34.4, etcd v3.6.16, kwok v0.7.0) "
        f"under {Path.home() / '.cache' / 'qms'}"
    ]
    cache = Path.home() / ".cache" / "qms"
    assert r.stdout.splitlines() == [
        f"k8s v1.34.4: {cache / 'k8s-v1.34.4' / 'bin'}",
        f"etcd v3.6.16: {cache / 'etcd-v3.6.16' / 'bin'}",
        f"kwok v0.7.0: {cache / 'kwok-v0.7.0' / 'bin'}",
    ]


def _pid_gone(pid: int, start_time: int) -> bool:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    fields = raw[raw.rindex(")") + 2 :].split()
    return fields[0] in ("Z", "X") or int(fields[19]) != start_time


def test_lifecycle_up_twice_status_crash_and_down(tmp_path: Path) -> None:
    """Through the CLI, as a user would: the components outlive `up`."""
    ok, reason = qms_cluster.binaries_available()
    if not ok:
        pytest.skip(f"control-plane binaries cannot exist here: {reason}")
    state_dir = tmp_path / "cluster"

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        argv = [sys.executable, "-m", "qms_cluster.cli", "--state-dir", str(state_dir), *args]
        return subprocess.run(
            argv, capture_output=True, text=True, timeout=300, env=dict(os.environ)
        )

    first = cli("up")
    assert first.returncode == 0, first.stderr
    try:
        before = json.loads((state_dir / "state.json").read_text())["components"]
        assert [c["name"] for c in before] == [
            "etcd",
            "kube-apiserver",
            "kube-controller-manager",
            "kube-scheduler",
            "kwok",
        ]
        second = cli("up")
        assert second.returncode == 0, second.stderr
        assert "already running" in second.stderr
        assert json.loads((state_dir / "state.json").read_text())["components"] == before
        assert cli("kubeconfig").stdout.strip() == str(state_dir.resolve() / "kubeconfig")
        st = qms_cluster.status(state_dir)
        assert st.running and [c.running for c in st.components] == [True] * 5

        sched = next(c for c in before if c["name"] == "kube-scheduler")
        os.kill(sched["pid"], signal.SIGKILL)
        wait_for("the kill", lambda: _pid_gone(sched["pid"], sched["start_time"]), 30)
        st = qms_cluster.status(state_dir)
        assert not st.running and st.api_ready
        assert {c.name: c.running for c in st.components} == {
            "etcd": True,
            "kube-apiserver": True,
            "kube-controller-manager": True,
            "kube-scheduler": False,
            "kwok": True,
        }
        crashed = next(c for c in st.components if c.name == "kube-scheduler")
        assert (
            crashed.log_tail
            and crashed.log_tail == qms_cluster.status(state_dir).components[3].log_tail
        )
        out = cli("status")
        assert out.returncode == 1
        lines = out.stdout.splitlines()
        assert any(
            line.split()[:2] == ["kube-scheduler", "crashed"] for line in lines if line.strip()
        )
        assert any(
            line.split()[:2] == ["kube-apiserver", "running"] for line in lines if line.strip()
        )
        assert crashed.log_tail.splitlines()[-1].strip() in out.stdout
    finally:
        gone = cli("down")
    assert gone.returncode == 0, gone.stderr
    for c in before:
        pid, start = c["pid"], c["start_time"]
        wait_for(f"{c['name']} to be gone", lambda: _pid_gone(pid, start), 30)  # noqa: B023
    assert not state_dir.exists()
    assert cli("status").returncode == 1
    assert not qms_cluster.status(state_dir).exists
