"""Operator benchmark on the local control plane (issue 4).

    python bench/operator_bench.py [--servers 200] [--big 1000] [--steady 60]

Creates N QwenModelServers at once and measures: time until every child exists,
time until every server is Ready, per-server latency (create -> children exist,
create -> Ready) p50/p99, operator API writes per server, writes during a steady
period, and the operator's peak RSS (also at --big servers). In the same run it
measures the floor: the same server-side applies of the same children issued by a
plain client loop, and prints operator-time / floor-time.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import statistics
import subprocess
import time
from pathlib import Path
from typing import Any

from kubernetes import client, config, watch
from kubernetes.dynamic import DynamicClient

import qms_cluster
from qms_operator.builders import desired_children
from qms_operator.builders.names import MANAGER
from qms_operator.spec import parse_spec
from qms_testkit.polling import wait_for
from qms_testkit.processes import Operator

ROOT = Path(__file__).resolve().parents[1]

GROUP, VERSION, PLURAL = "serving.qms.io", "v1alpha1", "modelservers"


def server(name: str, replicas: int) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "QwenModelServer",
        "metadata": {"name": name},
        "spec": {
            "model": {"name": "qwen3-small", "source": {"imagePath": "/models/qwen3"}},
            "replicas": replicas,
            "resources": {
                "requests": {"cpu": "100m", "memory": "128Mi"},
                "limits": {"cpu": "100m", "memory": "128Mi"},
                "gpu": {"count": 0},
            },
        },
    }


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def rss_peak_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def ns_create(kubectl: Any, name: str) -> None:
    kubectl("create", "namespace", name)


def create_all(
    api: client.CustomObjectsApi, ns: str, names: list[str], replicas: int
) -> dict[str, float]:
    created: dict[str, float] = {}

    def one(name: str) -> None:
        api.create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, server(name, replicas))
        created[name] = time.monotonic()

    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        list(pool.map(one, names))
    return created


def watch_progress(
    api: client.CustomObjectsApi, apps: client.AppsV1Api, ns: str, names: list[str], timeout: float
) -> tuple[dict[str, float], dict[str, float]]:
    """First time each server had its Deployment, and first time it was Ready.

    Watches (not polls), so measuring loads the API server as little as possible.
    """
    children: dict[str, float] = {}
    ready: dict[str, float] = {}
    want = set(names)

    def deployments() -> None:
        for event in watch.Watch().stream(
            apps.list_namespaced_deployment, ns, timeout_seconds=int(timeout)
        ):
            children.setdefault(event["object"].metadata.name, time.monotonic())
            if set(children) >= want:
                return

    def servers() -> None:
        for event in watch.Watch().stream(
            api.list_namespaced_custom_object,
            GROUP,
            VERSION,
            ns,
            PLURAL,
            timeout_seconds=int(timeout),
        ):
            obj = event["object"]
            conds = (obj.get("status") or {}).get("conditions", [])
            if any(c["type"] == "Ready" and c["status"] == "True" for c in conds):
                ready.setdefault(obj["metadata"]["name"], time.monotonic())
            if set(ready) >= want:
                return

    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        for done in [pool.submit(deployments), pool.submit(servers)]:
            done.result()
    return children, ready


def floor(dyn: DynamicClient, ns: str, names: list[str], replicas: int) -> tuple[float, int]:
    """The same children, server-side applied by a plain sequential loop."""
    started = time.monotonic()
    count = 0
    for name in names:
        spec = parse_spec(server(name, replicas)["spec"])
        for child in desired_children(name, ns, "00000000-0000-0000-0000-000000000000", spec):
            child["metadata"].pop("ownerReferences")
            resource = dyn.resources.get(api_version=child["apiVersion"], kind=child["kind"])
            dyn.server_side_apply(
                resource,
                body=child,
                name=name,
                namespace=ns,
                field_manager=MANAGER,
                force_conflicts=True,
            )
            count += 1
    return time.monotonic() - started, count


def run(n: int, big: int, steady: float, workers: int) -> None:
    cluster = qms_cluster.current() or qms_cluster.up(real_node=False)  # kwok nodes suffice
    cluster.kubectl(
        "apply", "--server-side", "-f", str(ROOT / "crds/modelservers.serving.qms.io.yaml")
    )
    cluster.kubectl("wait", "--for=condition=Established", "crd/modelservers.serving.qms.io")
    config.load_kube_config(str(cluster.kubeconfig))
    api, apps = client.CustomObjectsApi(), client.AppsV1Api()
    dyn = DynamicClient(client.ApiClient())
    stamp = time.strftime("%H%M%S")
    ns, floor_ns = f"bench-{stamp}", f"floor-{stamp}"
    for name in (ns, floor_ns):
        cluster.kubectl("create", "namespace", name)
    names = [f"s{i:04d}" for i in range(n)]
    log = Path(f"/tmp/qms-operator-bench-{stamp}.log")
    # The floor runs before and after the operator phase (the machine is shared and
    # noisy): the ratio uses their mean.
    floor_before, floor_count = floor(dyn, f"{floor_ns}", names, replicas=1)
    op = Operator(cluster, [ns], "--resync-seconds=30", f"--workers={workers}", log=log)
    op.wait_healthy()
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        progress = pool.submit(watch_progress, api, apps, ns, names, 600)
        time.sleep(1)  # let the watches start
        t0 = time.monotonic()
        created = create_all(api, ns, names, replicas=1)
        t_create = time.monotonic() - t0
        children, ready = progress.result()
    t_children = max(children.values()) - t0
    t_ready = max(ready.values()) - t0
    lat_children = [children[k] - created[k] for k in names]
    lat_ready = [ready[k] - created[k] for k in names]
    time.sleep(5)
    writes = op.writes()
    by_verb: dict[str, float] = {}
    for (metric, labels), value in op.metrics().items():
        if metric == "qms_operator_api_requests_total":
            lab = dict(labels)
            by_verb[f"{lab['verb']} {lab['kind']}".strip()] = value
    before = op.writes()
    time.sleep(steady)
    steady_writes = op.writes() - before
    rss = rss_peak_mb(op.proc.pid)
    cluster.kubectl("create", "namespace", f"{floor_ns}-2")
    floor_after, _ = floor(dyn, f"{floor_ns}-2", names, replicas=1)
    floor_time = (floor_before + floor_after) / 2

    big_rss = float("nan")
    if big:
        extra = [f"b{i:04d}" for i in range(big - n)]
        create_all(api, ns, extra, replicas=0)  # kwok nodes hold 660 pods in all
        wait_for(
            f"{big} servers reconciled",
            lambda: (
                len(
                    [
                        o
                        for o in api.list_namespaced_custom_object(GROUP, VERSION, ns, PLURAL)[
                            "items"
                        ]
                        if (o.get("status") or {}).get("observedGeneration")
                    ]
                )
                >= big
            ),
            900,
            every=2,
        )
        time.sleep(5)
        big_rss = rss_peak_mb(op.proc.pid)
    op.stop()
    result = {
        "servers": n,
        "time_to_create_the_servers_s": round(t_create, 2),
        "time_all_children_s": round(t_children, 2),
        "time_all_ready_s": round(t_ready, 2),
        "latency_children_p50_s": round(statistics.median(lat_children), 3),
        "latency_children_p99_s": round(pct(lat_children, 0.99), 3),
        "latency_ready_p50_s": round(statistics.median(lat_ready), 3),
        "latency_ready_p99_s": round(pct(lat_ready, 0.99), 3),
        "writes_per_server": round(writes / n, 2),
        "requests_by_verb_and_kind": by_verb,
        f"writes_in_{int(steady)}s_steady": steady_writes,
        "operator_peak_rss_mb": round(rss, 1),
        "floor_applies": floor_count,
        "floor_time_before_s": round(floor_before, 2),
        "floor_time_after_s": round(floor_after, 2),
        "ratio_operator_children_time_over_floor": round(t_children / floor_time, 2),
        f"operator_peak_rss_mb_at_{big}": round(big_rss, 1),
    }
    print(json.dumps(result, indent=2))
    for name in (ns, floor_ns, f"{floor_ns}-2"):
        subprocess.run(
            [
                str(cluster.bin_dir / "kubectl"),
                "--kubeconfig",
                str(cluster.kubeconfig),
                "delete",
                "namespace",
                name,
                "--wait=false",
            ],
            check=False,
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--servers", type=int, default=200)
    parser.add_argument("--big", type=int, default=1000, help="0 to skip the RSS-at-scale run")
    parser.add_argument("--steady", type=float, default=60)
    parser.add_argument("--workers", type=int, default=16, help="the operator's --workers")
    args = parser.parse_args()
    run(args.servers, args.big, args.steady, args.workers)
