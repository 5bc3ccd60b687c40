"""Real pods (issue 11): the images built here, run by a kubelet on a real node.

A cluster of its own for this module, with the real node (`qms-node`: kubelet +
kube-proxy + containerd + CNI bridge) beside the kwok nodes. The operator runs
in it as a pod (`kubectl apply -k deploy/overlays/local`), and a QwenModelServer
(deploy/demo/real-node.yaml: a tiny Qwen3 on a hostPath claim) serves through
its Service's ClusterIP from real containers. Traffic stays on this machine:
the host talks to ClusterIPs and pod IPs of namespaces this run created.

The images are built before pytest by scripts/test.sh (`qms-cluster images`);
the fixture loads them into the node's containerd (cached: a no-op when the
same image is already there).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from openai import OpenAI
from operator_helpers import ROOT, wait_for
from real_node_helpers import (
    EndpointWatch,
    KeepAliveLoad,
    LoadClient,
    condition,
    exec_in,
    host_snapshot,
    kube_json,
    leftovers,
    pods,
    ready_pods,
)

import qms_cluster
from qms_cluster import Cluster, images, node
from qms_cluster.cluster import node_layout, restart_component

NS = "qms-real"
SERVER = "tiny-qwen"
SELECTOR = f"app.kubernetes.io/instance={SERVER}"


@pytest.fixture(scope="module")
def real() -> Iterator[tuple[Cluster, dict[str, set[str]]]]:
    ok, reason = node.available()
    if not ok:
        if os.environ.get("CI"):
            pytest.fail(f"CI machines must run the real node: {reason}")
        pytest.skip(f"no real node here: {reason}")
    before = host_snapshot()
    state_dir = Path(tempfile.mkdtemp(prefix="qms-real-"))
    c = qms_cluster.up(state_dir, real_node=True)
    try:
        refs = images.build_all()  # cached layers: seconds when test.sh built them
        for ref in refs.values():
            images.load(ref, node_layout(c))
        yield c, before
    finally:
        if (state_dir / "state.json").exists():  # also when a component died (a fault)
            qms_cluster.down(state_dir)


@pytest.fixture(scope="module")
def cluster_with_operator(real: tuple[Cluster, dict[str, set[str]]]) -> Cluster:
    """The operator installed from deploy/overlays/local, running on the real node."""
    c, _ = real
    c.kubectl("apply", "--server-side", "-k", str(ROOT / "deploy/overlays/local"))
    wait_for(
        "the operator Deployment to be available",
        lambda: (
            c.kubectl(
                "get",
                "deployment",
                "qms-operator",
                "-n",
                "qms-system",
                "-o",
                "jsonpath={.status.availableReplicas}",
                check=False,
            ).stdout
            == "2"
        ),
        timeout=180,
        every=1,
    )
    return c


@pytest.fixture(scope="module")
def serving(cluster_with_operator: Cluster) -> tuple[Cluster, str]:
    """deploy/demo/real-node.yaml applied and Ready; returns (cluster, base URL)."""
    c = cluster_with_operator
    lay = node_layout(c)
    weights = lay.volumes / "weights"
    subprocess.run(
        ["qms-runtime", "tiny-model", str(weights / "tiny-qwen3"), "--arch", "qwen3"],
        check=True,
        capture_output=True,
    )
    subprocess.run(["chmod", "-R", "a+rX", str(weights)], check=True)
    manifest = (ROOT / "deploy/demo/real-node.yaml").read_text()
    c.kubectl("create", "namespace", NS)
    c.kubectl("apply", "-f", "-", input=manifest.replace("QMS_NODE_VOLUMES", str(lay.volumes)))
    wait_for(
        f"{SERVER} to be Ready",
        lambda: (
            (condition(kube_json(c, "get", "qms", SERVER, "-n", NS), "Ready") or {}).get("status")
            == "True"
        ),
        timeout=300,
        every=1,
    )
    ip = c.kubectl("get", "service", SERVER, "-n", NS, "-o", "jsonpath={.spec.clusterIP}").stdout
    return c, f"http://{ip}:8080"


def test_real_node_runs_beside_the_kwok_nodes(real: tuple[Cluster, dict[str, set[str]]]) -> None:
    c, _ = real
    nodes = {n["metadata"]["name"]: n for n in kube_json(c, "get", "nodes")["items"]}
    assert set(nodes) == {*qms_cluster.node_names(), node.NAME}
    real_node = nodes[node.NAME]
    info = real_node["status"]["nodeInfo"]
    assert info["containerRuntimeVersion"].startswith("containerd://1.")
    assert info["kubeletVersion"] == qms_cluster.K8S_VERSION
    assert info["kubeProxyVersion"] in ("", qms_cluster.K8S_VERSION)
    assert {k: real_node["metadata"]["labels"][k] for k in node.LABELS} == node.LABELS
    assert real_node["spec"]["taints"] == [
        {"key": node.TAINT_KEY, "value": "true", "effect": "NoSchedule"}
    ]
    assert {"type": "InternalIP", "address": node.HOST_IP} in real_node["status"]["addresses"]
    assert condition(real_node, "Ready")["status"] == "True"
    assert "nvidia.com/gpu" not in real_node["status"]["capacity"]  # a CPU node
    # The kwok nodes are still played by kwok.
    assert all(
        nodes[n]["metadata"]["annotations"]["kwok.x-k8s.io/node"] == "fake"
        for n in qms_cluster.node_names()
    )


def test_operator_runs_in_the_cluster_under_its_service_account(
    cluster_with_operator: Cluster,
) -> None:
    c = cluster_with_operator
    ops = pods(c, "qms-system", "app.kubernetes.io/name=qms-operator")
    assert len(ops) == 2
    for p in ops:
        assert p["spec"]["nodeName"] == node.NAME
        assert p["spec"]["serviceAccountName"] == "qms-operator"
        (status,) = p["status"]["containerStatuses"]
        assert status["containerID"].startswith("containerd://")
        assert status["image"] == "localhost/qms-operator:dev"
        assert status["ready"] is True
    # One holds the Lease; its metrics answer on the pod IP.
    holder = c.kubectl(
        "get",
        "lease",
        "qms-operator",
        "-n",
        "qms-system",
        "-o",
        "jsonpath={.spec.holderIdentity}",
    ).stdout
    # The identity is "<pod name>-<pid>" (pid 1 in the container).
    assert holder in {f"{p['metadata']['name']}-1" for p in ops}
    leader = next(p for p in ops if f"{p['metadata']['name']}-1" == holder)
    metrics = httpx.get(f"http://{leader['status']['podIP']}:9090/metrics", timeout=10).text
    assert "qms_operator_" in metrics
    uid = exec_in(
        c, "qms-system", leader["metadata"]["name"], "python3 -c 'import os; print(os.getuid())'"
    )
    assert (uid.returncode, uid.stdout.strip()) == (0, "65532")


def test_modelserver_serves_from_a_real_pod(serving: tuple[Cluster, str]) -> None:
    c, base = serving
    server = kube_json(c, "get", "qms", SERVER, "-n", NS)
    running = ready_pods(c, NS, SELECTOR)
    assert len(running) == 2
    ready_at = max(condition(p, "Ready")["lastTransitionTime"] for p in running)
    # Ready only once the pods' readiness probes (/ready: loaded, warmed up) passed.
    assert condition(server, "Ready")["lastTransitionTime"] >= ready_at
    assert server["status"]["readyReplicas"] == 2
    for p in running:  # a figure for the notes, not a pass/fail criterion
        created = datetime.fromisoformat(p["metadata"]["creationTimestamp"])
        ready = datetime.fromisoformat(condition(p, "Ready")["lastTransitionTime"])
        print(f"\n{p['metadata']['name']}: created to Ready in {(ready - created).seconds}s")
    pod = running[0]
    (status,) = pod["status"]["containerStatuses"]
    assert status["containerID"].startswith("containerd://")
    assert pod["spec"]["nodeName"] == node.NAME
    name = pod["metadata"]["name"]
    # As the operator builds it: non-root, read-only root, no capabilities.
    uid = exec_in(c, NS, name, "python3 -c 'import os; print(os.getuid())'")
    assert (uid.returncode, uid.stdout.strip()) == (0, "65532")
    touch = exec_in(c, NS, name, "touch /x")
    assert touch.returncode != 0 and "Read-only file system" in touch.stderr
    caps = exec_in(c, NS, name, "python3 -c \"print(open('/proc/self/status').read())\"")
    assert "CapEff:\t0000000000000000" in caps.stdout
    # The official client, through the Service's ClusterIP (kube-proxy).
    client = OpenAI(base_url=f"{base}/v1", api_key="unused", max_retries=0)
    assert [m.id for m in client.models.list().data] == ["tiny-qwen3"]
    answer = client.chat.completions.create(
        model="tiny-qwen3",
        messages=[{"role": "user", "content": "Hello from a pod?"}],
        max_tokens=8,
        temperature=0,
    )
    assert answer.choices[0].finish_reason in ("stop", "length")
    assert answer.usage is not None and answer.usage.completion_tokens > 0
    # JSON logs, with the checksum check before the load.
    logs = [json.loads(line) for line in c.kubectl("logs", "-n", NS, name).stdout.splitlines()]
    messages = [entry["message"] for entry in logs]
    assert any(m.startswith("verifying checksums in /models/tiny-qwen3") for m in messages)
    assert any(m.startswith("ready: serving tiny-qwen3") for m in messages)


# kube-proxy applies an EndpointSlice change within its minSyncPeriod (1 s) plus a rule
# write: what a test waits after the slice before counting on the route.
KUBE_PROXY_SYNC_SECONDS = 3.0


def _endpoints_ready(c: Cluster) -> bool:
    """Every pod of the server ready in the namespace's EndpointSlices (what kube-proxy
    routes by)."""
    names = {p["metadata"]["name"] for p in pods(c, NS, SELECTOR)}
    slices = kube_json(c, "get", "endpointslices", "-n", NS)["items"]
    ready = {
        (e.get("targetRef") or {}).get("name")
        for s in slices
        for e in s.get("endpoints") or []
        if (e.get("conditions") or {}).get("ready")
    }
    return bool(names) and names <= ready


def _generation_ready(c: Cluster) -> dict[str, Any] | None:
    server = kube_json(c, "get", "qms", SERVER, "-n", NS)
    ready = condition(server, "Ready") or {}
    gen = server["metadata"]["generation"]
    if (
        ready.get("status") == "True"
        and server["status"].get("observedGeneration") == gen
        and ready.get("observedGeneration") == gen
        and server["status"].get("updatedReplicas") == 2
        and len(ready_pods(c, NS, SELECTOR)) == 2
    ):
        return dict(server)
    return None


def _follow_drain(c: Cluster, pod: str) -> subprocess.Popen[str]:
    """`kubectl logs -f` of a pod about to go: its last lines say how long it drained."""
    return subprocess.Popen(
        [
            str(c.bin_dir / "kubectl"),
            "--kubeconfig",
            str(c.kubeconfig),
            "logs",
            "-f",
            "-n",
            NS,
            pod,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _drained_seconds(follow: subprocess.Popen[str]) -> float:
    out, _ = follow.communicate(timeout=120)
    said = re.findall(r"drained (\d+) requests in (\d+\.\d)s after SIGTERM", out)
    assert said, out[-2000:]
    return float(said[-1][1])


def _set_batch_size(c: Cluster, size: int) -> None:
    """A spec change that rolls the Deployment."""
    body = {"spec": {"runtime": {"batching": {"maxBatchSize": size}}}}
    c.kubectl("patch", "qms", SERVER, "-n", NS, "--type=merge", "-p", json.dumps(body))


def _rolled_past(c: Cluster, before: set[str]) -> dict[str, Any] | None:
    """The server Ready on the new generation, with none of the pods in ``before``."""
    names = {p["metadata"]["name"] for p in ready_pods(c, NS, SELECTOR)}
    return _generation_ready(c) if names and not names & before else None


def test_rollout_and_disruptions_under_load_lose_nothing(serving: tuple[Cluster, str]) -> None:
    """A rollout, a pod deleted and a pod evicted, under three kinds of clients: a new
    connection per request; the openai client with its default pool (connections kept
    alive, pinned to their pod by kube-proxy) and no retries; openai streams. Nobody
    loses a request; the clients that keep connections alive are not even refused."""
    c, base = serving
    seen_reconciling = []
    drains: list[float] = []
    with (
        LoadClient(base, "tiny-qwen3", threads=2) as load,
        KeepAliveLoad(base, "tiny-qwen3", threads=2, streams=1) as kept,
    ):
        wait_for(
            "the first answers",
            lambda: load.counts.succeeded >= 5 and kept.succeeded >= 5,
            timeout=60,
        )
        # 1. A spec change rolls the Deployment.
        before = {p["metadata"]["name"] for p in pods(c, NS, SELECTOR)}
        _set_batch_size(c, 4)

        def rolled() -> dict[str, Any] | None:
            server = kube_json(c, "get", "qms", SERVER, "-n", NS)
            if (condition(server, "Reconciling") or {}).get("status") == "True":
                seen_reconciling.append(server["metadata"]["generation"])
            return _rolled_past(c, before)

        wait_for("the rollout to finish on the new generation", rolled, timeout=300, every=0.5)
        # 2. A pod deleted by hand.
        victim = ready_pods(c, NS, SELECTOR)[0]["metadata"]["name"]
        follow = _follow_drain(c, victim)
        c.kubectl("delete", "pod", victim, "-n", NS, "--wait=false")
        wait_for(
            "a replacement for the deleted pod",
            lambda: (
                victim not in {p["metadata"]["name"] for p in pods(c, NS, SELECTOR)}
                and _generation_ready(c)
            ),
            timeout=300,
            every=0.5,
        )
        drains.append(_drained_seconds(follow))
        # 3. An eviction (what `kubectl drain` sends), under the PodDisruptionBudget.
        victim = ready_pods(c, NS, SELECTOR)[0]["metadata"]["name"]
        follow = _follow_drain(c, victim)
        eviction = {
            "apiVersion": "policy/v1",
            "kind": "Eviction",
            "metadata": {"name": victim, "namespace": NS},
        }
        c.kubectl(
            "create",
            "--raw",
            f"/api/v1/namespaces/{NS}/pods/{victim}/eviction",
            "-f",
            "-",
            input=json.dumps(eviction),
        )
        wait_for(
            "a replacement for the evicted pod",
            lambda: (
                victim not in {p["metadata"]["name"] for p in pods(c, NS, SELECTOR)}
                and _generation_ready(c)
            ),
            timeout=300,
            every=0.5,
        )
        drains.append(_drained_seconds(follow))
        time.sleep(2)  # a few more requests on the settled server
    counts = load.counts
    print(
        f"\nrollout under load, new connection per request: {counts.line()} "
        f"refusals={dict(counts.refusals)}"
    )
    print(f"rollout under load, keep-alive: {kept.line()}")
    print(f"SIGTERM to exit (drain), deleted and evicted pod: {drains} s")
    assert counts.failed == 0, counts.failures[:10]
    assert counts.succeeded > 20
    assert counts.sent == counts.succeeded + counts.refused
    for kind, k in kept.counts.items():
        assert (k.failed, k.refused) == (0, 0), (kind, k.failures[:5], dict(k.refusals))
        assert k.succeeded > 5, kind
    # Within the grace period the operator sets: drainTimeoutSeconds (20) + preStop + 10.
    assert all(d < 20 for d in drains), drains
    assert seen_reconciling, "status never said Reconciling during the rollout"


def _server_events(c: Cluster, reason: str) -> list[str]:
    return [
        e["message"]
        for e in kube_json(c, "get", "events", "-n", NS)["items"]
        if e["reason"] == reason
        and e["involvedObject"].get("kind") == "QwenModelServer"
        and e["involvedObject"]["name"] == SERVER
    ]


def _runtime_pid(c: Cluster, pod: dict[str, Any]) -> int:
    container_id = pod["status"]["containerStatuses"][0]["containerID"].split("://")[1]
    for line in node.ctr(node_layout(c), "tasks", "ls").splitlines()[1:]:
        task, pid, _ = line.split()
        if task == container_id:
            return int(pid)
    raise AssertionError(f"no task {container_id} in the node's containerd")


def _restarted_and_ready(c: Cluster, name: str) -> bool:
    [pod] = [p for p in pods(c, NS, SELECTOR) if p["metadata"]["name"] == name]
    [cs] = pod["status"]["containerStatuses"]
    return bool(cs["restartCount"] == 1 and cs.get("ready")) and bool(_generation_ready(c))


def test_faults_under_keep_alive_load(serving: tuple[Cluster, str]) -> None:
    """The fault tier (issue 27): each fault under the openai client's keep-alive pool
    (no retries) and a stream, the counts printed per fault. The control plane frozen,
    the kubelet restarted, a rollout whose operator pods are force-deleted: nothing
    failed, nothing refused. One runtime container SIGKILLed from the host: only what
    was in flight on it fails (at most one request per client thread), and the server
    is Ready again, with one Event naming the kill."""
    c, base = serving
    threads, streams = 3, 1
    counts: dict[str, dict[str, tuple[int, int, int, int]]] = {}
    watch = EndpointWatch(c, NS)
    with KeepAliveLoad(base, "tiny-qwen3", threads=threads, streams=streams) as load:
        wait_for("the first answers", lambda: load.succeeded >= 5, timeout=60)

        def phase(name: str, fault: Callable[[], None]) -> None:
            before = load.snapshot()
            fault()
            time.sleep(2)  # requests after the fault, on the settled server
            counts[name] = load.since(before)
            print(f"\nfault {name!r}: {counts[name]}", flush=True)

        def freeze_apiserver() -> None:
            [api] = [
                p for p in qms_cluster.status(c.state_dir).components if p.name == "kube-apiserver"
            ]
            os.kill(api.pid, signal.SIGSTOP)
            try:
                time.sleep(10)
            finally:
                os.kill(api.pid, signal.SIGCONT)

        def restart_kubelet() -> None:
            restarted_at = datetime.now(UTC).replace(microsecond=0)
            restart_component(c.state_dir, "kubelet")

            def reprobed() -> bool:
                # A restarted kubelet marks the running pods not Ready until their next
                # readiness probe (seen: both pods out of the endpoints for ~2 s, new
                # connections refused meanwhile): wait for that round to end.
                ready = [condition(p, "Ready") or {} for p in pods(c, NS, SELECTOR)]
                return all(
                    r.get("status") == "True"
                    and datetime.fromisoformat(r["lastTransitionTime"]) >= restarted_at
                    for r in ready
                ) and bool(_generation_ready(c))

            deadline = time.monotonic() + 60
            while not reprobed() and time.monotonic() < deadline:
                time.sleep(0.5)
            wait_for(
                "the node and the server Ready again",
                lambda: _generation_ready(c),
                timeout=120,
                every=0.5,
            )
            # Ready pods are not yet routed: the EndpointSlice follows, then kube-proxy
            # (seen in a clean-clone run: a new stream connection refused 1 s into the
            # next fault, the Service still without ready endpoints in kube-proxy).
            wait_for("every pod ready in the EndpointSlice", lambda: _endpoints_ready(c), 60)
            time.sleep(KUBE_PROXY_SYNC_SECONDS)

        def rollout_without_operator() -> None:
            before = {p["metadata"]["name"] for p in pods(c, NS, SELECTOR)}
            _set_batch_size(c, 6)
            time.sleep(1)
            c.kubectl(
                "delete",
                "pods",
                "-n",
                "qms-system",
                "-l",
                "app.kubernetes.io/name=qms-operator",
                "--force",
                "--grace-period=0",
            )

            wait_for(
                "the rollout to converge with new operator pods",
                lambda: _rolled_past(c, before),
                timeout=300,
                every=0.5,
            )

        def kill_runtime() -> None:
            victim = ready_pods(c, NS, SELECTOR)[0]
            os.kill(_runtime_pid(c, victim), signal.SIGKILL)
            name = victim["metadata"]["name"]
            wait_for(
                f"{name} restarted and the server Ready",
                lambda: _restarted_and_ready(c, name),
                timeout=180,
                every=0.5,
            )
            said = (
                f"pod {name}: container runtime restarted (restart 1) because it was "
                "killed (SIGKILL, exit 137)"
            )

            def restarted_event() -> list[str]:
                return [m for m in _server_events(c, "Restarted") if m.startswith(said)]

            try:
                wait_for("the Restarted Event", restarted_event, timeout=30)
            except AssertionError:
                print("Restarted Events of the server:", _server_events(c, "Restarted"))
                print(
                    c.kubectl(
                        "logs",
                        "-n",
                        "qms-system",
                        "-l",
                        "app.kubernetes.io/name=qms-operator",
                        "--tail=30",
                        check=False,
                    ).stdout
                )
                raise
            [event] = restarted_event()
            print(f"Event Restarted: {event}")
            server = kube_json(c, "get", "qms", SERVER, "-n", NS)
            assert (condition(server, "Stalled") or {}).get("status") == "False"

        phase("kube-apiserver frozen 10 s", freeze_apiserver)
        phase("kubelet restarted", restart_kubelet)
        phase("rollout, operator pods force-deleted", rollout_without_operator)
        phase("runtime container SIGKILLed", kill_runtime)
    endpoints = watch.stop()
    print()
    for name, by_kind in counts.items():
        for kind, (sent, ok, refused, failed) in by_kind.items():
            print(f"fault {name!r}, {kind}: sent={sent} ok={ok} refused={refused} failed={failed}")
    if any(k.failed or k.refused for k in load.counts.values()):
        print("EndpointSlice changes:", *endpoints, sep="\n  ")
        for kind, k in load.counts.items():
            print(kind, "failures:", k.failures[:50], "refusals:", dict(k.refusals))
    for name, by_kind in counts.items():
        for kind, (sent, ok, refused, failed) in by_kind.items():
            assert sent == ok + refused + failed and ok > 0, (name, kind)
            if name == "runtime container SIGKILLed":
                assert failed <= (streams if kind == "stream" else threads), (name, kind)
            elif name == "kubelet restarted":
                # Nothing lost; a new connection may be refused while the restarted
                # kubelet re-probes readiness (kept-alive ones are untouched).
                assert failed == 0, (name, kind, load.counts[kind].failures[-5:])
            else:
                assert (refused, failed) == (0, 0), (name, kind, load.counts[kind].failures[-5:])
    assert [
        f
        for c_ in load.counts.values()
        for f in c_.failures
        if not f.startswith(("ReadError", "RemoteProtocolError"))
    ] == []


BAD = "tiny-bad"
BAD_SERVER = f"""
apiVersion: serving.qms.io/v1alpha1
kind: QwenModelServer
metadata: {{name: {BAD}, namespace: {NS}}}
spec:
  replicas: 1
  model:
    name: tiny-qwen3
    source: {{pvc: {{claimName: tiny-weights, subPath: {BAD}}}}}
  runtime: {{image: "localhost/qms-runtime:dev", imagePullPolicy: Never, dtype: float32}}
  resources:
    requests: {{cpu: 100m, memory: 1Gi}}
    limits: {{cpu: "1", memory: 4Gi}}
    gpu: {{count: 0}}
  scheduling:
    nodeSelector: {{qms.io/node: real}}
    tolerations: [{{key: qms.io/real-node, operator: Equal, value: "true", effect: NoSchedule}}]
  probes:
    startup: {{budgetSeconds: 300, periodSeconds: 2}}
"""


def test_a_checksum_failure_shows_its_file_in_status_an_event_and_argo(
    serving: tuple[Cluster, str],
) -> None:
    """Issue 20 on real pods: the runtime's last words (its termination message) reach
    `kubectl get modelservers`, one Warning Event and Argo CD's health check."""
    from repo.test_argo_health import health

    c, _ = serving
    weights = node_layout(c).volumes / "weights"
    shutil.copytree(weights / "tiny-qwen3", weights / BAD)
    blob = weights / BAD / "model.safetensors"
    data = bytearray(blob.read_bytes())
    data[-1] ^= 0xFF
    blob.write_bytes(bytes(data))
    subprocess.run(["chmod", "-R", "a+rX", str(weights / BAD)], check=True)
    c.kubectl("apply", "-f", "-", input=BAD_SERVER)
    words = "qms-runtime: checksum verification failed for model.safetensors: sha256 mismatch"
    # Right after the crash the pod "exited"; once the kubelet backs off it "keeps crashing".
    said = re.compile(
        rf"pod {BAD}-[a-z0-9]+-[a-z0-9]+ (exited|keeps crashing) \(exit 1 Error\): {words}: "
        r"expected [0-9a-f]{64}, got [0-9a-f]{64}"
    )

    def failing() -> dict[str, Any] | None:
        server = kube_json(c, "get", "qms", BAD, "-n", NS)
        return server if said.fullmatch((server.get("status") or {}).get("reason", "")) else None

    server = wait_for("the checksum failure in status.reason", failing, timeout=300, every=1)
    reason = server["status"]["reason"]
    stalled = condition(server, "Stalled") or {}
    assert (stalled.get("status"), stalled.get("reason"), stalled.get("message")) == (
        "True",
        "CrashLoop",
        reason,
    )
    assert health(server) == {"status": "Degraded", "message": reason}  # Argo CD's check

    def reason_column() -> str | None:
        table = c.kubectl("get", "modelservers", BAD, "-n", NS, "-o", "wide").stdout
        header, row = table.splitlines()
        cell = row[header.index("REASON") :].strip()
        return cell if said.fullmatch(cell) else None

    wait_for("the message in the REASON column", reason_column, timeout=60, every=1)

    def warnings() -> list[str]:
        return [
            e["message"]
            for e in kube_json(c, "get", "events", "-n", NS)["items"]
            if e["type"] == "Warning"
            and e["involvedObject"].get("kind") == "QwenModelServer"
            and e["involvedObject"]["name"] == BAD
        ]

    wait_for("the Warning Event", warnings, timeout=30)
    time.sleep(20)  # more crashes and reconciles: still one Warning for the same words
    [warning] = warnings()
    assert said.fullmatch(warning), warning
    c.kubectl("delete", "qms", BAD, "-n", NS, "--wait=true", "--timeout=120s")


def _uplink() -> str:
    out = subprocess.run(["ip", "route", "show", "default"], capture_output=True, text=True)
    return out.stdout.split(" dev ")[1].split()[0]


def _uplink_packets(uplink: str, cidrs: list[str]) -> dict[str, int]:
    listing = subprocess.run(
        ["iptables", "-w", "-L", "OUTPUT", "-n", "-v", "-x"], capture_output=True, text=True
    ).stdout
    return {
        line.split()[-1]: int(line.split()[0])
        for line in listing.splitlines()
        if f" {uplink} " in line and line.split()[-1] in cidrs
    }


def _connect_fails(address: str) -> str:
    try:
        socket.create_connection((address, 8080), timeout=5).close()
    except OSError as e:
        return type(e).__name__
    return ""


def test_no_packet_to_a_cluster_range_leaves_the_machine(serving: tuple[Cluster, str]) -> None:
    """Addresses no kube-proxy rule or pod answers for: a ClusterIP of no Service (what
    every ClusterIP is while kube-proxy has not synced it), a kwok pod's address, a
    free address of the node's pod subnet; then the real Service's ClusterIP with
    kube-proxy stopped and its rules gone. Each fails here; not one packet goes out
    through the uplink (an iptables rule without a target counts them)."""
    c, base = serving
    cluster_ip = base.split("//")[1].split(":")[0]
    uplink = _uplink()
    targets = {
        "10.96.255.254": node.SERVICE_CIDR,
        "10.244.1.1": node.KWOK_POD_CIDR,
        "10.245.0.254": node.POD_SUBNET,
    }
    for address in [*targets, cluster_ip]:
        route = subprocess.run(["ip", "route", "get", address], capture_output=True, text=True)
        said = (route.stdout + route.stderr).strip()
        assert f" dev {uplink} " not in said and " via " not in said, said
    cidrs = list(targets.values())
    counting = [["OUTPUT", "-o", uplink, "-d", cidr] for cidr in cidrs]
    for rule in counting:
        subprocess.run(["iptables", "-w", "-I", *rule], check=True)
    try:
        failures = {address: _connect_fails(address) for address in targets}
        assert all(failures.values()), failures
        # kube-proxy stopped, its rules removed (what a node sees while it restarts).
        [proxy] = [p for p in qms_cluster.status(c.state_dir).components if p.name == "kube-proxy"]
        os.kill(proxy.pid, signal.SIGKILL)
        subprocess.run(
            [str(qms_cluster.build.binary("kube-proxy")), "--cleanup"], capture_output=True
        )
        try:
            assert _connect_fails(cluster_ip), "the ClusterIP answered with kube-proxy gone"
        finally:
            restart_component(c.state_dir, "kube-proxy")
        assert _uplink_packets(uplink, cidrs) == {cidr: 0 for cidr in cidrs}

        def answers() -> bool:
            try:
                return httpx.get(f"{base}/ready", timeout=5).status_code == 200
            except httpx.TransportError:
                return False

        wait_for("the Service to answer through the restarted kube-proxy", answers, timeout=60)
    finally:
        for rule in counting:
            subprocess.run(["iptables", "-w", "-D", *rule], check=False)


def test_down_leaves_nothing_behind(real: tuple[Cluster, dict[str, set[str]]]) -> None:
    c, before = real
    qms_cluster.down(c.state_dir)
    assert node.CLAIM.exists() is False
    assert leftovers(before, host_snapshot()) == {}
    assert host_snapshot()["routes"] == before["routes"]  # none added, none taken away
