"""Status after a restart tells the truth (issue 27): pod_problem, restart_cause and the
last words of a container whose termination message is a fallback log tail.

One restart, Ready again or starting again, is no problem; repeated restarts (the
kubelet's CrashLoopBackOff, or REPEATED_RESTARTS within RESTART_WINDOW_SECONDS while
not Ready) stall the server as before, with the cause: out of memory from the kubelet's
OOMKilled, a probe from the pod's Events, else a kill.
"""

from __future__ import annotations

from typing import Any

import pytest

from qms_operator.pods import (
    REPEATED_RESTARTS,
    last_words,
    pod_problem,
    restart_cause,
    restarts,
    termination_words,
)

NOW = "2026-12-07T10:05:00Z"
ACCESS_TAIL = (
    '{"ts": "2026-12-07T10:00:01.000Z", "level": "info", "logger": "qms_runtime.access", '
    '"message": "POST /v1/chat/completions 200", "status": 200}\n'
    '{"ts": "2026-12-07T10:00:02.000Z", "level": "info", "logger": "qms_runtime.access", '
    '"message": "GET /v1/models 200", "status": 200}'
)
LIVENESS_KILL = {
    "reason": "Killing",
    "message": "Container runtime failed liveness probe, will be restarted",
}
STARTUP_KILL = {
    "reason": "Killing",
    "message": "Container runtime failed startup probe, will be restarted",
}


def pod(
    *,
    ready: bool,
    restarts: int,
    exit_code: int = 137,
    reason: str = "Error",
    message: str = ACCESS_TAIL,
    waiting: str | None = None,
    finished: str = "2026-12-07T10:04:00Z",
) -> dict[str, Any]:
    state: dict[str, Any] = {"waiting": {"reason": waiting}} if waiting else {"running": {}}
    return {
        "metadata": {"name": "s-1", "uid": "u-1"},
        "status": {
            "containerStatuses": [
                {
                    "name": "runtime",
                    "ready": ready,
                    "restartCount": restarts,
                    "state": state,
                    "lastState": {
                        "terminated": {
                            "exitCode": exit_code,
                            "reason": reason,
                            "message": message,
                            "finishedAt": finished,
                        }
                    },
                }
            ]
        },
    }


@pytest.mark.parametrize("reason", ["Error", "OOMKilled"])
def test_restarted_once_and_ready_again_is_no_problem(reason: str) -> None:
    assert pod_problem([pod(ready=True, restarts=1, reason=reason)], {}, NOW) is None
    # Starting again after one kill (not Ready yet) is progress, not a stall.
    assert pod_problem([pod(ready=False, restarts=1, reason=reason)], {}, NOW) is None
    # Ready, however many restarts it took: serving.
    assert pod_problem([pod(ready=True, restarts=9, reason=reason)], {}, NOW) is None


def test_repeated_oom_kills_stall_with_the_memory_advice() -> None:
    assert pod_problem([pod(ready=False, restarts=3, reason="OOMKilled")], {}, NOW) == (
        "OOMKilled",
        "pod s-1 ran out of memory; raise resources.limits.memory",
    )


def test_repeated_liveness_kills_stall_naming_the_probe_from_the_pods_events() -> None:
    unready = pod(ready=False, restarts=REPEATED_RESTARTS)
    [cs] = unready["status"]["containerStatuses"]
    cause = restart_cause(cs, [{"reason": "Pulled", "message": "image present"}, LIVENESS_KILL])
    assert cause == "its liveness probe failed"
    assert restart_cause(cs, [STARTUP_KILL]) == "its startup probe failed"
    assert pod_problem([unready], {"s-1/runtime": cause}, NOW) == (
        "ProbeFailing",
        "pod s-1 restarted 3 times, last because its liveness probe failed (raise "
        "probes.startup.budgetSeconds if the model loads slowly)",
    )
    # Another container's probe kill is not this one's.
    other = {**LIVENESS_KILL, "message": "Container sidecar failed liveness probe"}
    assert restart_cause(cs, [other]) == "it was killed (SIGKILL, exit 137)"


def test_restarts_long_ago_do_not_stall_a_container_that_is_starting_again() -> None:
    old = pod(ready=False, restarts=5, finished="2026-12-07T09:00:00Z")
    assert pod_problem([old], {}, NOW) is None


def test_crash_loop_back_off_keeps_todays_behaviour() -> None:
    looping = pod(
        ready=False,
        restarts=1,
        exit_code=1,
        message="qms-runtime: no model directory /models/m",
        waiting="CrashLoopBackOff",
    )
    assert pod_problem([looping], {}, NOW) == (
        "CrashLoop",
        "pod s-1 keeps crashing (exit 1 Error): qms-runtime: no model directory /models/m",
    )
    oom = pod(ready=False, restarts=1, reason="OOMKilled", waiting="CrashLoopBackOff")
    assert pod_problem([oom], {}, NOW) == (
        "OOMKilled",
        "pod s-1 ran out of memory; raise resources.limits.memory",
    )


def test_a_fallback_log_tail_of_access_lines_is_not_shown() -> None:
    looping = pod(ready=False, restarts=4, waiting="CrashLoopBackOff")
    assert pod_problem([looping], {}, NOW) == (
        "CrashLoop",
        "pod s-1 keeps crashing (exit 137 Error); see its logs",
    )
    assert last_words([looping]) == ""
    assert termination_words(ACCESS_TAIL) == ""
    # The kubelet keeps the log's last bytes: the first record is cut off (seen on the
    # real node after a SIGKILL).
    cut = ', "level": "info", "logger": "qms_runtime.lifecycle", "message": "ready"}'
    assert termination_words(cut + "\n" + ACCESS_TAIL) == ""
    seen = (  # the first line of a real node's tail after a SIGKILL
        'untime.access", "message": "GET /ready 503", "request_id": "eac708d1", '
        '"status": 503, "duration_s": 0.0065}'
    )
    assert termination_words(seen + "\n" + ACCESS_TAIL) == ""
    error = '{"level": "error", "message": "boom"}'
    assert termination_words(seen + "\n" + error) == error
    # Error lines of a tail stay, in either log format, and so do tracebacks.
    tail = (
        ACCESS_TAIL + "\n"
        '{"level": "error", "logger": "qms_runtime.lifecycle", "message": "CUDA out of memory"}\n'
        "2026-12-07 10:00:03,000 INFO qms_runtime.access: GET /health 200\n"
        "2026-12-07 10:00:04,000 ERROR qms_runtime.run: fatal: engine died\n"
        "Traceback (most recent call last):"
    )
    assert termination_words(tail) == (
        '{"level": "error", "logger": "qms_runtime.lifecycle", "message": "CUDA out of memory"}'
        " | 2026-12-07 10:00:04,000 ERROR qms_runtime.run: fatal: engine died"
        " | Traceback (most recent call last):"
    )


def test_what_the_runtime_says_on_a_drain_is_its_last_words() -> None:
    drained = "qms-runtime: drained 12 requests in 3.1s after SIGTERM, exit 0"
    assert termination_words(drained) == drained
    restarted = pod(ready=True, restarts=1, exit_code=0, reason="Completed", message=drained)
    [cs] = restarted["status"]["containerStatuses"]
    assert restart_cause(cs, []) == "it exited (exit 0 Completed)"
    assert restart_cause(cs, [LIVENESS_KILL]) == "its liveness probe failed"
    assert [(r.key, r.count, r.ready) for r in restarts([restarted])] == [("s-1/runtime", 1, True)]
