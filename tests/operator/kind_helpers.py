"""The REST plural of every kind the operator handles, as the API server names it: what
the kind resolution and watch tests expect, written out rather than derived."""

from __future__ import annotations

from qms_operator.spec import KIND

PLURALS = {
    "Service": "services",
    "Deployment": "deployments",
    "HorizontalPodAutoscaler": "horizontalpodautoscalers",
    "PodDisruptionBudget": "poddisruptionbudgets",
    "NetworkPolicy": "networkpolicies",
    "Ingress": "ingresses",
    "ServiceMonitor": "servicemonitors",
    "InferencePool": "inferencepools",
    "HTTPRoute": "httproutes",
    KIND: "modelservers",
}
