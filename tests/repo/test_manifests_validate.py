"""Tier 2: every child of every example validates strictly against the real Kubernetes
OpenAPI schemas (kubernetes-validate, pinned to the control plane's version)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from qms_cluster import crds
from qms_operator.builders import desired_children
from qms_operator.spec import parse_spec
from qms_testkit.examples import EXAMPLES, load_yaml, strict_schema

K8S_VERSION = "1.34.0"
# Not a Kubernetes API: validated for shape by test_builders instead.
NOT_IN_KUBERNETES = {"ServiceMonitor", "HTTPRoute", "InferencePool"}
# Kinds of the CRDs the local control plane installs (qms_cluster.crds): validated
# against those CRDs' own schemas (their CEL rules by the API server, in e2e).
FROM_CRDS = {"HTTPRoute", "InferencePool"}


def children(path: Path) -> list[dict[str, object]]:
    cr = load_yaml(path)
    return desired_children(cr["metadata"]["name"], "models", "uid-1", parse_spec(cr["spec"]))


CASES = [
    pytest.param(child, id=f"{path.stem}-{child['kind']}")
    for path in EXAMPLES
    for child in children(path)
    if child["kind"] not in NOT_IN_KUBERNETES
]


CRD_CASES = [
    pytest.param(child, id=f"{path.stem}-{child['kind']}")
    for path in EXAMPLES
    for child in children(path)
    if child["kind"] in FROM_CRDS
]


def test_examples_cover_every_kind() -> None:
    kinds = {c.values[0]["kind"] for c in CASES}  # type: ignore[index]
    assert kinds == {
        "Service",
        "Deployment",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
        "NetworkPolicy",
        "Ingress",
    }
    assert sorted(c.values[0]["kind"] for c in CRD_CASES) == ["HTTPRoute", "InferencePool"]  # type: ignore[index]


def crd_schema(kind: str, version: str) -> dict[str, Any]:
    """The served version's openAPIV3Schema of a pinned third-party CRD."""
    missing = [s.module for s in crds.ALL if not crds.is_fetched(s)]
    if missing:
        pytest.skip(f"the pinned CRDs of {missing} are not fetched yet (qms-cluster build)")
    for path in crds.ensure_fetched():
        crd = yaml.safe_load(path.read_text())
        if crd["spec"]["names"]["kind"] == kind:
            (served,) = [v for v in crd["spec"]["versions"] if v["name"] == version]
            return strict_schema(served["schema"]["openAPIV3Schema"])
    raise AssertionError(f"no pinned CRD for {kind}")


@pytest.mark.parametrize("child", CRD_CASES)
def test_child_validates_against_its_crd(child: dict[str, Any]) -> None:
    schema = crd_schema(child["kind"], child["apiVersion"].rsplit("/", 1)[1])
    errors = [e.message for e in jsonschema.Draft7Validator(schema).iter_errors(child)]
    assert errors == []


def test_crd_validation_can_fail() -> None:
    [pool] = [c.values[0] for c in CRD_CASES if c.values[0]["kind"] == "InferencePool"]  # type: ignore[index]
    schema = crd_schema("InferencePool", "v1")
    bad = {**pool, "spec": {**pool["spec"], "targetPorts": [{"number": 8080, "name": "http"}]}}
    errors = [e.message for e in jsonschema.Draft7Validator(schema).iter_errors(bad)]
    assert errors == ["Additional properties are not allowed ('name' was unexpected)"]


@pytest.mark.parametrize("child", CASES)
def test_child_validates_strictly(child: dict[str, object]) -> None:
    kubernetes_validate.validate(child, K8S_VERSION, strict=True)


def test_validation_can_fail() -> None:
    bad = children(EXAMPLES[0])[1]
    bad["spec"] = {**bad["spec"], "replicaCount": 2}  # type: ignore[dict-item]
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, K8S_VERSION, strict=True)
