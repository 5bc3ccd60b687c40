"""Issue 18: many servers reconciled at once while an optional kind is not served.

60 servers (variations of optional children, half of them with a ServiceMonitor) are
applied at once to a cluster without the ServiceMonitor CRD; the CRD is installed
while they are still being reconciled, and some servers are changed to want one.
No reconcile may die with a traceback (the test reads the operator's log), every
server reaches a status for its generation, and the ServiceMonitors appear on the
servers that want them, without restarting the operator.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import service_monitor_crd
from cluster_helpers import namespace_name
from operator_helpers import ROOT, condition, get, items, operator, patch_spec, wait_for

from qms_cluster import Cluster

COUNT = 60


def server(i: int) -> dict[str, Any]:
    """Server i: the optional children switched on and off in different combinations."""
    name = f"c{i:03d}"
    spec: dict[str, Any] = {
        "model": {"name": "qwen3-small", "source": {"imagePath": "/models/qwen3"}},
        "resources": {
            "requests": {"cpu": "100m", "memory": "128Mi"},
            "limits": {"cpu": "100m", "memory": "128Mi"},
            "gpu": {"count": 0},
        },
        "monitoring": {"serviceMonitor": i % 2 == 0},
        "podDisruptionBudget": {"enabled": i % 3 != 0},
        "networkPolicy": {"enabled": i % 5 != 0},
    }
    if i % 4 == 1:
        spec["ingress"] = {"enabled": True, "host": f"{name}.example.com"}
    if i % 6 == 2:
        spec["autoscaling"] = {
            "enabled": True,
            "minReplicas": 1,
            "maxReplicas": 2,
            "targetCPUUtilization": 80,
        }
    return {
        "apiVersion": "serving.qms.io/v1alpha1",
        "kind": "QwenModelServer",
        "metadata": {"name": name},
        "spec": spec,
    }


def settled(cluster: Cluster, ns: str) -> list[dict[str, Any]] | None:
    """Every server, once each has a status computed for its current generation."""
    servers = items(cluster, "modelservers", ns)
    done = [
        s
        for s in servers
        if (s.get("status") or {}).get("observedGeneration") == s["metadata"]["generation"]
        and condition(s, "Ready").get("observedGeneration") == s["metadata"]["generation"]
    ]
    return servers if len(servers) == COUNT and len(done) == COUNT else None


def test_many_servers_while_the_service_monitor_kind_is_missing_then_installed(
    cluster: Cluster, tmp_path: Path
) -> None:
    cluster.kubectl(
        "apply", "--server-side", "-f", str(ROOT / "crds/modelservers.serving.qms.io.yaml")
    )
    cluster.kubectl("wait", "--for=condition=Established", "crd/modelservers.serving.qms.io")
    service_monitor_crd.remove(cluster)
    ns = namespace_name("solo-concurrency")
    cluster.kubectl("create", "namespace", ns)
    log = tmp_path / "operator.log"
    bodies = [server(i) for i in range(COUNT)]
    try:
        with operator(cluster, [ns], "--resync-seconds=10", log=log):
            cluster.kubectl(
                "apply", "-n", ns, "-f", "-", input="\n---\n".join(json.dumps(b) for b in bodies)
            )
            wait_for(
                "a third of the servers reconciled",
                lambda: (
                    sum(
                        1
                        for s in items(cluster, "modelservers", ns)
                        if (s.get("status") or {}).get("observedGeneration")
                    )
                    >= COUNT // 3
                ),
                120,
                every=0.5,
            )
            service_monitor_crd.install(cluster)  # mid-run
            # A third of those without a ServiceMonitor now want one (a new generation).
            for i in range(1, COUNT, 6):
                bodies[i]["spec"]["monitoring"]["serviceMonitor"] = True
                patch_spec(cluster, f"c{i:03d}", ns, {"monitoring": {"serviceMonitor": True}})
            servers = wait_for(
                "every server's status for its generation",
                lambda: settled(cluster, ns),
                180,
                every=1,
            )
            text = log.read_text()
            assert "Traceback" not in text, text[text.index("Traceback") - 2000 :][:6000]
            # The operator's own errors (kopf retries its watches and logs those).
            assert "ERROR qms_operator" not in text
            wants = {
                b["metadata"]["name"] for b in bodies if b["spec"]["monitoring"]["serviceMonitor"]
            }
            assert len(wants) == COUNT // 2 + len(range(1, COUNT, 6))

            def monitors() -> set[str] | None:
                found = {
                    o["metadata"]["name"]
                    for o in items(cluster, "servicemonitors.monitoring.coreos.com", ns)
                }
                return found if found == wants else None

            wait_for("a ServiceMonitor on each server that wants one", monitors, 60, every=1)

            def all_ready() -> list[dict[str, Any]] | None:
                servers = settled(cluster, ns)
                if servers is None:
                    return None
                ok = [
                    s
                    for s in servers
                    if condition(s, "Ready").get("status") == "True"
                    and (
                        condition(s, "MonitoringReady").get("status") == "True"
                        if s["metadata"]["name"] in wants
                        else condition(s, "MonitoringReady") == {}
                    )
                ]
                return servers if len(ok) == COUNT else None

            servers = wait_for(
                "every server Ready, monitored where wanted", all_ready, 120, every=1
            )
            for s in servers:
                [monitor] = [
                    c for c in s["status"]["children"] if c["kind"] == "ServiceMonitor"
                ] or [None]
                assert (monitor is not None) == (s["metadata"]["name"] in wants)
            assert get(cluster, "servicemonitor.monitoring.coreos.com", "c001", ns) is not None
            text = log.read_text()
            assert "Traceback" not in text
            assert "ERROR qms_operator" not in text
    finally:
        cluster.kubectl("delete", "namespace", ns, "--wait=false", "--ignore-not-found")
        service_monitor_crd.remove(cluster)
