"""Issue 19: a real Prometheus scrapes the operator's /metrics, and QMSOperatorDown follows it.

The operator (`qms-operator run`, a subprocess against the local control plane) is
scraped every 500 ms by Debian's Prometheus 2.42 on loopback, as the PodMonitor
`qms-operator` would (job="qms-operator", the pod's namespace and name as labels),
with the project's rules loaded. One QwenModelServer is reconciled; then the
operator stops, and the alert's expression turns from empty to 1.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from operator_helpers import ROOT, apply_yaml, operator, wait_for

from qms_cluster import Cluster
from qms_testkit import prometheus_binaries, prometheus_rules
from qms_testkit.prometheus_server import PrometheusServer

POD = "qms-operator-7b9c6d5f4-klmno"
OPERATOR = 'job="qms-operator"'
SERVER = """
apiVersion: serving.qms.io/v1alpha1
kind: QwenModelServer
metadata: {name: scraped}
spec:
  model: {name: qwen3-small, source: {imagePath: /models/qwen3}}
  resources: {requests: {cpu: 100m, memory: 128Mi}, limits: {cpu: 100m, memory: 128Mi},
              gpu: {count: 0}}
"""


def _alert_expr(name: str) -> str:
    (expr,) = [r["expr"] for r in prometheus_rules.rules() if r.get("alert") == name]
    return str(expr)


def _pairs(samples: list[dict[str, Any]]) -> set[tuple[str, str]]:
    # An empty label (discovery has kind="") is no label in Prometheus.
    return {(s["metric"]["verb"], s["metric"].get("kind", "")) for s in samples}


def test_prometheus_scrapes_the_operator_and_operator_down_follows(
    cluster: Cluster, namespace: str, tmp_path: Path
) -> None:
    cluster.kubectl(
        "apply", "--server-side", "-f", str(ROOT / "crds/modelservers.serving.qms.io.yaml")
    )
    cluster.kubectl("wait", "--for=condition=Established", "crd/modelservers.serving.qms.io")
    down_expr = _alert_expr("QMSOperatorDown")
    log = tmp_path / "operator.log"
    with operator(cluster, [namespace], "--resync-seconds=2", log=log) as op:
        target = {
            "targets": [f"127.0.0.1:{op.metrics_port}"],
            "labels": {"namespace": "qms-system", "pod": POD},
        }
        prometheus = PrometheusServer(
            prometheus_binaries.ensure(), tmp_path / "prometheus", {"qms-operator": [target]}
        )
        try:
            prometheus.wait_ready()
            apply_yaml(cluster, namespace, SERVER)
            wait_for(
                "the server's reconcile scraped",
                lambda: prometheus.query(
                    f'qms_operator_reconciles_total{{{OPERATOR}, result="ok"}} > 0'
                ),
                60,
            )
            (up,) = prometheus.query(f"up{{{OPERATOR}}}")
            assert {k: up["metric"][k] for k in ("job", "namespace", "pod")} == {
                "job": "qms-operator",
                "namespace": "qms-system",
                "pod": POD,
            }
            # The gauge is set at each resync (every 2 s here).
            servers = prometheus.wait_for(
                f"qms_operator_modelservers{{{OPERATOR}}}",
                lambda r: bool(r) and r[0]["value"][1] == "1",
            )
            assert [s["value"][1] for s in servers] == ["1"]
            # The server's children were applied, and Prometheus has what the operator serves.
            api = prometheus.query(f"qms_operator_api_requests_total{{{OPERATOR}}}")
            assert {("apply", "Deployment"), ("apply", "Service")} <= _pairs(api)
            direct = {
                (dict(labels)["verb"], dict(labels)["kind"])
                for (name, labels) in op.metrics()
                if name == "qms_operator_api_requests_total"
            }
            assert _pairs(api) <= direct
            assert prometheus.query(down_expr) == []
            assert prometheus.rule_health()["QMSOperatorDown"] == "ok"

            op.stop()
            down = prometheus.wait_for(f"up{{{OPERATOR}}} == 0", lambda r: len(r) == 1)
            assert down, "Prometheus never saw the stopped operator as down"
            (absent,) = prometheus.query(down_expr, float(down[0]["value"][0]))
            assert absent["metric"] == {} and absent["value"][1] == "1"
        finally:
            prometheus.stop()
