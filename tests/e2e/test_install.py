"""Install (issue 6) on the real control plane: `kubectl apply -k deploy/`, then the
operator running under the ServiceAccount token it creates, not the admin token."""

from __future__ import annotations

from pathlib import Path

import yaml
from cluster_helpers import condition, namespace_name
from operator_helpers import ROOT, apply_yaml, get, is_ready, operator, wait_for

from qms_cluster import Cluster, crds
from qms_operator.builders import desired_children
from qms_operator.spec import parse_spec

# Stand-ins for what the examples expect of a real cluster.
PREREQUISITES = """
apiVersion: scheduling.k8s.io/v1
kind: PriorityClass
metadata: {name: high-priority}
value: 100000
---
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: servicemonitors.monitoring.coreos.com}
spec:
  group: monitoring.coreos.com
  scope: Namespaced
  names: {kind: ServiceMonitor, plural: servicemonitors, singular: servicemonitor,
          listKind: ServiceMonitorList}
  versions:
    - name: v1
      served: true
      storage: true
      schema:
        openAPIV3Schema: {type: object, x-kubernetes-preserve-unknown-fields: true}
"""


def sa_kubeconfig(cluster: Cluster, path: Path) -> Path:
    token = cluster.kubectl(
        "create", "token", "qms-operator", "-n", "qms-system", "--duration=1h"
    ).stdout.strip()
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "local",
                "cluster": {"server": cluster.server, "insecure-skip-tls-verify": True},
            }
        ],
        "users": [{"name": "qms-operator", "user": {"token": token}}],
        "contexts": [{"name": "sa", "context": {"cluster": "local", "user": "qms-operator"}}],
        "current-context": "sa",
    }
    path.write_text(yaml.safe_dump(config))
    return path


def test_install_runs_the_operator_with_least_privilege(cluster: Cluster, tmp_path: Path) -> None:
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-k", str(ROOT / "deploy"))
    cluster.kubectl("wait", "--for=condition=Established", "crd/modelservers.serving.qms.io")
    wait_for("ServiceAccount", lambda: get(cluster, "serviceaccount", "qms-operator", "qms-system"))
    cluster.kubectl("apply", "--server-side", "-f", "-", input=PREREQUISITES)
    cluster.kubectl(
        "wait", "--for=condition=Established", "crd/servicemonitors.monitoring.coreos.com"
    )
    crds.install(cluster)  # Gateway API and InferencePool, for the routed example
    sa = sa_kubeconfig(cluster, tmp_path / "sa.kubeconfig")

    def as_operator(*args: str) -> tuple[int, str]:
        res = cluster.kubectl("--kubeconfig", str(sa), *args, check=False)
        return res.returncode, res.stderr

    code, err = as_operator("get", "secrets", "-n", "kube-system")
    assert code != 0 and "Forbidden" in err and 'cannot list resource "secrets"' in err
    code, err = as_operator("get", "nodes")
    assert code != 0 and "Forbidden" in err
    code, err = as_operator("delete", "namespace", "default", "--dry-run=server")
    assert code != 0 and "Forbidden" in err
    can = cluster.kubectl(
        "auth",
        "can-i",
        "patch",
        "modelservers.serving.qms.io",
        "-A",
        "--as=system:serviceaccount:qms-system:qms-operator",
        check=False,
    )
    assert can.stdout.strip() == "no"  # it never writes the user's spec

    ns = namespace_name("install")
    cluster.kubectl("create", "namespace", ns)
    weights = (ROOT / "deploy/demo/weights.yaml").read_text()
    apply_yaml(cluster, ns, weights.replace("qms-demo", ns).replace("qms-demo-weights", f"{ns}-w"))
    cluster.kubectl(
        "create", "secret", "generic", "qwen-api-key", "-n", ns, "--from-literal=api-key=sk-test"
    )
    examples = sorted((ROOT / "deploy/examples").glob("*.yaml"))
    names = [yaml.safe_load(p.read_text())["metadata"]["name"] for p in examples]
    with operator(
        cluster, [], "--lease-namespace=qms-system", log=tmp_path / "op.log", kubeconfig=sa
    ) as op:
        for path in examples:
            cluster.kubectl("apply", "-n", ns, "-f", str(path))
        for name in names:
            if name == "qwen3-omni":  # seed-faithful.yaml: the article's one T4 cannot hold it
                wait_for("seed example refused", lambda: _stalled(cluster, ns), 120)
                continue
            wait_for(f"{name} Ready", lambda n=name: is_ready(cluster, n, ns), 120)  # type: ignore[misc]
        assert op.writes() > 0
        assert "Forbidden" not in (tmp_path / "op.log").read_text()
    assert get(cluster, "servicemonitor.monitoring.coreos.com", "qwen3-omni-scaled", ns)
    routed = get(cluster, "modelserver", "qwen3-omni-routed", ns)
    assert routed is not None
    built = {
        c["kind"]: c
        for c in desired_children(
            "qwen3-omni-routed", ns, routed["metadata"]["uid"], parse_spec(routed["spec"])
        )
    }
    for kind, resource in (
        ("HTTPRoute", "httproute.gateway.networking.k8s.io"),
        ("InferencePool", "inferencepool.inference.networking.k8s.io"),
    ):
        live = get(cluster, resource, "qwen3-omni-routed", ns)
        assert live is not None and live["spec"] == built[kind]["spec"], kind
    lease = get(cluster, "lease", "qms-operator", "qms-system")
    assert lease is not None and lease["spec"]["holderIdentity"]
    cluster.kubectl("delete", "namespace", ns, "--wait=false")


def _stalled(cluster: Cluster, ns: str) -> bool:
    obj = get(cluster, "modelserver", "qwen3-omni", ns)
    stalled = condition(obj, "Stalled") if obj else {}
    return stalled.get("reason") == "DoesNotFit" and stalled.get("status") == "True"
