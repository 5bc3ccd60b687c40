"""Tier 2: every child of every example validates strictly against the real Kubernetes
OpenAPI schemas (kubernetes-validate, pinned to the control plane's version)."""

from __future__ import annotations

from pathlib import Path

import kubernetes_validate
import pytest

from qms_operator.builders import desired_children
from qms_operator.spec import parse_spec
from qms_testdata import EXAMPLES, load_yaml

K8S_VERSION = "1.34.0"
# Not a Kubernetes API: validated for shape by test_builders instead.
NOT_IN_KUBERNETES = {"ServiceMonitor"}


def children(path: Path) -> list[dict[str, object]]:
    cr = load_yaml(path)
    return desired_children(cr["metadata"]["name"], "models", "uid-1", parse_spec(cr["spec"]))


CASES = [
    pytest.param(child, id=f"{path.stem}-{child['kind']}")
    for path in EXAMPLES
    for child in children(path)
    if child["kind"] not in NOT_IN_KUBERNETES
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


@pytest.mark.parametrize("child", CASES)
def test_child_validates_strictly(child: dict[str, object]) -> None:
    kubernetes_validate.validate(child, K8S_VERSION, strict=True)


def test_validation_can_fail() -> None:
    bad = children(EXAMPLES[0])[1]
    bad["spec"] = {**bad["spec"], "replicaCount": 2}  # type: ignore[dict-item]
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, K8S_VERSION, strict=True)
