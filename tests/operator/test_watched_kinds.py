"""Which kinds the operator watches: every kind it builds, and pods."""

from __future__ import annotations

from pathlib import Path

import kopf
from kind_helpers import PLURALS

from qms_operator.builders import (
    CHILD_KINDS,
    OPTIONAL_KINDS,
    OWN_CONDITION_KINDS,
    WORKLOAD_KIND,
    plural,
)
from qms_operator.handlers import CHILD_RESOURCES, register
from qms_operator.spec import KIND
from qms_operator.store import Store
from qms_operator.workqueue import WorkQueue

ROOT = Path(__file__).resolve().parents[2]


def test_every_built_kind_is_watched_and_pods_too() -> None:
    built = [child.resource for child in CHILD_KINDS]
    assert [*built, ("", "v1", "pods")] == CHILD_RESOURCES
    assert ("monitoring.coreos.com", "v1", "servicemonitors") in CHILD_RESOURCES
    assert ("apps", "v1", "deployments") in CHILD_RESOURCES
    assert ("", "v1", "services") in CHILD_RESOURCES


def test_plurals_are_the_ones_discovery_serves() -> None:
    assert {child.kind: plural(child.kind) for child in CHILD_KINDS} == {
        kind: name for kind, name in PLURALS.items() if kind != KIND
    }
    assert plural("NetworkPolicy") == "networkpolicies"
    assert plural("Ingress") == "ingresses"
    assert plural("ServiceMonitor") == "servicemonitors"


def test_only_add_on_kinds_are_optional() -> None:
    assert sorted(OPTIONAL_KINDS) == ["ServiceMonitor"]  # the Prometheus Operator CRD


async def _work(key: tuple[str, str]) -> bool:
    return True


def test_one_event_handler_per_watched_resource_and_the_servers() -> None:
    registry = kopf.OperatorRegistry()
    register(registry, Store(), WorkQueue(_work))
    handlers = registry._watching.get_all_handlers()
    assert sorted(h.id for h in handlers) == sorted(
        ["modelserver", *(f"child-{p}" for _, _, p in CHILD_RESOURCES)]
    )
    assert {(h.selector.group, h.selector.version, h.selector.any_name) for h in handlers} == {
        ("serving.qms.io", "v1alpha1", "modelservers"),
        *CHILD_RESOURCES,
    }


def test_the_table_says_what_status_reads_of_each_kind() -> None:
    """status.py names no kind: the table's roles decide which child's rollout makes Ready
    and which has its own condition."""
    roles = {child.kind: (child.status, child.optional) for child in CHILD_KINDS}
    assert roles == {
        "Service": ("exists", False),
        "Deployment": ("rollout", False),
        "HorizontalPodAutoscaler": ("exists", False),
        "PodDisruptionBudget": ("exists", False),
        "NetworkPolicy": ("exists", False),
        "Ingress": ("exists", False),
        "InferencePool": ("exists", False),
        "HTTPRoute": ("exists", False),
        "ServiceMonitor": ("condition", True),
    }
    assert ("Deployment", frozenset({"ServiceMonitor"})) == (WORKLOAD_KIND, OWN_CONDITION_KINDS)
    status_source = (ROOT / "operator" / "qms_operator" / "status.py").read_text()
    for kind in roles:
        assert f'"{kind}"' not in status_source, kind
