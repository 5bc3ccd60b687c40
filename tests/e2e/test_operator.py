"""Operator acceptance (issue 4) against the real control plane: kopf + SSA + status."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from cluster_helpers import namespace_name
from operator_helpers import (
    KINDS,
    ROOT,
    Operator,
    apply_yaml,
    condition,
    get,
    is_ready,
    items,
    operator,
    patch_spec,
    quiet_writes,
    wait_for,
)

import qms_cluster
from qms_cluster import Cluster
from qms_operator.builders import desired_children
from qms_operator.diff import differences
from qms_operator.spec import parse_spec
from qms_testkit.examples import invalid_cases

NAMESPACE_PREFIX = "op-"  # the operator fixture watches these (conftest.py)

SEED = (ROOT / "deploy/examples/seed-faithful.yaml").read_text()
# The seed article's example does not fit its one T4: the operator's fit check stalls it
# (test_the_seed_example_does_not_fit...). The tests of reconciling itself run it with the
# check off, on the kwok T4s as the article asks, which leaves the H200s to the tests
# that need whole H200 nodes.
SEED_UNCHECKED = SEED.replace(
    "acceleratorTypes: [nvidia-tesla-t4]",
    "acceleratorTypes: [nvidia-tesla-t4]\n      fitCheck: false",
)
H200_NODES = {"gpu-h200-a", "gpu-h200-b", "spot-h200-c"}
SMALL = """
apiVersion: serving.qms.io/v1alpha1
kind: QwenModelServer
metadata: {name: small}
spec:
  model: {name: qwen3-small, source: {imagePath: /models/qwen3}}
  resources: {requests: {cpu: "1", memory: 1Gi}, limits: {cpu: "1", memory: 1Gi}, gpu: {count: 0}}
"""
# A PVC the seed example's weights come from, bound to a static PV.
WEIGHTS = """
apiVersion: v1
kind: PersistentVolume
metadata: {name: weights-NS}
spec:
  capacity: {storage: 100Gi}
  accessModes: [ReadOnlyMany]
  storageClassName: ""
  hostPath: {path: /srv/weights}
  claimRef: {namespace: NS, name: qwen-weights}
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: qwen-weights}
spec:
  accessModes: [ReadOnlyMany]
  storageClassName: ""
  volumeName: weights-NS
  resources: {requests: {storage: 100Gi}}
"""


def seed(cluster: Cluster, ns: str) -> dict[str, Any]:
    apply_yaml(cluster, ns, WEIGHTS.replace("NS", ns))
    # A pod of an unbound claim is (briefly) unschedulable, which would stall the server.
    wait_for(
        "weights claim Bound",
        lambda: (
            (get(cluster, "pvc", "qwen-weights", ns) or {}).get("status", {}).get("phase")
            == "Bound"
        ),
        60,
    )
    apply_yaml(cluster, ns, SEED_UNCHECKED)
    return wait_for("seed example Ready", lambda: is_ready(cluster, "qwen3-omni", ns), 90)


def desired(server: dict[str, Any]) -> dict[str, dict[str, Any]]:
    meta = server["metadata"]
    children = desired_children(
        meta["name"], meta["namespace"], meta["uid"], parse_spec(server["spec"])
    )
    return {c["kind"]: c for c in children}


def test_seed_example_converges(cluster: Cluster, op: Operator, ns: str) -> None:
    server = seed(cluster, ns)
    want = desired(server)
    assert sorted(want) == sorted(KINDS)
    for kind, child in want.items():
        live = get(cluster, KINDS[kind], "qwen3-omni", ns)
        assert live is not None, kind
        assert differences(child, live) == [], kind
        [ref] = live["metadata"]["ownerReferences"]
        assert (ref["kind"], ref["name"], ref["uid"], ref["controller"]) == (
            "QwenModelServer",
            "qwen3-omni",
            server["metadata"]["uid"],
            True,
        )
    pods = items(cluster, "pods", ns, "app.kubernetes.io/instance=qwen3-omni")
    assert len(pods) == 2  # the HPA's minReplicas
    assert {p["spec"]["nodeName"] for p in pods} == {"gpu-t4-a", "gpu-t4-b"}  # spread, T4 only
    status = server["status"]
    assert status["observedGeneration"] == server["metadata"]["generation"]
    assert (status["phase"], status["ready"], status["readyReplicas"]) == ("Ready", "2/2", 2)
    assert status["url"] == f"http://qwen3-omni.{ns}.svc.cluster.local:8080/v1"
    assert [(c["type"], c["status"]) for c in status["conditions"]] == [
        ("Ready", "True"),
        ("Reconciling", "False"),
        ("Stalled", "False"),
    ]
    assert "finalizers" not in server["metadata"]
    assert not any(k.startswith("kopf") for k in server["metadata"].get("annotations", {}))
    cluster.kubectl(
        "wait", "--for=condition=Ready", "modelserver/qwen3-omni", "-n", ns, "--timeout=30s"
    )
    table = cluster.kubectl("get", "modelservers", "-n", ns).stdout.splitlines()
    assert table[0].split() == ["NAME", "MODEL", "READY", "STATUS", "URL", "AGE"]
    assert table[1].split()[:5] == [
        "qwen3-omni",
        "qwen3-omni-30b-a3b-instruct",
        "2/2",
        "Ready",
        f"http://qwen3-omni.{ns}.svc.cluster.local:8080/v1",
    ]
    events = items(cluster, "events", ns, "")
    created = [e["message"] for e in events if e["reason"] == "Created"]
    assert len(created) == 1  # one Event names every child created in that reconcile
    assert created[0].startswith("Created ") and created[0].endswith(" qwen3-omni")
    assert sorted(created[0][len("Created ") : -len(" qwen3-omni")].split(", ")) == sorted(KINDS)


def test_rollout_is_not_ready_until_new_pods_serve(cluster: Cluster, op: Operator, ns: str) -> None:
    before = seed(cluster, ns)
    new_image = "ghcr.io/qms-io/qms-runtime:0.2.0"
    patch_spec(
        cluster,
        "qwen3-omni",
        ns,
        {"runtime": {"image": new_image}, "resources": {"limits": {"cpu": "12"}}},
    )
    saw_reconciling = False
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        obj = get(cluster, "modelserver", "qwen3-omni", ns)
        assert obj is not None
        gen = obj["metadata"]["generation"]
        ready = condition(obj, "Ready")
        saw_reconciling |= condition(obj, "Reconciling").get("status") == "True"
        if ready.get("status") == "True" and obj["status"]["observedGeneration"] == gen:
            # Ready on the new generation: every pod runs the new spec.
            pods = items(cluster, "pods", ns, "app.kubernetes.io/instance=qwen3-omni")
            live = [p for p in pods if not p["metadata"].get("deletionTimestamp")]
            assert {p["spec"]["containers"][0]["image"] for p in live} == {new_image}
            assert {p["spec"]["containers"][0]["resources"]["limits"]["cpu"] for p in live} == {
                "12"
            }
            break
        if ready.get("status") == "True":
            # Ready may only ever describe the generation it was computed for.
            assert ready["observedGeneration"] == obj["status"]["observedGeneration"] < gen
        time.sleep(0.05)
    else:
        raise AssertionError("not Ready on the new generation within 90s")
    assert gen == before["metadata"]["generation"] + 1
    assert saw_reconciling


def test_missing_gpu_type_stalls_with_the_scheduler_reason(
    cluster: Cluster, op: Operator, ns: str
) -> None:
    apply_yaml(
        cluster,
        ns,
        SMALL.replace("gpu: {count: 0}", "gpu: {count: 1, acceleratorTypes: [nvidia-b200]}"),
    )
    obj = wait_for(
        "Stalled",
        lambda: (
            (o := get(cluster, "modelserver", "small", ns))
            and condition(o, "Stalled").get("status") == "True"
            and o
        ),
        60,
    )
    stalled = condition(obj, "Stalled")
    assert stalled["reason"] == "Unschedulable"
    assert "didn't match Pod's node affinity/selector" in stalled["message"]
    assert condition(obj, "Ready")["status"] == "False"
    assert obj["status"]["phase"] == "Failed"
    event = wait_for(
        "Unschedulable Event",
        lambda: [
            e
            for e in items(cluster, "events", ns)
            if e["reason"] == "Unschedulable" and e["involvedObject"]["kind"] == "QwenModelServer"
        ],
    )
    assert event[0]["type"] == "Warning"
    assert "cannot be scheduled" in event[0]["message"]


@pytest.mark.parametrize("case", invalid_cases(), ids=lambda c: c.id)
def test_invalid_corpus_is_refused_by_the_api_server(
    cluster: Cluster, crd: None, case: Any
) -> None:
    if case.before is not None:  # a transition rule: the update of an existing object
        name = case.before["metadata"]["name"]
        cluster.kubectl("delete", "modelserver", name, "-n", "default", "--ignore-not-found")
        cluster.kubectl("create", "-n", "default", "-f", "-", input=yaml.safe_dump(case.before))
    res = cluster.kubectl(
        "apply",
        "--dry-run=server",
        "-n",
        "default",
        "-f",
        "-",
        input=yaml.safe_dump(case.body),
        check=False,
    )
    if case.before is not None:
        cluster.kubectl("delete", "modelserver", name, "-n", "default")
    assert res.returncode != 0, f"{case.id} was accepted"
    assert case.field in res.stderr
    assert case.message in res.stderr


def test_drift_is_repaired_and_foreign_fields_are_left_alone(
    cluster: Cluster, op: Operator, ns: str
) -> None:
    server = seed(cluster, ns)
    want = desired(server)
    for kind, resource in KINDS.items():
        uid = get(cluster, resource, "qwen3-omni", ns)["metadata"]["uid"]  # type: ignore[index]
        cluster.kubectl("delete", resource, "qwen3-omni", "-n", ns)
        back = wait_for(
            f"{kind} recreated",
            lambda r=resource, u=uid: (
                (  # type: ignore[misc]
                    o := get(cluster, r, "qwen3-omni", ns)
                )
                and o["metadata"]["uid"] != u
                and o
            ),
            15,
        )
        assert differences(want[kind], back) == [], kind
    writes = op.writes("Deployment")
    cluster.kubectl(
        "set", "image", "deployment/qwen3-omni", "runtime=evil.example.com/x:1", "-n", ns
    )
    wait_for(
        "image reverted",
        lambda: (
            get(cluster, "deployment", "qwen3-omni", ns)["spec"]["template"]["spec"]["containers"][  # type: ignore[index]
                0
            ]["image"]
            == "ghcr.io/qms-io/qms-runtime:0.1.0"
        ),
        15,
    )
    cluster.kubectl(
        "label", "service", "qwen3-omni", "-n", ns, "app.kubernetes.io/managed-by-", "team=ml"
    )
    svc = wait_for(
        "label restored",
        lambda: (
            (o := get(cluster, "service", "qwen3-omni", ns))
            and o["metadata"]["labels"].get("app.kubernetes.io/managed-by") == "qms-operator"
            and o
        ),
        15,
    )
    assert svc["metadata"]["labels"]["team"] == "ml"  # a label the operator does not set stays
    # The image edit was reverted by exactly one write: the watch events of the edited
    # Deployment that arrive after the revert (the controller's status writes) are
    # older than the revert the operator stored, and do not bring the edit back.
    assert quiet_writes(op, "Deployment") == writes + 1
    # Scale as the HPA would (another field manager): the operator does not fight it.
    cluster.kubectl("scale", "deployment/qwen3-omni", "--replicas=3", "-n", ns)
    time.sleep(8)  # more than one resync period
    assert get(cluster, "deployment", "qwen3-omni", ns)["spec"]["replicas"] == 3  # type: ignore[index]
    assert op.writes("Deployment") == writes + 1


def test_toggling_optional_children(cluster: Cluster, op: Operator, ns: str) -> None:
    seed(cluster, ns)

    def patch(spec: dict[str, Any]) -> None:
        patch_spec(cluster, "qwen3-omni", ns, spec)

    patch(
        {
            "ingress": {"enabled": False},
            "autoscaling": {"enabled": False},
            "replicas": 1,
            "networkPolicy": {"enabled": False},
        }
    )
    for resource in ("ingress", "horizontalpodautoscaler.autoscaling", "networkpolicy"):
        wait_for(
            f"{resource} removed", lambda r=resource: get(cluster, r, "qwen3-omni", ns) is None, 15
        )  # type: ignore[misc]
    wait_for(
        "replicas back under the operator",
        lambda: get(cluster, "deployment", "qwen3-omni", ns)["spec"]["replicas"] == 1,
        15,
    )  # type: ignore[index]
    wait_for("Ready with one replica", lambda: is_ready(cluster, "qwen3-omni", ns), 60)
    patch(
        {
            "ingress": {"enabled": True},
            "autoscaling": {"enabled": True},
            "networkPolicy": {"enabled": True},
        }
    )
    for resource in ("ingress", "horizontalpodautoscaler.autoscaling", "networkpolicy"):
        wait_for(f"{resource} recreated", lambda r=resource: get(cluster, r, "qwen3-omni", ns), 15)  # type: ignore[misc]
    assert (
        "replicas"
        not in desired(get(cluster, "modelserver", "qwen3-omni", ns))["Deployment"]["spec"]
    )  # type: ignore[arg-type]


def test_deleting_the_server_collects_its_children(cluster: Cluster, op: Operator, ns: str) -> None:
    seed(cluster, ns)
    cluster.kubectl("delete", "modelserver", "qwen3-omni", "-n", ns, "--timeout=30s")
    for resource in KINDS.values():
        wait_for(
            f"{resource} collected",
            lambda r=resource: get(cluster, r, "qwen3-omni", ns) is None,
            60,
        )  # type: ignore[misc]


def test_the_seed_example_does_not_fit_one_t4_and_starts_nothing_until_it_does(
    cluster: Cluster, op: Operator, ns: str
) -> None:
    """Qwen3-Omni-30B-A3B-Instruct on one T4 (16 GB): Stalled before any pod, with both
    numbers and what would fit; on one H200 (the same spec, another accelerator type) it
    becomes Ready on the kwok H200 nodes."""
    apply_yaml(cluster, ns, WEIGHTS.replace("NS", ns))
    apply_yaml(cluster, ns, SEED)
    obj = wait_for(
        "Stalled DoesNotFit",
        lambda: (
            (o := get(cluster, "modelserver", "qwen3-omni", ns))
            and condition(o, "Stalled").get("reason") == "DoesNotFit"
            and o
        ),
        60,
    )
    message = condition(obj, "Stalled")["message"]
    assert message.startswith(
        "qwen3-omni-30b-a3b-instruct does not fit: it needs at least 65.0 GiB per replica "
    )
    assert "but 1 x T4 has 15.0 GiB; use resources.gpu.count: 5 (T4)" in message
    assert (obj["status"]["phase"], obj["status"]["reason"]) == ("Failed", message)
    for kind in ("deployments", "services", "pods", "horizontalpodautoscalers"):
        assert items(cluster, kind, ns, "") == [], kind
    warning = wait_for(
        "DoesNotFit Event",
        lambda: [e for e in items(cluster, "events", ns, "") if e["reason"] == "DoesNotFit"],
        30,
    )
    assert [(e["type"], e["message"], e.get("count", 1)) for e in warning] == [
        ("Warning", message, 1)
    ]
    table = cluster.kubectl("get", "modelservers", "-n", ns, "-o", "wide").stdout.splitlines()
    assert "REASON" in table[0].split()
    assert table[1].startswith("qwen3-omni ") and " Failed " in table[1]
    assert "qwen3-omni-30b-a3b-instruct does not fit: it needs at least 65.0 GiB" in table[1]

    # The preset, on H200s: it fills the context and the startup budget the article
    # leaves out (its gpu.count: 1 stays, and one H200 holds the model).
    patch_spec(cluster, "qwen3-omni", ns, {
        "model": {"preset": "qwen3-omni-30b-a3b-instruct"},
        "resources": {"gpu": {"acceleratorTypes": ["nvidia-h200"]}},
    })  # fmt: skip
    server = wait_for("Ready on H200", lambda: is_ready(cluster, "qwen3-omni", ns), 90)
    assert server["status"]["effective"] == {
        "preset": "qwen3-omni-30b-a3b-instruct",
        "gpuCount": 1,
        "maxModelLen": 65_536,
        "startupBudgetSeconds": 2400,
    }
    pods = items(cluster, "pods", ns, "app.kubernetes.io/instance=qwen3-omni")
    assert len(pods) == 2 and {p["spec"]["nodeName"] for p in pods} <= H200_NODES
    assert [_runtime_env(p)["QMS_MAX_MODEL_LEN"] for p in pods] == ["65536", "65536"]
    assert {_runtime(p)["startupProbe"]["failureThreshold"] for p in pods} == {240}
    # Never written into the spec: the API server defaulted the rest, not these.
    assert "maxModelLen" not in server["spec"]["runtime"]["batching"]
    assert "budgetSeconds" not in server["spec"]["probes"]["startup"]

    # A value the spec sets wins over the preset's.
    patch_spec(cluster, "qwen3-omni", ns, {"runtime": {"batching": {"maxModelLen": 16384}}})
    wait_for(
        "maxModelLen 16384 rolled out",
        lambda: (
            (o := get(cluster, "modelserver", "qwen3-omni", ns))
            and o["status"].get("effective", {}).get("maxModelLen") == 16_384
            and is_ready(cluster, "qwen3-omni", ns)
            and {
                _runtime_env(p)["QMS_MAX_MODEL_LEN"]
                for p in items(cluster, "pods", ns, "app.kubernetes.io/instance=qwen3-omni")
                if not p["metadata"].get("deletionTimestamp")
            }
            == {"16384"}
        ),
        120,
    )
    # Its H200 GPUs free before the next test (kwok keeps a deleted pod for its grace
    # period, and a ReplicaSet not yet collected makes new ones): pods force-deleted until
    # no ReplicaSet and no pod is left, for the tests that need whole H200 nodes.
    cluster.kubectl("delete", "modelserver", "qwen3-omni", "-n", ns, "--wait=false")

    def gone() -> bool:
        cluster.kubectl("delete", "pods", "--all", "-n", ns, "--grace-period=0", "--force",
                        check=False)  # fmt: skip
        return not items(cluster, "replicasets", ns, "") and not items(cluster, "pods", ns, "")

    wait_for("the server's pods gone", gone, 60)


def _runtime(pod: dict[str, Any]) -> dict[str, Any]:
    [container] = [c for c in pod["spec"]["containers"] if c["name"] == "runtime"]
    return container


def _runtime_env(pod: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e.get("value", "") for e in _runtime(pod).get("env", [])}


def test_steady_state_sends_no_writes(cluster: Cluster, crd: None, tmp_path: Path) -> None:
    """Its own operator and namespace, so other tests' namespaces going away don't count."""
    ns = namespace_name("solo-steady")
    cluster.kubectl("create", "namespace", ns)
    apply_yaml(cluster, ns, WEIGHTS.replace("NS", ns))
    with operator(cluster, [ns], "--resync-seconds=5", log=tmp_path / "operator.log") as op:
        apply_yaml(cluster, ns, SEED_UNCHECKED)
        apply_yaml(cluster, ns, SMALL)
        wait_for("seed Ready", lambda: is_ready(cluster, "qwen3-omni", ns), 90)
        wait_for("small Ready", lambda: is_ready(cluster, "small", ns), 60)
        time.sleep(3)  # let the last status patch and its watch events settle
        before = op.writes()
        reconciles = op.reconciles()
        time.sleep(60)
        assert op.reconciles() - reconciles >= 2 * 60 / 5 * 0.8  # both resynced every 5 s
        assert op.writes() - before == 0
    cluster.kubectl("delete", "namespace", ns, "--wait=false")


def test_created_objects_are_written_once(cluster: Cluster, crd: None, tmp_path: Path) -> None:
    """One apply per child, one status patch per state change: no write storms.

    Its own operator: other tests' namespaces going away must not count.
    """
    ns = namespace_name("solo-once")
    cluster.kubectl("create", "namespace", ns)
    with operator(cluster, [ns], log=tmp_path / "operator.log") as op:
        seed(cluster, ns)
        time.sleep(6)
        assert {k: op.writes(k) for k in KINDS} == {k: 1 for k in KINDS}
        assert op.writes("Event") == 1  # one Event names every child created
    cluster.kubectl("delete", "namespace", ns, "--wait=false")


def server_manifest(name: str) -> str:
    return SMALL.replace("name: small", f"name: {name}")


def _converged(cluster: Cluster, ns: str, names: list[str]) -> bool:
    servers = items(cluster, "modelservers", ns)
    ready = {
        s["metadata"]["name"] for s in servers if condition(s, "Ready").get("status") == "True"
    }
    return ready == set(names)


def test_operator_killed_mid_burst_converges_after_restart(
    cluster: Cluster, crd: None, tmp_path: Path
) -> None:
    ns = namespace_name("solo-burst")
    cluster.kubectl("create", "namespace", ns)
    names = [f"s{i:03d}" for i in range(100)]
    log = tmp_path / "operator.log"
    first = Operator(cluster, [ns], log=log)
    first.wait_healthy()
    cluster.kubectl(
        "apply", "-n", ns, "-f", "-", input="---\n".join(server_manifest(n) for n in names)
    )
    time.sleep(2)
    first.process.kill()
    first.process.wait()
    with operator(cluster, [ns], log=log):
        wait_for("100 servers Ready", lambda: _converged(cluster, ns, names), 240, every=2)
    for kind, resource in KINDS.items():
        if kind in ("HorizontalPodAutoscaler", "Ingress"):
            continue
        found = items(cluster, resource, ns)
        assert sorted(o["metadata"]["name"] for o in found) == names, kind
        assert all(len(o["metadata"]["ownerReferences"]) == 1 for o in found)
    pods = items(cluster, "pods", ns)
    assert len(pods) == 100
    cluster.kubectl("delete", "namespace", ns, "--wait=false")


def test_operator_survives_an_api_server_pause(cluster: Cluster, crd: None, tmp_path: Path) -> None:
    import os
    import signal

    ns = namespace_name("solo-pause")
    cluster.kubectl("create", "namespace", ns)
    components = qms_cluster.status(cluster.kubeconfig.parent).components
    [apiserver] = [c for c in components if c.name == "kube-apiserver"]
    with operator(cluster, [ns], "--resync-seconds=5", log=tmp_path / "operator.log") as op:
        apply_yaml(cluster, ns, server_manifest("before"))
        wait_for("before Ready", lambda: is_ready(cluster, "before", ns), 60)
        # Freeze the API server for 15 s: requests and watches hang, then resume.
        os.kill(apiserver.pid, signal.SIGSTOP)
        try:
            time.sleep(15)
        finally:
            os.kill(apiserver.pid, signal.SIGCONT)
        apply_yaml(cluster, ns, server_manifest("after"))
        wait_for("after Ready", lambda: is_ready(cluster, "after", ns), 120)
        assert op.process.poll() is None
    cluster.kubectl("delete", "namespace", ns, "--wait=false")


def test_two_replicas_one_writer(cluster: Cluster, crd: None, tmp_path: Path) -> None:
    ns = namespace_name("solo-leader")
    cluster.kubectl("create", "namespace", ns)
    lease = ["--lease-namespace", ns]
    a = Operator(cluster, [ns], *lease, log=tmp_path / "a.log")
    wait_for("a holds the Lease", lambda: get(cluster, "lease", "qms-operator", ns), 30)
    b = Operator(cluster, [ns], *lease, log=tmp_path / "b.log")
    try:
        apply_yaml(cluster, ns, server_manifest("one"))
        wait_for("one Ready", lambda: is_ready(cluster, "one", ns), 60)
        assert a.writes() > 0
        wait_for("b serves metrics", lambda: b.process.poll() is None and _try(b.writes) == 0, 30)
        a.process.kill()
        a.process.wait()
        apply_yaml(cluster, ns, server_manifest("two"))
        wait_for("two Ready after failover", lambda: is_ready(cluster, "two", ns), 90)
        assert b.writes() > 0
    finally:
        a.stop()
        b.stop()
    cluster.kubectl("delete", "namespace", ns, "--wait=false")


def _try(fn: Any) -> Any:
    try:
        return fn()
    except OSError:
        return None


def test_gpu_aware_rollout_replaces_one_at_a_time(cluster: Cluster, op: Operator, ns: str) -> None:
    """Every H200 GPU taken: no surge pod fits, so the rollout replaces pods one by one.

    Without the fallback the surge pod would wait for a GPU forever. The fallback may last
    less than a poll here (kwok pods start at once), so the test checks what stays: the
    rollout finished, and the Events record the switch to replace-one and back.
    """
    full = SMALL.replace(
        "gpu: {count: 0}", "gpu: {count: 8, acceleratorTypes: [nvidia-h200]}"
    ).replace("spec:\n", "spec:\n  replicas: 2\n")
    apply_yaml(cluster, ns, full)
    wait_for("two full-node replicas Ready", lambda: is_ready(cluster, "small", ns), 60)
    # GPUs still held by pods of earlier tests may have stalled it for a while: only
    # what happens after the change counts.
    before = {e["metadata"]["name"] for e in items(cluster, "events", ns)}
    new_image = "ghcr.io/qms-io/qms-runtime:0.2.0"
    patch_spec(cluster, "small", ns, {"runtime": {"image": new_image}})
    wait_for("Ready on the new image", lambda: is_ready(cluster, "small", ns), 90)
    pods = items(cluster, "pods", ns, "app.kubernetes.io/instance=small")
    live = [p for p in pods if not p["metadata"].get("deletionTimestamp")]
    assert [p["spec"]["containers"][0]["image"] for p in live] == [new_image] * 2
    wait_for(
        "surge strategy restored",
        lambda: (
            get(cluster, "deployment", "small", ns)["spec"]["strategy"]["rollingUpdate"]  # type: ignore[index]
            == {"maxSurge": 1, "maxUnavailable": 0}
        ),
        15,
    )
    events = [e for e in items(cluster, "events", ns) if e["metadata"]["name"] not in before]
    updates = [e["message"] for e in events if e["reason"] == "Updated"]
    switched = [m for m in updates if ".spec.strategy.rollingUpdate.maxSurge" in m]
    assert len(switched) == 2, updates  # to replace-one, and back to surge
    ours = [e for e in events if e["involvedObject"]["kind"] == "QwenModelServer"]
    assert [e["reason"] for e in ours if e["type"] == "Warning"] == []  # never stalled
