"""Pure builders: spec -> the desired child objects. No I/O, no clock, no randomness."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..spec import QwenModelServerSpec
from .gateway import http_route, inference_pool
from .monitoring import service_monitor
from .names import child_labels, owner_reference, selector_labels, service_url
from .network import ingress, network_policy, service
from .workload import deployment, horizontal_pod_autoscaler, pod_disruption_budget

Builder = Callable[[str, str, str, QwenModelServerSpec], dict[str, Any]]

# Every kind the operator may create, in apply order, with when it is wanted.
CHILD_KINDS: list[tuple[str, str, Builder, Callable[[QwenModelServerSpec], bool]]] = [
    ("v1", "Service", service, lambda s: True),
    ("apps/v1", "Deployment", deployment, lambda s: True),
    (
        "autoscaling/v2",
        "HorizontalPodAutoscaler",
        horizontal_pod_autoscaler,
        lambda s: s.autoscaling.enabled,
    ),
    (
        "policy/v1",
        "PodDisruptionBudget",
        pod_disruption_budget,
        lambda s: s.pod_disruption_budget.enabled,
    ),
    ("networking.k8s.io/v1", "NetworkPolicy", network_policy, lambda s: s.network_policy.enabled),
    ("networking.k8s.io/v1", "Ingress", ingress, lambda s: s.ingress.enabled),
    (
        "inference.networking.k8s.io/v1",
        "InferencePool",
        inference_pool,
        lambda s: s.inference_pool.enabled,
    ),
    ("gateway.networking.k8s.io/v1", "HTTPRoute", http_route, lambda s: s.gateway.enabled),
    (
        "monitoring.coreos.com/v1",
        "ServiceMonitor",
        service_monitor,
        lambda s: s.monitoring.service_monitor,
    ),
]


def desired_children(
    server: str, namespace: str, uid: str, spec: QwenModelServerSpec, replace_one: bool = False
) -> list[dict[str, Any]]:
    """Every child the spec asks for, in apply order.

    ``replace_one``: roll the Deployment out one pod at a time, without a surge pod
    (chosen by the reconciler when no GPU is free for one).
    """
    children = [
        build(server, namespace, uid, spec) for _, _, build, wanted in CHILD_KINDS if wanted(spec)
    ]
    if replace_one:
        children = [
            deployment(server, namespace, uid, spec, replace_one=True)
            if c["kind"] == "Deployment"
            else c
            for c in children
        ]
    return children


def unwanted_kinds(spec: QwenModelServerSpec) -> list[tuple[str, str]]:
    """(apiVersion, kind) of children this spec does not want (to delete if present)."""
    return [(api, kind) for api, kind, _, wanted in CHILD_KINDS if not wanted(spec)]


__all__ = [
    "CHILD_KINDS",
    "child_labels",
    "desired_children",
    "owner_reference",
    "selector_labels",
    "service_url",
    "unwanted_kinds",
]
