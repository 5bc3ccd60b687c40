"""The pure parts of reconciling: drift detection and status from observed children."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from qms_operator.builders import desired_children
from qms_operator.builders.names import SPEC_HASH_ANNOTATION
from qms_operator.diff import differences
from qms_operator.pods import pod_problem
from qms_operator.rollout import replace_one_at_a_time
from qms_operator.spec import parse_spec
from qms_operator.spec.quantity import parse_quantity
from qms_operator.status import Observed, compute_status

SPEC = parse_spec({"model": {"name": "m", "source": {"imagePath": "/models/m"}}, "replicas": 2})
DESIRED = desired_children("s", "ns", "uid-1", SPEC)
HASH = next(c for c in DESIRED if c["kind"] == "Deployment")["spec"]["template"]["metadata"][
    "annotations"
][SPEC_HASH_ANNOTATION]
NOW = "2026-11-29T12:00:00Z"


def live_children(**deployment_status: int) -> dict[str, dict[str, Any]]:
    children = {c["kind"]: copy.deepcopy(c) for c in DESIRED}
    dep = children["Deployment"]
    dep["metadata"]["generation"] = 2
    dep["status"] = {"observedGeneration": 2, **deployment_status}
    return children


def pod(hash_: str = HASH, **status: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": "s-abc", "annotations": {SPEC_HASH_ANNOTATION: hash_}},
        "status": status,
    }


def status_of(children: dict[str, Any], pods: list[dict[str, Any]] = (), **seen: Any) -> Any:  # type: ignore[assignment]
    observed = Observed(generation=7, children=children, pods=list(pods), **seen)
    return compute_status("s", "ns", SPEC, DESIRED, observed, NOW)


def conditions(status: Any) -> list[tuple[str, str, str]]:
    return [(c.type, c.status, c.reason) for c in status.conditions]


DONE = {"replicas": 2, "updatedReplicas": 2, "readyReplicas": 2, "availableReplicas": 2}


def test_ready_when_the_rollout_is_complete() -> None:
    status = status_of(live_children(**DONE))
    assert conditions(status) == [
        ("Ready", "True", "Ready"),
        ("Reconciling", "False", "Ready"),
        ("Stalled", "False", "NotStalled"),
    ]
    assert (status.phase, status.ready, status.observed_generation) == ("Ready", "2/2", 7)
    assert status.url == "http://s.ns.svc.cluster.local:8080/v1"
    assert all(c.ready for c in status.children)


def test_scale_subresource_fields_are_total_pods_and_the_selector_string() -> None:
    """status.replicas counts old and new pods (statusReplicasPath must be the total);
    status.selector is the pods' selector as a string (labelSelectorPath, for an HPA)."""
    rolling = {"replicas": 3, "updatedReplicas": 1, "readyReplicas": 2, "availableReplicas": 2}
    status = status_of(live_children(**rolling))
    assert (status.replicas, status.updated_replicas, status.ready_replicas) == (3, 1, 2)
    assert status.selector == "app.kubernetes.io/name=qms-runtime,app.kubernetes.io/instance=s"
    assert status.model_dump(by_alias=True)["selector"] == status.selector


@pytest.mark.parametrize(
    ("dep_status", "message"),
    [
        (
            {"replicas": 3, "updatedReplicas": 1, "readyReplicas": 2, "availableReplicas": 2},
            "rollout: 1/2 pods on the current spec",
        ),
        (
            {"replicas": 3, "updatedReplicas": 2, "readyReplicas": 3, "availableReplicas": 3},
            "rollout: 1 old pods still running",
        ),
        (
            {"replicas": 2, "updatedReplicas": 2, "readyReplicas": 1, "availableReplicas": 1},
            "rollout: 1/2 pods available",
        ),
    ],
)
def test_a_rollout_in_progress_is_not_ready(dep_status: dict[str, int], message: str) -> None:
    status = status_of(live_children(**dep_status))
    assert conditions(status)[:2] == [
        ("Ready", "False", "Progressing"),
        ("Reconciling", "True", "Progressing"),
    ]
    assert (status.phase, status.reason) == ("Progressing", message)


def test_stale_deployment_generation_is_not_ready() -> None:
    children = live_children(**DONE)
    children["Deployment"]["status"]["observedGeneration"] = 1
    assert status_of(children).reason == "Deployment change not yet seen by its controller"


def test_an_old_template_is_not_ready() -> None:
    children = live_children(**DONE)
    children["Deployment"]["spec"]["template"]["metadata"]["annotations"][SPEC_HASH_ANNOTATION] = (
        "old"
    )
    assert (status_of(children).phase, status_of(children).reason) == (
        "Progressing",
        "rolling out the new spec",
    )


def test_just_applied_is_not_ready() -> None:
    status = status_of(live_children(**DONE), changed=["Deployment"])
    assert (status.phase, status.reason) == ("Progressing", "applied Deployment")


def test_missing_child() -> None:
    children = live_children(**DONE)
    del children["NetworkPolicy"]
    status = status_of(children)
    assert (status.phase, status.reason) == ("Progressing", "creating NetworkPolicy")
    assert [c.kind for c in status.children if not c.ready] == ["NetworkPolicy"]


UNSCHEDULABLE = {
    "conditions": [
        {
            "type": "PodScheduled",
            "status": "False",
            "reason": "Unschedulable",
            "message": "0/6 nodes are available: 6 Insufficient nvidia.com/gpu.",
        }
    ]
}


def test_unschedulable_stalls_and_names_the_scheduler_message() -> None:
    status = status_of(live_children(replicas=1, updatedReplicas=1), [pod(**UNSCHEDULABLE)])
    assert conditions(status) == [
        ("Ready", "False", "Unschedulable"),
        ("Reconciling", "False", "Unschedulable"),
        ("Stalled", "True", "Unschedulable"),
    ]
    assert status.phase == "Failed"
    assert status.reason == (
        "pod s-abc cannot be scheduled: 0/6 nodes are available: 6 Insufficient nvidia.com/gpu."
    )


def test_stalled_with_old_pods_serving_is_degraded() -> None:
    children = live_children(replicas=3, updatedReplicas=1, readyReplicas=2, availableReplicas=2)
    assert status_of(children, [pod(**UNSCHEDULABLE)]).phase == "Degraded"


def test_pods_of_an_old_template_do_not_count() -> None:
    children = live_children(**DONE)
    assert status_of(children, [pod("old", **UNSCHEDULABLE)]).phase == "Ready"


@pytest.mark.parametrize(
    ("container", "reason", "fragment"),
    [
        (
            {
                "image": "x:1",
                "state": {"waiting": {"reason": "ImagePullBackOff", "message": "not found"}},
            },
            "ImagePullFailed",
            "cannot pull x:1: ImagePullBackOff not found",
        ),
        (
            {
                "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                "lastState": {"terminated": {"exitCode": 3, "reason": "Error"}},
                "restartCount": 4,
            },
            "CrashLoop",
            "keeps crashing (exit 3 Error)",
        ),
        (
            {
                "state": {"running": {}},
                "restartCount": 3,
                "lastState": {"terminated": {"exitCode": 137, "reason": "Error"}},
            },
            "ProbeFailing",
            "a failing startup or liveness probe, or a kill from outside",
        ),
        (
            {
                "state": {"running": {}},
                "restartCount": 3,
                "lastState": {"terminated": {"exitCode": 137, "reason": "OOMKilled"}},
            },
            "OOMKilled",
            "ran out of memory",
        ),
        (
            {
                "state": {
                    "waiting": {
                        "reason": "CreateContainerConfigError",
                        "message": 'secret "k" not found',
                    }
                }
            },
            "ContainerConfigError",
            'secret "k" not found',
        ),
    ],
)
def test_pod_problems(container: dict[str, Any], reason: str, fragment: str) -> None:
    found = pod_problem([pod(containerStatuses=[container])])
    assert found is not None and found[0] == reason and fragment in found[1]


def test_a_healthy_loading_pod_is_no_problem() -> None:
    assert (
        pod_problem([pod(containerStatuses=[{"state": {"running": {}}, "restartCount": 0}])])
        is None
    )


def test_apply_errors_stall() -> None:
    status = status_of(live_children(**DONE), errors=["apply Ingress s: 403 forbidden"])
    assert conditions(status)[2] == ("Stalled", "True", "ApplyFailed")
    assert status.reason == "apply Ingress s: 403 forbidden"


def test_last_transition_time_is_kept_while_a_condition_holds() -> None:
    previous = [
        {"type": "Ready", "status": "True", "lastTransitionTime": "2026-01-01T00:00:00Z"},
        {"type": "Stalled", "status": "True", "lastTransitionTime": "2026-01-01T00:00:00Z"},
    ]
    status = status_of(live_children(**DONE), previous=previous)
    times = {c.type: c.last_transition_time for c in status.conditions}
    assert times == {"Ready": "2026-01-01T00:00:00Z", "Reconciling": NOW, "Stalled": NOW}


def test_hpa_minimum_counts_before_the_hpa_has_scaled() -> None:
    spec = parse_spec(
        {"model": {"name": "m", "source": {"imagePath": "/m"}}, "autoscaling": {"enabled": True}}
    )
    desired = desired_children("s", "ns", "uid-1", spec)
    children = {c["kind"]: copy.deepcopy(c) for c in desired}
    dep = children["Deployment"]
    dep["metadata"]["generation"] = 1
    dep["spec"]["replicas"] = 1  # the API server's default, until the HPA scales it
    dep["status"] = {
        "observedGeneration": 1,
        "replicas": 1,
        "updatedReplicas": 1,
        "availableReplicas": 1,
        "readyReplicas": 1,
    }
    status = compute_status(
        "s", "ns", spec, desired, Observed(generation=1, children=children), NOW
    )
    assert (status.phase, status.ready, status.reason) == (
        "Progressing",
        "1/2",
        "rollout: 1/2 pods on the current spec",
    )


def test_replace_one_at_a_time_when_no_gpu_is_free_for_a_surge_pod() -> None:
    gpu = parse_spec({"model": {"name": "m", "source": {"imagePath": "/m"}}, "replicas": 2})
    children = live_children(replicas=3, updatedReplicas=1, readyReplicas=2, availableReplicas=2)
    dep = children["Deployment"]
    assert replace_one_at_a_time(gpu, dep, [pod(**UNSCHEDULABLE)]) is True
    assert replace_one_at_a_time(gpu, dep, [pod()]) is False
    cpu = parse_spec(
        {"model": {"name": "m", "source": {"imagePath": "/m"}}, "resources": {"gpu": {"count": 0}}}
    )
    assert replace_one_at_a_time(cpu, dep, [pod(**UNSCHEDULABLE)]) is False
    dep["spec"]["strategy"]["rollingUpdate"] = {"maxSurge": 0, "maxUnavailable": 1}
    assert replace_one_at_a_time(gpu, dep, [pod()]) is True  # kept until the rollout completes
    assert (
        replace_one_at_a_time(gpu, live_children(**DONE)["Deployment"], [pod(**UNSCHEDULABLE)])
        is False
    )


def test_differences_is_a_semantic_subset() -> None:
    desired = {
        "spec": {"replicas": 2, "cpu": "500m", "memory": "1Gi", "list": [{"a": 1}], "empty": {}}
    }
    live = {
        "spec": {
            "replicas": 2,
            "cpu": "0.5",
            "memory": "1024Mi",
            "list": [{"a": 1, "b": 2}],
            "extra": True,
        }
    }
    assert differences(desired, live) == []
    live["spec"]["replicas"] = 3
    live["spec"]["list"] = [{"a": 1}, {"a": 2}]
    assert differences(desired, live) == [".spec.replicas", ".spec.list"]
    assert differences({"a": "1"}, {"a": 1}) == [".a"]  # a string is not an int
    assert differences({"x": "abc"}, {"x": "abd"}) == [".x"]


def test_parse_quantity() -> None:
    assert parse_quantity("500m") == parse_quantity("0.5")
    assert parse_quantity("32Gi") == 32 * 2**30
    assert parse_quantity("1e3") == 1000
    assert parse_quantity("hello") is None
