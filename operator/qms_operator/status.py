"""Status from observed children: a pure function, kstatus conditions with a reason.

Ready means: every wanted child exists as desired, and the Deployment's rollout of
the *current* pod template is complete (all replicas updated and available, no old
pod left). A rollout in progress is never Ready.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .builders import OWN_CONDITION_KINDS, WORKLOAD_KIND, service_url
from .builders.names import SPEC_HASH_ANNOTATION, selector_string
from .pods import pod_problem
from .rollout import dig as _get
from .rollout import rollout
from .spec import (
    ChildStatus,
    Condition,
    EffectiveSpec,
    Phase,
    QwenModelServerSpec,
    QwenModelServerStatus,
)


@dataclass(frozen=True)
class Observed:
    """What the operator saw of one server this round."""

    generation: int
    children: dict[str, dict[str, Any]]  # kind -> live object, for the kinds that exist
    pods: list[dict[str, Any]] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)  # kinds applied or deleted this round
    errors: list[str] = field(default_factory=list)  # API errors of this round
    previous: list[dict[str, Any]] = field(default_factory=list)  # previous conditions
    # Optional kinds wanted but not served by the cluster (their CRD is absent).
    unavailable: list[str] = field(default_factory=list)
    # Why restarted containers restarted, by "pod/container", where the pod's Events
    # were read (restart_cause); without it the cause comes from the status alone.
    restart_causes: Mapping[str, str] = field(default_factory=dict)


MONITORING = "MonitoringReady"


def not_served(desired: dict[str, Any]) -> str:
    """Why an optional child could not be created: its kind is not served."""
    return (
        f"{desired['kind']} not created: {desired['apiVersion']} is not served by this "
        "cluster (install the Prometheus Operator's CRDs, or set "
        "spec.monitoring.serviceMonitor: false)"
    )


def _condition(
    kind: str, true: bool, reason: str, message: str, gen: int, now: str, previous: list[Any]
) -> Condition:
    status = "True" if true else "False"
    since = now
    for old in previous:
        if old.get("type") == kind and old.get("status") == status:
            since = old.get("lastTransitionTime", now)
    return Condition(
        type=kind,
        status=status,
        reason=reason,
        message=message,
        last_transition_time=since,
        observed_generation=gen,
    )


def _child(
    desired: dict[str, Any],
    seen: Observed,
    deployment_done: bool,
    deployment_message: str,
) -> ChildStatus:
    kind, name, live = desired["kind"], desired["metadata"]["name"], seen.children
    if kind in seen.unavailable:
        return ChildStatus(kind=kind, name=name, ready=False, message=not_served(desired))
    if kind not in live:
        return ChildStatus(kind=kind, name=name, ready=False, message="missing")
    if kind == WORKLOAD_KIND and not deployment_done:
        return ChildStatus(kind=kind, name=name, ready=False, message=deployment_message)
    return ChildStatus(kind=kind, name=name, ready=True)


def _template_hash(desired: list[dict[str, Any]]) -> str:
    return str(
        next(
            c["spec"]["template"]["metadata"]["annotations"][SPEC_HASH_ANNOTATION]
            for c in desired
            if c["kind"] == WORKLOAD_KIND
        )
    )


def current_pods(desired: list[dict[str, Any]], pods: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The pods of the desired pod template that are not being deleted."""
    want = _template_hash(desired)
    return [
        p
        for p in pods
        if _get(p, "metadata", "annotations", SPEC_HASH_ANNOTATION) == want
        and not _get(p, "metadata", "deletionTimestamp")
    ]


def compute_status(
    server: str,
    namespace: str,
    spec: QwenModelServerSpec,
    desired: list[dict[str, Any]],
    seen: Observed,
    now: str,
) -> QwenModelServerStatus:
    """The status to write, from the desired children and what was observed."""
    deployment = seen.children.get(WORKLOAD_KIND)
    want_hash = _template_hash(desired)
    live_hash = _get(
        deployment, "spec", "template", "metadata", "annotations", SPEC_HASH_ANNOTATION
    )
    new_pods = current_pods(desired, seen.pods)
    least = spec.autoscaling.min_replicas if spec.autoscaling.enabled else 0
    done, progress, blocked = rollout(deployment, least)
    problem = pod_problem(new_pods, seen.restart_causes, now) or blocked
    strategy = _get(deployment, "spec", "strategy", "rollingUpdate", default={})
    replacing = strategy.get("maxSurge") == 0 and not done
    if replacing and problem and problem[0] == "Unschedulable":
        # Expected while old pods hold the GPUs: one goes, then the new one schedules.
        problem = None
    if replacing:
        progress = f"no free GPU for a surge pod: replacing pods one at a time; {progress}"
    if seen.errors:
        problem = ("ApplyFailed", seen.errors[0])
    # A wanted optional child whose kind is not served does not hold Ready back: the
    # server serves without it; the MonitoringReady condition and reason say so.
    missing = [
        c["kind"]
        for c in desired
        if c["kind"] not in seen.children and c["kind"] not in seen.unavailable
    ]
    if live_hash != want_hash:
        done, progress = False, "rolling out the new spec"
    deployment_done, deployment_message = done, progress
    if seen.changed:
        done, progress = False, f"applied {', '.join(seen.changed)}"
    elif missing:
        done, progress = False, f"creating {', '.join(missing)}"

    dep_status = (deployment or {}).get("status") or {}
    ready_replicas = dep_status.get("readyReplicas", 0)
    want_replicas = max(_get(deployment, "spec", "replicas", default=spec.replicas), least)
    ready = done and problem is None
    stalled = problem is not None
    phase: Phase = "Ready" if ready else "Progressing"
    if stalled:
        phase = "Degraded" if ready_replicas > 0 else "Failed"
    reason, message = ("Ready", progress) if ready else problem or ("Progressing", progress)

    gen, prev = seen.generation, seen.previous
    conditions = [
        _condition("Ready", ready, reason, message, gen, now, prev),
        _condition(
            "Reconciling",
            not ready and not stalled,
            "Progressing" if not ready and not stalled else reason,
            progress,
            gen,
            now,
            prev,
        ),
        _condition(
            "Stalled",
            stalled,
            reason if stalled else "NotStalled",
            message if stalled else "",
            gen,
            now,
            prev,
        ),
    ]
    unserved = [c for c in desired if c["kind"] in seen.unavailable]
    monitor = next((c for c in desired if c["kind"] in OWN_CONDITION_KINDS), None)
    if monitor is not None:
        conditions.append(_monitoring(monitor, seen, gen, now))
    children = [_child(c, seen, deployment_done, deployment_message) for c in desired]
    line = message if not ready else progress
    if unserved and not stalled:
        line = f"{line}; {not_served(unserved[0])}"
    return QwenModelServerStatus(
        observed_generation=gen,
        phase=phase,
        ready=f"{ready_replicas}/{want_replicas}",
        replicas=dep_status.get("replicas", 0),
        ready_replicas=ready_replicas,
        updated_replicas=dep_status.get("updatedReplicas", 0),
        selector=selector_string(server),
        url=service_url(server, namespace, spec.service.port),
        reason=line,
        conditions=conditions,
        children=children,
        effective=EffectiveSpec(
            preset=spec.model.preset or "",
            gpu_count=spec.resources.gpu.count,
            max_model_len=spec.runtime.batching.max_model_len,
            startup_budget_seconds=spec.probes.startup.budget_seconds,
        ),
    )


def _monitoring(monitor: dict[str, Any], seen: Observed, gen: int, now: str) -> Condition:
    """MonitoringReady: whether the wanted ServiceMonitor exists. Never holds Ready back."""
    kind = monitor["kind"]
    if kind in seen.children:
        return _condition(MONITORING, True, "ServiceMonitorCreated", "", gen, now, seen.previous)
    if kind in seen.unavailable:
        return _condition(
            MONITORING,
            False,
            "ServiceMonitorNotServed",
            not_served(monitor),
            gen,
            now,
            seen.previous,
        )
    return _condition(
        MONITORING, False, "Progressing", "creating the ServiceMonitor", gen, now, seen.previous
    )


def failed_status(
    previous: dict[str, Any], generation: int, reason: str, message: str, now: str
) -> dict[str, Any]:
    """The status of a server the operator cannot reconcile: Stalled, with a reason.

    For an invalid spec and for an unexpected error in a reconcile. The replica
    counts and the other fields of the previous status stay; transition times stay
    while a condition keeps its status, so the same failure again gives the same
    status (and no write).
    """
    conditions = previous.get("conditions", [])
    keep = [c for c in conditions if c.get("type") not in ("Ready", "Reconciling", "Stalled")]
    serving = (previous.get("readyReplicas") or 0) > 0
    return {
        **previous,
        "observedGeneration": generation,
        "phase": "Degraded" if serving else "Failed",
        "reason": message,
        "conditions": [
            _condition(
                kind, kind == "Stalled", reason, message, generation, now, conditions
            ).model_dump(by_alias=True, mode="json")
            for kind in ("Ready", "Reconciling", "Stalled")
        ]
        + keep,
    }
