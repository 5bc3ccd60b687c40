"""What a server's pods say: the first reason one cannot serve, a container's last
words (its termination message, never an access-log line), and why it restarted.

Pure functions over pod objects (and a pod's Events), used by status.py.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from .rollout import dig as _get

IMAGE_PULL = {"ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull"}
CONFIG_ERRORS = {"CreateContainerConfigError", "CreateContainerError", "RunContainerError"}
# A container's termination message as status and Events carry it: one line, at most
# this long (the end is kept: a log tail's last line is its error).
LAST_WORDS_MAX = 512
# One restart does not stall a server: a container that restarted and is Ready again
# (or still starting) is fine. Repeated restarts do: the kubelet's CrashLoopBackOff, or
# this many restarts with the last one this recent, and the container not Ready.
REPEATED_RESTARTS = 3
RESTART_WINDOW_SECONDS = 600
# The kubelet's Event when it kills a container for a probe ("Killing").
PROBE_KILL = re.compile(r"Container (\S+) failed (liveness|startup) probe")


def one_line(text: str, limit: int = LAST_WORDS_MAX) -> str:
    """``text`` on one line (lines joined by " | ", runs of spaces made one), its last
    ``limit`` characters when longer, starting with "..."."""
    lines = (" ".join(line.split()) for line in text.splitlines())
    joined = " | ".join(line for line in lines if line)
    return joined if len(joined) <= limit else "..." + joined[-(limit - 3) :]


_TEXT_LOG = re.compile(r"^\S+ \S+ (DEBUG|INFO|WARNING|WARN) \S+: ")  # the runtime's text logs
# A JSON log record's level, also in a record whose start the kubelet cut off (the
# fallback message is the log's last bytes, so its first line is often a fragment).
_JSON_LEVEL = re.compile(r'"level":\s*"(\w+)"')


def _not_an_error(line: str) -> bool:
    """A log line below error level: the runtime's JSON or text format, or uvicorn's."""
    stripped = line.strip()
    if stripped.startswith("{") or stripped.endswith("}"):
        try:
            record = json.loads(stripped)
        except ValueError:
            record = None
        if isinstance(record, dict):
            level = str(record.get("level", ""))
        else:
            m = _JSON_LEVEL.search(stripped)
            level = m.group(1) if m else ""
        if level:
            return level.lower() in ("debug", "info", "warning", "warn")
    return bool(_TEXT_LOG.match(stripped)) or stripped.startswith("INFO:")


def termination_words(message: str) -> str:
    """A container's termination message as status shows it: what the runtime wrote, or
    the error lines of a log tail (FallbackToLogsOnError), never access or info lines.
    The tail's first line, a JSON record the kubelet cut at its start, is dropped."""
    lines = message.splitlines()
    if lines and _cut_record(lines[0]):
        lines = lines[1:]
    return one_line("\n".join(ln for ln in lines if not _not_an_error(ln)))


def _cut_record(line: str) -> bool:
    stripped = line.strip()
    if stripped.startswith("{") or not stripped.endswith("}") or '": ' not in stripped:
        return False
    try:
        json.loads(stripped)
    except ValueError:
        return True
    return False


def _crashed(cs: dict[str, Any]) -> dict[str, Any]:
    """The container's last termination if it failed: now, or before its restart."""
    now = _get(cs, "state", "terminated", default={})
    if now and now.get("exitCode", 0) != 0:
        return dict(now)
    return dict(_get(cs, "lastState", "terminated", default={}))


def _container_statuses(pod: dict[str, Any]) -> list[dict[str, Any]]:
    """Init containers first (the weights download runs before the runtime), then the
    containers."""
    init = _get(pod, "status", "initContainerStatuses", default=None) or []
    main = _get(pod, "status", "containerStatuses", default=None) or []
    return [*init, *main]


def last_words(pods: list[dict[str, Any]]) -> str:
    """The first failed container's termination message among ``pods`` (one line,
    capped): what the runtime (or its download) wrote to /dev/termination-log, or its
    log's tail."""
    for pod in pods:
        for cs in _container_statuses(pod):
            words = termination_words(_crashed(cs).get("message") or "")
            if words:
                return words
    return ""


def restart_cause(cs: dict[str, Any], pod_events: list[dict[str, Any]]) -> str:
    """Why a container last restarted, from its status and its pod's Events."""
    last = _get(cs, "lastState", "terminated", default={}) or {}
    code, reason = last.get("exitCode"), last.get("reason", "")
    if reason == "OOMKilled":
        return "it ran out of memory (OOMKilled)"
    for event in pod_events:
        m = PROBE_KILL.search(event.get("message") or "")
        if event.get("reason") == "Killing" and m and m.group(1) == cs.get("name"):
            return f"its {m.group(2)} probe failed"
    if code == 137:
        return "it was killed (SIGKILL, exit 137)"
    if code == 143:
        return "it was stopped (SIGTERM, exit 143)"
    return f"it exited (exit {code} {reason})".replace(" )", ")")


@dataclass(frozen=True)
class Restart:
    """One container restart, reported once (an Event) by the reconciler."""

    pod: str
    uid: str
    container: str
    count: int  # the container's restartCount
    ready: bool

    @property
    def key(self) -> str:
        return f"{self.pod}/{self.container}"


def restarts(pods: list[dict[str, Any]]) -> list[Restart]:
    """The containers of ``pods`` that have restarted (init containers included)."""
    found = []
    for pod in pods:
        name = _get(pod, "metadata", "name", default="?")
        uid = _get(pod, "metadata", "uid", default="")
        for cs in _container_statuses(pod):
            if cs.get("restartCount", 0) > 0:
                found.append(
                    Restart(
                        name, uid, cs.get("name", "?"), cs["restartCount"], bool(cs.get("ready"))
                    )
                )
    return found


def _seconds_since(stamp: str | None, now: str | None) -> float | None:
    if not stamp or not now:
        return None
    try:
        then = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
        at = datetime.fromisoformat(now.replace("Z", "+00:00"))
    except ValueError:
        return None
    return (at - then).total_seconds()


def _restarting_repeatedly(cs: dict[str, Any], now: str | None) -> bool:
    """Restarted often and recently, and not Ready: the restarts are the problem."""
    if cs.get("ready") or cs.get("restartCount", 0) < REPEATED_RESTARTS:
        return False
    since = _seconds_since(_get(cs, "lastState", "terminated", "finishedAt", default=None), now)
    return since is None or since <= RESTART_WINDOW_SECONDS


def _saying(text: str, words: str) -> str:
    return f"{text}: {words}" if words else text


def pod_problem(
    pods: list[dict[str, Any]],
    causes: Mapping[str, str] | None = None,
    now: str | None = None,
) -> tuple[str, str] | None:
    """The first reason a pod of the current template cannot serve, if any.

    A container that failed (terminated now, or in CrashLoopBackOff) is named with its
    exit and its termination message, when it left one. A container that restarted is
    a problem only when it restarts repeatedly (_restarting_repeatedly): one restart,
    Ready again or starting again, is not. ``causes`` gives the cause of restarts by
    "pod/container" (from the pods' Events: restart_cause), ``now`` the time.
    """
    for pod in pods:
        name = _get(pod, "metadata", "name", default="?")
        for cond in _get(pod, "status", "conditions", default=[]):
            if cond.get("type") == "PodScheduled" and cond.get("reason") == "Unschedulable":
                return "Unschedulable", f"pod {name} cannot be scheduled: {cond.get('message', '')}"
        for cs in _container_statuses(pod):
            waiting = _get(cs, "state", "waiting", default={})
            last = _crashed(cs)
            words = termination_words(last.get("message") or "")
            exited = f"exit {last.get('exitCode', '?')} {last.get('reason', '')}".strip()
            why = waiting.get("reason", "")
            detail = waiting.get("message", "")
            if why in IMAGE_PULL:
                return (
                    "ImagePullFailed",
                    f"pod {name} cannot pull {cs.get('image')}: {why} {detail}",
                )
            if why in CONFIG_ERRORS:
                return "ContainerConfigError", f"pod {name}: {why} {detail}"
            repeated = why == "CrashLoopBackOff" or _restarting_repeatedly(cs, now)
            if last.get("reason") == "OOMKilled" and repeated:
                return "OOMKilled", _saying(
                    f"pod {name} ran out of memory; raise resources.limits.memory", words
                )
            if why == "CrashLoopBackOff":
                if words:
                    return "CrashLoop", f"pod {name} keeps crashing ({exited}): {words}"
                return "CrashLoop", f"pod {name} keeps crashing ({exited}); see its logs"
            if _get(cs, "state", "terminated", "exitCode", default=0) != 0:
                return "CrashLoop", _saying(f"pod {name} exited ({exited})", words)
            if repeated:
                key = f"{name}/{cs.get('name', '?')}"
                cause = (causes or {}).get(key) or restart_cause(cs, [])
                said = f"pod {name} restarted {cs['restartCount']} times, last because {cause}"
                if "probe" in cause:
                    advice = "raise probes.startup.budgetSeconds if the model loads slowly"
                    return "ProbeFailing", _saying(f"{said} ({advice})", words)
                if "SIGKILL" in cause:
                    return "ProbeFailing", _saying(
                        f"{said}: a failing startup or liveness probe, or a kill from outside "
                        "(raise probes.startup.budgetSeconds if the model loads slowly)",
                        words,
                    )
                return "CrashLoop", _saying(said, words)
    return None
