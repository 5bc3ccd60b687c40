"""Deployment, HorizontalPodAutoscaler and PodDisruptionBudget."""

from __future__ import annotations

from typing import Any

from ..spec import QwenModelServerSpec
from .names import metadata, quantity, selector_labels
from .pod import pod_template

SURGE = {"maxSurge": 1, "maxUnavailable": 0}
REPLACE_ONE = {"maxSurge": 0, "maxUnavailable": 1}


def deployment(
    server: str, namespace: str, uid: str, spec: QwenModelServerSpec, replace_one: bool = False
) -> dict[str, Any]:
    """The runtime Deployment. Under autoscaling ``replicas`` is left out: the HPA owns it.

    Rollouts surge one pod at a time and never drop below the serving capacity;
    ``replace_one`` (no GPU free for a surge pod) replaces pods one at a time instead.
    """
    body: dict[str, Any] = {
        "selector": {"matchLabels": selector_labels(server)},
        "template": pod_template(server, spec),
        "strategy": {
            "type": "RollingUpdate",
            "rollingUpdate": dict(REPLACE_ONE if replace_one else SURGE),
        },
        "revisionHistoryLimit": 3,
        # A rollout may take as long as a model load, plus scheduling time.
        "progressDeadlineSeconds": spec.probes.startup.budget_seconds + 600,
    }
    if not spec.autoscaling.enabled:
        body = {"replicas": spec.replicas, **body}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": metadata(server, namespace, uid),
        "spec": body,
    }


def horizontal_pod_autoscaler(
    server: str, namespace: str, uid: str, spec: QwenModelServerSpec
) -> dict[str, Any]:
    """autoscaling/v2 HPA on CPU utilisation and the Pods metric requests_per_second."""
    scaling = spec.autoscaling
    metrics: list[dict[str, Any]] = []
    if scaling.target_cpu_utilization > 0:
        metrics.append(
            {
                "type": "Resource",
                "resource": {
                    "name": "cpu",
                    "target": {
                        "type": "Utilization",
                        "averageUtilization": scaling.target_cpu_utilization,
                    },
                },
            }
        )
    rps = quantity(scaling.target_requests_per_second)
    if rps not in ("0", "0.0"):
        metrics.append(
            {
                "type": "Pods",
                "pods": {
                    "metric": {"name": "requests_per_second"},
                    "target": {"type": "AverageValue", "averageValue": rps},
                },
            }
        )
    body: dict[str, Any] = {
        "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": server},
        "minReplicas": scaling.min_replicas,
        "maxReplicas": scaling.max_replicas,
        "metrics": metrics,
    }
    if scaling.behavior:
        body["behavior"] = dict(scaling.behavior)
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": metadata(server, namespace, uid),
        "spec": body,
    }


def pod_disruption_budget(
    server: str, namespace: str, uid: str, spec: QwenModelServerSpec
) -> dict[str, Any]:
    """policy/v1 PDB: voluntary disruptions (node drains) take at most maxUnavailable pods."""
    max_unavailable = spec.pod_disruption_budget.max_unavailable
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": metadata(server, namespace, uid),
        "spec": {
            "maxUnavailable": max_unavailable,
            "selector": {"matchLabels": selector_labels(server)},
        },
    }
