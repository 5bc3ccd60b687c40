"""The Deployment's rollout and the GPU-aware rollout policy: pure functions.

``rollout`` reads how far the rollout of the current pod template is from the
watched Deployment (status uses it); ``replace_one_at_a_time`` is the policy the
reconciler applies before building the children: roll pods one at a time when no
GPU is free for a surge pod.
"""

from __future__ import annotations

from typing import Any

from .builders.names import SPEC_HASH_ANNOTATION
from .spec import QwenModelServerSpec


def dig(obj: Any, *path: str, default: Any = None) -> Any:
    """The value at ``path`` in a watched object (nested dicts), or ``default``."""
    for key in path:
        if not isinstance(obj, dict) or key not in obj:
            return default
        obj = obj[key]
    return obj


def _gpu_short(pod: dict[str, Any], resource: str) -> bool:
    return any(
        cond.get("reason") == "Unschedulable"
        and f"Insufficient {resource}" in cond.get("message", "")
        for cond in dig(pod, "status", "conditions", default=[])
    )


def replace_one_at_a_time(
    spec: QwenModelServerSpec, deployment: dict[str, Any] | None, pods: list[dict[str, Any]]
) -> bool:
    """GPU-aware rollout: replace pods one at a time when no GPU is free for a surge pod.

    Chosen while a rollout is under way, old pods serve, and a pod of the new template
    cannot be scheduled for lack of GPUs; kept until that rollout completes.
    """
    if spec.resources.gpu.count == 0 or deployment is None:
        return False
    if rollout(deployment)[0]:
        return False
    strategy = dig(deployment, "spec", "strategy", "rollingUpdate", default={})
    if strategy.get("maxSurge") == 0:
        return True
    serving = dig(deployment, "status", "readyReplicas", default=0) > 0
    template_hash = dig(
        deployment, "spec", "template", "metadata", "annotations", SPEC_HASH_ANNOTATION
    )
    new = [
        p for p in pods if dig(p, "metadata", "annotations", SPEC_HASH_ANNOTATION) == template_hash
    ]
    return serving and any(_gpu_short(p, spec.resources.gpu.resource_name) for p in new)


def rollout(
    deployment: dict[str, Any] | None, least: int = 0
) -> tuple[bool, str, tuple[str, str] | None]:
    """(complete, progress message, blocking problem) of a Deployment's rollout.

    ``least``: replicas required whatever the Deployment says (the HPA's minimum,
    which the HPA applies a few seconds after the Deployment is created).
    """
    if deployment is None:
        return False, "Deployment not created yet", None
    status = deployment.get("status") or {}
    for cond in status.get("conditions", []):
        if cond.get("type") == "Progressing" and cond.get("reason") == "ProgressDeadlineExceeded":
            return False, "rollout stuck", ("ProgressDeadlineExceeded", cond.get("message", ""))
        if cond.get("type") == "ReplicaFailure" and cond.get("status") == "True":
            return False, "rollout stuck", ("ReplicaFailure", cond.get("message", ""))
    if status.get("observedGeneration", 0) < dig(deployment, "metadata", "generation", default=0):
        return False, "Deployment change not yet seen by its controller", None
    want = max(dig(deployment, "spec", "replicas", default=1), least)
    updated = status.get("updatedReplicas", 0)
    total = status.get("replicas", 0)
    available = status.get("availableReplicas", 0)
    if updated < want:
        return False, f"rollout: {updated}/{want} pods on the current spec", None
    if total > updated:
        return False, f"rollout: {total - updated} old pods still running", None
    if available < want:
        return False, f"rollout: {available}/{want} pods available", None
    return True, f"{available}/{want} replicas ready", None
