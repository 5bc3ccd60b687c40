"""What the operator tells people about a server, each thing once: Events (posted in the
background, never slowing a reconcile) and the de-duplication that keeps a crash loop,
a retried apply error or a repeated termination message from flooding them.

Per server it remembers: the apply errors already announced, the unexpected reconcile
error last reported (with the generation), the termination message last announced,
and each container restart seen (its cause, read once from the pod's Events, and
whether it was reported). `forget` drops all of it when the server goes.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any

from .apply import Api, ApiError
from .pods import Restart, restart_cause, restarts, termination_words
from .status import MONITORING
from .store import Key

log = logging.getLogger("qms_operator")
# The API server's refusal to create objects in a namespace being deleted.
TERMINATING = "because it is being terminated"


class Announcer:
    def __init__(self, api: Api, call: Callable[..., Coroutine[Any, Any, Any]]) -> None:
        self.api = api
        self._call = call
        self.events: set[asyncio.Task[Any]] = set()  # Events being posted
        # Errors already announced by an Event, per server (one Event per new error).
        self._announced: dict[Key, set[str]] = {}
        # The unexpected error last reported per server, with the generation.
        self._crashed: dict[Key, tuple[int, str]] = {}
        # A crashed container's termination message last announced, per server.
        self._last_words: dict[Key, str] = {}
        # Each container restart seen (pod uid, container, restartCount) -> its cause:
        # the pod's Events are read once per restart, and one Event reports it.
        self._restarts: dict[Key, dict[tuple[str, str, int], str]] = {}
        self._restarts_reported: dict[Key, set[tuple[str, str, int]]] = {}

    def forget(self, key: Key) -> None:
        for table in (
            self._announced,
            self._crashed,
            self._last_words,
            self._restarts,
            self._restarts_reported,
        ):
            table.pop(key, None)

    def recovered(self, key: Key) -> None:
        """A reconcile ran through: the next unexpected error is news again."""
        self._crashed.pop(key, None)

    def event(self, server: dict[str, Any], type_: str, reason: str, message: str) -> None:
        """Post an Event in the background: it must not slow the reconcile down."""
        posting = self._call(self.api.event, server, type_, reason, message)
        task: asyncio.Task[Any] = asyncio.get_running_loop().create_task(posting)
        self.events.add(task)
        task.add_done_callback(self.events.discard)

    def apply_errors(self, server: dict[str, Any], key: Key, errors: list[str]) -> None:
        """One Warning per apply error not announced before (a namespace being deleted
        is not news)."""
        announced = self._announced.get(key, set())
        for error in errors:
            if TERMINATING not in error and error not in announced:
                self.event(server, "Warning", "ApplyFailed", error)
        self._announced[key] = set(errors)

    def conditions(
        self, server: dict[str, Any], conditions: list[Any], previous: list[Any], words: str
    ) -> None:
        """A Warning Event when the server becomes Stalled, or stalls for a new reason;
        another when monitoring cannot be set up (the ServiceMonitor kind not served).

        A stall that carries a crashed container's termination message (``words``) is
        announced once per distinct message: not again on each crash, reconcile or new
        pod saying the same, nor after a restart of the operator (the status it wrote
        holds the message already).
        """
        key = (server["metadata"]["namespace"], server["metadata"]["name"])
        if any(c.type == "Ready" and c.status == "True" for c in conditions):
            self._last_words.pop(key, None)
        for kind, bad in (("Stalled", "True"), (MONITORING, "False")):
            now = next((c for c in conditions if c.type == kind), None)
            if now is not None and now.reason == "ApplyFailed":
                continue  # each apply error has its own Warning (_apply_children)
            before: dict[str, Any] = next((c for c in previous if c.get("type") == kind), {})
            if now is None or now.status != bad or now.reason == "Progressing":
                continue
            if kind == "Stalled" and words and words in now.message:
                said = words == self._last_words.get(key) or words in before.get("message", "")
                if not said:
                    self.event(server, "Warning", now.reason, now.message)
                self._last_words[key] = words
                continue
            if before.get("status") != bad or before.get("reason") != now.reason:
                self.event(server, "Warning", now.reason, now.message)

    async def restart_causes(
        self, server: dict[str, Any], pods: list[dict[str, Any]]
    ) -> dict[str, str]:
        """Why each restarted container of ``pods`` restarted, by "pod/container".

        A restart not seen before is looked up once in its pod's Events (a probe kill
        is only said there). Once the container is Ready again, one Event on the server
        reports it with its cause and the container's last words; one that never gets
        Ready again is a crash loop or a stall, which the Stalled Warning says. An Events
        list that fails is retried next time.
        """
        meta = server["metadata"]
        key = (meta["namespace"], meta["name"])
        known = self._restarts.setdefault(key, {})
        reported = self._restarts_reported.setdefault(key, set())
        found = restarts(pods)
        live = {(r.uid, r.container, r.count) for r in found}
        for gone in [k for k in known if k not in live]:
            del known[gone]
        reported &= live
        causes = {}
        for restart in found:
            seen_as = (restart.uid, restart.container, restart.count)
            status = _container_status(pods, restart)
            if seen_as not in known:
                try:
                    events = await self._call(self.api.pod_events, meta["namespace"], restart.pod)
                except ApiError as exc:
                    log.warning("restart of %s not explained: %s", restart.key, exc)
                    continue
                known[seen_as] = restart_cause(status, events)
            if restart.ready and seen_as not in reported:
                reported.add(seen_as)
                self._report_restart(server, restart, known[seen_as], status)
            causes[restart.key] = known[seen_as]
        return causes

    def _report_restart(
        self, server: dict[str, Any], restart: Restart, cause: str, status: dict[str, Any]
    ) -> None:
        words = termination_words(
            (status.get("lastState", {}).get("terminated", {}) or {}).get("message") or ""
        )
        message = (
            f"pod {restart.pod}: container {restart.container} restarted "
            f"(restart {restart.count}) because {cause}"
        )
        self.event(server, "Warning", "Restarted", f"{message}: {words}" if words else message)

    def crash(self, key: Key, server: dict[str, Any], exc: Exception) -> str | None:
        """The message of an unexpected reconcile error, announced by one Warning; None
        when this error was reported already for this generation (not once per retry)."""
        generation = server["metadata"].get("generation", 0)
        error = f"{type(exc).__name__}: {exc}"[:300]
        if self._crashed.get(key) == (generation, error):
            return None
        self._crashed[key] = (generation, error)
        message = f"reconcile failed unexpectedly ({error}); retrying, see the operator log"
        self.event(server, "Warning", "ReconcileError", message)
        return message


def _container_status(pods: list[dict[str, Any]], restart: Restart) -> dict[str, Any]:
    for pod in pods:
        if pod["metadata"].get("uid", "") != restart.uid:
            continue
        status = pod.get("status") or {}
        for cs in (status.get("initContainerStatuses") or []) + (
            status.get("containerStatuses") or []
        ):
            if cs.get("name") == restart.container:
                return dict(cs)
    return {}
