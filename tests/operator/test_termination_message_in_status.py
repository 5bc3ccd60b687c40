"""issue 20: a crashed runtime container's termination message in the server's status.

The runtime writes a fatal start-up error to /dev/termination-log (one line); a crash
without one leaves its log's tail there (FallbackToLogsOnError). Status carries it in
the Ready and Stalled conditions and in status.reason (the REASON column), on one
line, at most 512 characters.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest

from qms_operator.builders import desired_children
from qms_operator.builders.names import SPEC_HASH_ANNOTATION
from qms_operator.pods import last_words, one_line, pod_problem
from qms_operator.spec import parse_spec
from qms_operator.status import Observed, compute_status, current_pods

SPEC = parse_spec({"model": {"name": "m", "source": {"imagePath": "/models/m"}}, "replicas": 2})
DESIRED = desired_children("s", "ns", "uid-1", SPEC)
HASH = next(c for c in DESIRED if c["kind"] == "Deployment")["spec"]["template"]["metadata"][
    "annotations"
][SPEC_HASH_ANNOTATION]
CHECKSUM = (
    "checksum mismatch: model-00001-of-00002.safetensors has sha256 9f2c...e1, "
    "SHA256SUMS says 0b7d...4a; the weights on the volume are damaged or incomplete"
)


def crashing(message: str | None, hash_: str = HASH, name: str = "s-abc") -> dict[str, Any]:
    terminated: dict[str, Any] = {"exitCode": 1, "reason": "Error"}
    if message is not None:
        terminated["message"] = message
    return {
        "metadata": {"name": name, "annotations": {SPEC_HASH_ANNOTATION: hash_}},
        "status": {
            "containerStatuses": [
                {
                    "name": "runtime",
                    "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                    "lastState": {"terminated": terminated},
                    "restartCount": 3,
                }
            ]
        },
    }


def test_a_crash_loop_carries_the_termination_message() -> None:
    assert pod_problem([crashing(CHECKSUM)]) == (
        "CrashLoop",
        f"pod s-abc keeps crashing (exit 1 Error): {CHECKSUM}",
    )


def test_a_crash_loop_without_a_message_points_at_the_logs() -> None:
    assert pod_problem([crashing(None)]) == (
        "CrashLoop",
        "pod s-abc keeps crashing (exit 1 Error); see its logs",
    )
    assert pod_problem([crashing("  \n ")]) == (
        "CrashLoop",
        "pod s-abc keeps crashing (exit 1 Error); see its logs",
    )


def test_a_container_terminated_now_is_named_with_its_message() -> None:
    pod = crashing(None)
    pod["status"]["containerStatuses"][0]["state"] = {
        "terminated": {"exitCode": 2, "reason": "Error", "message": "no model directory /models/m"}
    }
    assert pod_problem([pod]) == (
        "CrashLoop",
        "pod s-abc exited (exit 2 Error): no model directory /models/m",
    )
    assert last_words([pod]) == "no model directory /models/m"


def test_oom_and_probe_kills_keep_their_advice_and_add_the_message() -> None:
    oom = crashing("loading shard 3 of 13")
    oom["status"]["containerStatuses"][0]["lastState"]["terminated"] = {
        "exitCode": 137,
        "reason": "OOMKilled",
        "message": "loading shard 3 of 13",
    }
    assert pod_problem([oom]) == (
        "OOMKilled",
        "pod s-abc ran out of memory; raise resources.limits.memory: loading shard 3 of 13",
    )
    probe = copy.deepcopy(oom)
    status = probe["status"]["containerStatuses"][0]
    status["state"] = {"running": {}}  # restarting again, not Ready: the 3rd restart
    status["lastState"]["terminated"]["reason"] = "Error"
    assert pod_problem([probe]) == (
        "ProbeFailing",
        "pod s-abc restarted 3 times, last because it was killed (SIGKILL, exit 137): a "
        "failing startup or liveness probe, or a kill from outside (raise "
        "probes.startup.budgetSeconds if the model loads slowly): loading shard 3 of 13",
    )


def test_a_log_tail_becomes_one_line_ending_with_its_error() -> None:
    tail = (
        "loading weights\n\n  shard 1/2   ok\nTraceback (most recent call last):\nValueError: bad"
    )
    assert one_line(tail) == (
        "loading weights | shard 1/2 ok | Traceback (most recent call last): | ValueError: bad"
    )
    long = "x" * 600 + "\nRuntimeError: CUDA error: no kernel image is available"
    capped = one_line(long)
    assert len(capped) == 512
    assert (
        capped
        == "..." + ("x" * 600 + " | RuntimeError: CUDA error: no kernel image is available")[-509:]
    )
    assert one_line("a" * 512) == "a" * 512


def test_status_reason_and_conditions_carry_it() -> None:
    children = {c["kind"]: copy.deepcopy(c) for c in DESIRED}
    deployment = children["Deployment"]
    deployment["metadata"]["generation"] = 1
    deployment["status"] = {"observedGeneration": 1, "replicas": 2, "updatedReplicas": 2}
    observed = Observed(generation=1, children=children, pods=[crashing(CHECKSUM)])
    status = compute_status("s", "ns", SPEC, DESIRED, observed, "2026-11-29T12:00:00Z")
    message = f"pod s-abc keeps crashing (exit 1 Error): {CHECKSUM}"
    assert status.reason == message
    assert status.phase == "Failed"
    assert [(c.type, c.status, c.reason, c.message) for c in status.conditions] == [
        ("Ready", "False", "CrashLoop", message),
        ("Reconciling", "False", "CrashLoop", "rollout: 0/2 pods available"),
        ("Stalled", "True", "CrashLoop", message),
    ]


@pytest.mark.parametrize(
    ("pods", "words"),
    [
        ([], ""),
        ([crashing(None)], ""),
        ([crashing(None, name="a"), crashing("out of disk", name="b")], "out of disk"),
        ([crashing("line one\nline two")], "line one | line two"),
    ],
)
def test_last_words(pods: list[dict[str, Any]], words: str) -> None:
    assert last_words(pods) == words


def test_only_pods_of_the_current_template_count() -> None:
    old, new = crashing("old words", hash_="0ld"), crashing(CHECKSUM, name="s-new")
    gone = crashing("going", name="s-gone")
    gone["metadata"]["deletionTimestamp"] = "2026-11-29T12:00:00Z"
    assert current_pods(DESIRED, [old, new, gone]) == [new]
    assert last_words(current_pods(DESIRED, [old, gone, new])) == CHECKSUM


def test_a_failed_weights_download_carries_its_line() -> None:
    """The download init container's termination message reaches the status (the
    runtime container waits in PodInitializing meanwhile)."""
    line = (
        "qms-runtime download: HTTP 401 from https://huggingface.co: the token from "
        "/var/run/secrets/huggingface/token was refused for acme/private"
    )
    pod = crashing(None)
    pod["status"]["containerStatuses"][0] = {
        "name": "runtime",
        "state": {"waiting": {"reason": "PodInitializing"}},
        "restartCount": 0,
    }
    pod["status"]["initContainerStatuses"] = [
        {
            "name": "download",
            "state": {"waiting": {"reason": "CrashLoopBackOff"}},
            "lastState": {"terminated": {"exitCode": 1, "reason": "Error", "message": line}},
            "restartCount": 2,
        }
    ]
    assert pod_problem([pod]) == ("CrashLoop", f"pod s-abc keeps crashing (exit 1 Error): {line}")
    assert last_words([pod]) == line
    done = copy.deepcopy(pod)
    done["status"]["initContainerStatuses"][0] = {
        "name": "download",
        "state": {"terminated": {"exitCode": 0, "reason": "Completed"}},
        "restartCount": 0,
    }
    assert pod_problem([done]) is None
    assert last_words([done]) == ""
