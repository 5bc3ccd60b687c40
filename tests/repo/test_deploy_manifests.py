"""deploy/ renders with the reference kubectl and every object validates.

Core Kubernetes kinds are checked against the pinned schemas of the local control
plane's version (kubernetes-validate); QwenModelServers against the generated CRD.
Kinds of other projects have no schema here and are skipped with a stated reason.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CACHE = Path(os.environ.get("QMS_CACHE", Path.home() / ".cache/qms"))
K8S_VERSION = "1.34"
RENDERED = [
    "deploy",
    "deploy/overlays/namespaced",
    "deploy/overlays/local",
    "deploy/monitoring",
    "deploy/quota",
]
FILES = [
    "deploy/monitoring/keda",
    "deploy/signing",
    "deploy/argocd/argocd-cm-patch.yaml",
    "deploy/demo",
]
# Kinds from other projects: their CRDs are not installed here and kubernetes-validate
# has no schema for them. Their content is checked by the targeted tests below.
FOREIGN = {
    "monitoring.coreos.com/v1": "Prometheus Operator CRD (kube-prometheus-stack)",
    "keda.sh/v1alpha1": "KEDA CRD",
    "policy.sigstore.dev/v1beta1": "sigstore policy-controller CRD",
    "kyverno.io/v1": "Kyverno CRD",
}


def kubectl() -> str:
    if os.environ.get("QMS_KUBECTL"):
        return os.environ["QMS_KUBECTL"]
    found = sorted(CACHE.glob("k8s-v*/bin/kubectl"))
    if not found:
        pytest.skip(f"the local control plane's kubectl is not built yet ({CACHE}/k8s-v*/bin)")
    return str(found[-1])


def render(path: str) -> list[dict[str, Any]]:
    out = subprocess.run(
        [kubectl(), "kustomize", str(ROOT / path)], capture_output=True, text=True, check=True
    ).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def files(path: str) -> list[dict[str, Any]]:
    p = ROOT / path
    paths = sorted(p.glob("*.yaml")) if p.is_dir() else [p]
    return [d for f in paths for d in yaml.safe_load_all(f.read_text()) if d]


def by_kind(objs: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(o["kind"], o["metadata"]["name"]): o for o in objs}


def crd_schema() -> dict[str, Any]:
    crd = yaml.safe_load((ROOT / "crds/modelservers.serving.qms.io.yaml").read_text())
    (version,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1alpha1"]
    return version["schema"]["openAPIV3Schema"]  # type: ignore[no-any-return]


ALL = RENDERED + FILES + ["deploy/examples"]


@pytest.mark.parametrize("source", ALL)
def test_every_object_validates(source: str) -> None:
    objs = render(source) if source in RENDERED else files(source)
    assert objs, source
    skipped = []
    for obj in objs:
        api = obj["apiVersion"]
        if api in FOREIGN:
            skipped.append(f"{obj['kind']}: {FOREIGN[api]}")
        elif api == "serving.qms.io/v1alpha1":
            jsonschema.validate(obj.get("spec", {}), crd_schema()["properties"]["spec"])
        else:
            kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
    if skipped:
        print(f"{source}: not schema-validated: {sorted(set(skipped))}")


def kustomized(directory: Path) -> set[Path]:
    """Files a kustomization uses, following directories it includes."""
    k = yaml.safe_load((directory / "kustomization.yaml").read_text())
    used = {directory / "kustomization.yaml"}
    refs = list(k.get("resources", []))
    refs += [p["path"] for p in k.get("patches", []) if "path" in p]
    refs += [f for g in k.get("configMapGenerator", []) for f in g.get("files", [])]
    for ref in refs:
        p = (directory / ref).resolve()
        used |= kustomized(p) if p.is_dir() else {p}
    return used


def test_every_yaml_under_deploy_is_checked() -> None:
    """No manifest escapes validation: each file is rendered, listed, or test data."""
    covered = set().union(*(kustomized(ROOT / k) for k in RENDERED))
    for f in [*FILES, "deploy/examples"]:
        p = ROOT / f
        covered |= set(p.glob("*.yaml")) if p.is_dir() else {p}
    # Argo CD health cases: run by tests/repo/test_argo_health.py.
    covered |= set((ROOT / "deploy/argocd/serving.qms.io").rglob("*.yaml"))
    # Helm values, not a Kubernetes object: test_monitoring_rules_and_adapter.
    covered.add(ROOT / "deploy/monitoring/prometheus-adapter-values.yaml")
    assert sorted(set((ROOT / "deploy").rglob("*.yaml")) - covered) == []


def test_install_contents() -> None:
    objs = by_kind(render("deploy"))
    assert sorted(objs) == [
        ("ClusterRole", "qms-operator"),
        ("ClusterRole", "qms-operator-crd-reader"),
        ("ClusterRoleBinding", "qms-operator"),
        ("ClusterRoleBinding", "qms-operator-crd-reader"),
        ("CustomResourceDefinition", "modelservers.serving.qms.io"),
        ("Deployment", "qms-operator"),
        ("Namespace", "qms-system"),
        ("NetworkPolicy", "qms-operator"),
        ("PodDisruptionBudget", "qms-operator"),
        ("Role", "qms-operator-leader-election"),
        ("RoleBinding", "qms-operator-leader-election"),
        ("ServiceAccount", "qms-operator"),
    ]
    dep = objs[("Deployment", "qms-operator")]
    assert dep["metadata"]["namespace"] == "qms-system"
    assert dep["spec"]["replicas"] == 2
    pod = dep["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    assert c["args"] == ["run", "--all-namespaces", "--lease-namespace=$(POD_NAMESPACE)"]
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "healthz"}
    assert {p["name"]: p["containerPort"] for p in c["ports"]} == {"healthz": 8081, "metrics": 9090}
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert c["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert set(c["resources"]) == {"requests", "limits"}


def rules_of(obj: dict[str, Any]) -> set[tuple[str, str, str, str]]:
    """Flatten RBAC rules to (group, resource, resourceName, verb)."""
    return {
        (g, r, n, v)
        for rule in obj["rules"]
        for g in rule.get("apiGroups", [])
        for r in rule["resources"]
        for n in rule.get("resourceNames", ["*"])
        for v in rule["verbs"]
    }


def test_rbac_is_least_privilege() -> None:
    objs = render("deploy")
    roles = [o for o in objs if o["kind"] in {"ClusterRole", "Role"}]
    granted = set().union(*(rules_of(r) for r in roles))
    assert not [x for x in granted if "*" in (x[0], x[1], x[3])]
    assert not [x for x in granted if x[1] in {"secrets", "configmaps"}]
    assert not [x for x in granted if x[3] in {"escalate", "bind", "impersonate"}]
    # Pods, ReplicaSets, CRDs and namespaces are only read.
    for res in ("pods", "customresourcedefinitions", "namespaces"):
        assert {x[3] for x in granted if x[1] == res} == {"get", "list", "watch"}, res
    # The spec is never updated: the servers are only patched (kopf's annotations).
    assert {x[3] for x in granted if x[1] == "modelservers"} == {"get", "list", "watch"}
    leases = {x for x in granted if x[1] == "leases"}
    assert leases == {
        ("coordination.k8s.io", "leases", "qms-operator", v)
        for v in ("get", "watch", "update", "patch")
    } | {("coordination.k8s.io", "leases", "*", "create")}
    for binding in (o for o in objs if o["kind"].endswith("Binding")):
        assert binding["subjects"] == [
            {"kind": "ServiceAccount", "name": "qms-operator", "namespace": "qms-system"}
        ]


def test_namespaced_overlay_grants_the_same_rules_in_one_namespace() -> None:
    cluster = by_kind(render("deploy"))[("ClusterRole", "qms-operator")]
    objs = by_kind(render("deploy/overlays/namespaced"))
    role = objs[("Role", "qms-operator")]
    assert role["metadata"]["namespace"] == "qms-models"
    namespaces = {x for x in rules_of(cluster) if x[1] == "namespaces"}
    assert rules_of(role) == rules_of(cluster) - namespaces
    assert ("ClusterRole", "qms-operator") not in objs
    assert [k for k in objs if k[0] == "ClusterRoleBinding"] == [
        ("ClusterRoleBinding", "qms-operator-crd-reader")
    ]
    (c,) = objs[("Deployment", "qms-operator")]["spec"]["template"]["spec"]["containers"]
    assert c["args"] == ["run", "--namespace", "qms-models", "--lease-namespace=$(POD_NAMESPACE)"]


def test_monitoring_rules_and_adapter() -> None:
    objs = by_kind(render("deploy/monitoring"))
    rule = objs[("PrometheusRule", "qms")]
    alerts = {r["alert"]: r for g in rule["spec"]["groups"] for r in g["rules"] if "alert" in r}
    for name in ("QMSServerNotReady", "QMSHighErrorRate", "QMSQueueGrowing"):
        assert name in alerts
    assert "absent(" in alerts["QMSRuntimeTargetsAbsent"]["expr"]
    assert "absent(" in alerts["QMSOperatorDown"]["expr"]
    assert "vllm:num_requests_waiting" in alerts["QMSQueueGrowing"]["expr"]
    runtime = objs[("PodMonitor", "qms-runtime")]["spec"]
    assert runtime["selector"]["matchLabels"]["app.kubernetes.io/name"] == "qms-runtime"
    assert runtime["podMetricsEndpoints"][0]["port"] == "http"
    values = yaml.safe_load((ROOT / "deploy/monitoring/prometheus-adapter-values.yaml").read_text())
    (adapter,) = values["rules"]["custom"]
    assert adapter["name"] == {"matches": "^qms_requests_total$", "as": "requests_per_second"}
    assert "rate(<<.Series>>{<<.LabelMatchers>>}[1m])" in adapter["metricsQuery"]
    assert adapter["resources"]["overrides"]["pod"] == {"resource": "pod"}


def test_dashboard_covers_the_seed_metrics() -> None:
    cm = by_kind(render("deploy/monitoring"))[("ConfigMap", "qms-grafana-dashboard")]
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    dash = yaml.safe_load(cm["data"]["qms-dashboard.json"])
    exprs = " ".join(t["expr"] for p in dash["panels"] for t in p["targets"])
    for metric in (
        "qms_generation_tokens_total",
        "qms_time_to_first_token_seconds_bucket",
        "vllm:num_requests_waiting",
        "qms_batch_size_bucket",
        "DCGM_FI_DEV_GPU_UTIL",
    ):
        assert metric in exprs, metric
