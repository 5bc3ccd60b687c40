"""Pure builders: spec -> the desired child objects. No I/O, no clock, no randomness."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from ..spec import QwenModelServerSpec
from .gateway import http_route, inference_pool
from .monitoring import service_monitor
from .names import child_labels, owner_reference, selector_labels, service_url
from .network import ingress, network_policy, service
from .workload import deployment, horizontal_pod_autoscaler, pod_disruption_budget

Builder = Callable[[str, str, str, QwenModelServerSpec], dict[str, Any]]
# What the server's status reads of a child kind (status.py): "exists" (Ready needs it to
# exist as desired), "rollout" (the workload: Ready also needs its rollout done and its
# pods healthy), "condition" (its own condition, MonitoringReady; never holds Ready back).
StatusRole = Literal["exists", "rollout", "condition"]


def plural(kind: str) -> str:
    """The resource name of a kind, by the rule the built-in kinds and the CRDs the
    operator builds children of all follow (Ingress -> ingresses, NetworkPolicy ->
    networkpolicies)."""
    lower = kind.lower()
    if lower.endswith("y"):
        return f"{lower[:-1]}ies"
    if lower.endswith("s"):
        return f"{lower}es"
    return f"{lower}s"


@dataclass(frozen=True)
class ChildKind:
    """A kind of child the operator makes: what builds it, when the spec wants it, and
    whether the cluster may lack it (an add-on's CRD: the server is Ready without it),
    and what the status reads of it (`status`). Every child kind is watched (handlers.py)
    and primed in the cache (runner.py)."""

    api_version: str
    kind: str
    build: Builder
    wanted: Callable[[QwenModelServerSpec], bool]
    optional: bool = False
    status: StatusRole = "exists"

    @property
    def resource(self) -> tuple[str, str, str]:
        """(group, version, plural), as kopf's handlers name it."""
        group, _, version = self.api_version.rpartition("/")
        return group, version, plural(self.kind)


# The one table of child kinds, in apply order: builders, reconcile, handlers and the
# runner all read it.
CHILD_KINDS: list[ChildKind] = [
    ChildKind("v1", "Service", service, lambda s: True),
    ChildKind("apps/v1", "Deployment", deployment, lambda s: True, status="rollout"),
    ChildKind(
        "autoscaling/v2",
        "HorizontalPodAutoscaler",
        horizontal_pod_autoscaler,
        lambda s: s.autoscaling.enabled,
    ),
    ChildKind(
        "policy/v1",
        "PodDisruptionBudget",
        pod_disruption_budget,
        lambda s: s.pod_disruption_budget.enabled,
    ),
    ChildKind(
        "networking.k8s.io/v1", "NetworkPolicy", network_policy, lambda s: s.network_policy.enabled
    ),
    ChildKind("networking.k8s.io/v1", "Ingress", ingress, lambda s: s.ingress.enabled),
    ChildKind(
        "inference.networking.k8s.io/v1",
        "InferencePool",
        inference_pool,
        lambda s: s.inference_pool.enabled,
    ),
    ChildKind("gateway.networking.k8s.io/v1", "HTTPRoute", http_route, lambda s: s.gateway.enabled),
    ChildKind(
        "monitoring.coreos.com/v1",
        "ServiceMonitor",
        service_monitor,
        lambda s: s.monitoring.service_monitor,
        optional=True,  # the Prometheus Operator's CRD
        status="condition",
    ),
]
OPTIONAL_KINDS = frozenset(child.kind for child in CHILD_KINDS if child.optional)
# The one kind whose rollout and pods the status follows (the Deployment).
(WORKLOAD_KIND,) = [child.kind for child in CHILD_KINDS if child.status == "rollout"]
# The kinds with a condition of their own (the ServiceMonitor: MonitoringReady).
OWN_CONDITION_KINDS = frozenset(child.kind for child in CHILD_KINDS if child.status == "condition")


def desired_children(
    server: str, namespace: str, uid: str, spec: QwenModelServerSpec, replace_one: bool = False
) -> list[dict[str, Any]]:
    """Every child the spec asks for, in apply order.

    ``replace_one``: roll the Deployment out one pod at a time, without a surge pod
    (chosen by the reconciler when no GPU is free for one).
    """
    children = [
        child.build(server, namespace, uid, spec) for child in CHILD_KINDS if child.wanted(spec)
    ]
    if replace_one:
        children = [
            deployment(server, namespace, uid, spec, replace_one=True)
            if c["kind"] == WORKLOAD_KIND
            else c
            for c in children
        ]
    return children


def unwanted_kinds(spec: QwenModelServerSpec) -> list[tuple[str, str]]:
    """(apiVersion, kind) of children this spec does not want (to delete if present)."""
    return [(child.api_version, child.kind) for child in CHILD_KINDS if not child.wanted(spec)]


__all__ = [
    "CHILD_KINDS",
    "OPTIONAL_KINDS",
    "OWN_CONDITION_KINDS",
    "WORKLOAD_KIND",
    "ChildKind",
    "StatusRole",
    "child_labels",
    "desired_children",
    "owner_reference",
    "plural",
    "selector_labels",
    "service_url",
    "unwanted_kinds",
]
