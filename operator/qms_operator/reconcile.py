"""One reconcile for every trigger: parse -> build -> apply what differs -> status.

The work queue (``workqueue.py``) coalesces triggers per server (a burst of child
events gives one reconcile), bounds concurrency and retries failed reconciles with
backoff; a watch event or the resync cuts a backoff short.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pydantic

from .apply import Api, ApiError, NotServed
from .builders import OPTIONAL_KINDS, desired_children, unwanted_kinds
from .clock import utc_now
from .diff import differences
from .pods import Restart, last_words, restart_cause, restarts, termination_words
from .rollout import replace_one_at_a_time
from .spec import QwenModelServerSpec, parse_spec
from .status import MONITORING, Observed, compute_status, current_pods, failed_status
from .store import Key, Store

log = logging.getLogger("qms_operator")
# The API server's refusal to create objects in a namespace being deleted.
TERMINATING = "because it is being terminated"
TERMINATING_BACKOFF = 30.0


def dropped_fields(child: dict[str, Any], paths: list[str]) -> str:
    """Why an applied child still differs: the API server accepted it without some
    fields. Image volumes are the known case (the ImageVolume gate, off in 1.33-1.34)."""
    volumes = child.get("spec", {}).get("template", {}).get("spec", {}).get("volumes", [])
    hint = ""
    if any("image" in v for v in volumes) and any(".volumes" in p for p in paths):
        hint = (
            ": model.source.image needs image volumes, behind the ImageVolume feature gate "
            "of the API server (and kubelet) before Kubernetes 1.35"
        )
    name = child["metadata"]["name"]
    fields = ", ".join(p.lstrip(".") for p in paths[:3])
    return f"apply {child['kind']} {name}: the API server did not keep {fields}{hint}"


@dataclass(frozen=True)
class Outcome:
    """What became of one child this round."""

    kind: str
    verb: str = ""  # Created or Updated; empty when not applied
    detail: str = ""  # what was applied, or the error
    unavailable: bool = False  # an optional kind the cluster does not serve


@dataclass
class ChildFailure:
    """A child whose apply was refused: retried with backoff, not on every reconcile."""

    body: dict[str, Any]  # the desired child that was refused
    error: str
    failures: int
    retry_at: float  # monotonic


class Reconciler:
    """Brings the children of one server in line with its spec and writes its status."""

    def __init__(
        self,
        api: Api,
        store: Store,
        retry_base: float = 1.0,
        retry_max: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.api = api
        self.store = store
        self._retry = (retry_base, retry_max)
        self._clock = clock
        self._events: set[asyncio.Task[None]] = set()
        # Namespaces being deleted refuse creates: leave their servers alone a while.
        self._terminating: dict[str, float] = {}
        # Refused children, per server and kind: only their retry backs off.
        self._refused: dict[Key, dict[str, ChildFailure]] = {}
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

    async def _call(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.to_thread(fn, *args)

    async def reconcile(self, key: Key) -> bool:
        """Returns False when it should be retried (an API call failed).

        An unexpected exception is logged, and becomes a Warning Event and a Stalled
        reason on the server: once per error and generation, not once per retry.
        """
        try:
            ok = await self._reconcile(key)
        except Exception as exc:
            log.exception("reconcile of %s/%s failed", *key)
            await self._report_crash(key, exc)
            return False
        self._crashed.pop(key, None)
        return ok

    async def _reconcile(self, key: Key) -> bool:
        server = self.store.servers.get(key)
        if server is None or server["metadata"].get("deletionTimestamp"):
            self._forget(key)
            return True
        namespace, name = key
        if self._terminating.get(namespace, 0.0) > self._clock():
            return True
        meta = server["metadata"]
        generation = meta.get("generation", 0)
        current = server.get("status") or {}
        try:
            spec = parse_spec(server.get("spec") or {})
        except pydantic.ValidationError as exc:
            error = f"invalid spec: {exc.errors()[0]['loc']}: {exc.errors()[0]['msg']}"
            invalid = failed_status(current, generation, "InvalidSpec", error, utc_now())
            if invalid != current:
                await self._call(self.api.patch_status, namespace, name, invalid)
            if current.get("reason") != error or current.get("observedGeneration") != generation:
                self._event(server, "Warning", "InvalidSpec", error)
            return True
        replace_one = replace_one_at_a_time(
            spec, self.store.children(key).get("Deployment"), self.store.pods(key)
        )
        desired = desired_children(name, namespace, meta["uid"], spec, replace_one)
        changed, errors, unavailable = await self._apply_children(server, spec, desired)
        if any(TERMINATING in error for error in errors):
            self._terminating[namespace] = self._clock() + TERMINATING_BACKOFF
            return True
        pods = self.store.pods(key)
        causes = await self._restart_causes(server, current_pods(desired, pods))
        seen = Observed(
            generation=generation,
            children=self.store.children(key),
            pods=pods,
            changed=changed,
            errors=errors,
            previous=current.get("conditions", []),
            unavailable=unavailable,
            restart_causes=causes,
        )
        status = compute_status(name, namespace, spec, desired, seen, utc_now())
        body = status.model_dump(by_alias=True, mode="json")
        words = last_words(current_pods(desired, seen.pods))
        self._announce(server, status.conditions, current.get("conditions", []), words)
        if body != current:
            try:
                await self._call(self.api.patch_status, namespace, name, body)
            except ApiError as exc:
                errors.append(str(exc))
        # An optional kind not served is retried (with backoff) to see its CRD arrive.
        return not errors and not unavailable

    def _forget(self, key: Key) -> None:
        for table in (
            self._refused,
            self._announced,
            self._crashed,
            self._last_words,
            self._restarts,
            self._restarts_reported,
        ):
            table.pop(key, None)

    async def _restart_causes(
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
        self._event(server, "Warning", "Restarted", f"{message}: {words}" if words else message)

    async def _report_crash(self, key: Key, exc: Exception) -> None:
        server = self.store.servers.get(key)
        if server is None:
            return
        generation = server["metadata"].get("generation", 0)
        error = f"{type(exc).__name__}: {exc}"[:300]
        if self._crashed.get(key) == (generation, error):
            return  # reported already: not one Event per retry
        self._crashed[key] = (generation, error)
        message = f"reconcile failed unexpectedly ({error}); retrying, see the operator log"
        self._event(server, "Warning", "ReconcileError", message)
        current = server.get("status") or {}
        body = failed_status(current, generation, "ReconcileError", message, utc_now())
        if body != current:
            try:
                await self._call(self.api.patch_status, *key, body)
            except Exception:
                log.exception("status of %s/%s not written", *key)

    def _announce(
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
                    self._event(server, "Warning", now.reason, now.message)
                self._last_words[key] = words
                continue
            if before.get("status") != bad or before.get("reason") != now.reason:
                self._event(server, "Warning", now.reason, now.message)

    def _event(self, server: dict[str, Any], type_: str, reason: str, message: str) -> None:
        """Post an Event in the background: it must not slow the reconcile down."""
        task = asyncio.get_running_loop().create_task(
            self._call(self.api.event, server, type_, reason, message)
        )
        self._events.add(task)
        task.add_done_callback(self._events.discard)

    async def _apply_one(
        self, key: Key, child: dict[str, Any], existing: dict[str, Any] | None
    ) -> Outcome:
        kind = child["kind"]
        refused = self._refused.get(key, {}).get(kind)
        if refused is not None and refused.body == child and self._clock() < refused.retry_at:
            return Outcome(kind, detail=refused.error)  # its retry backs off
        drift = differences(child, existing) if existing is not None else []
        try:
            applied = await self._call(self.api.apply, child)
        except NotServed as exc:
            if kind in OPTIONAL_KINDS:
                return Outcome(kind, detail=str(exc), unavailable=True)
            return Outcome(kind, detail=str(exc))
        except ApiError as exc:
            return self._refuse(key, child, refused, str(exc))
        self.store.put_child(applied)
        dropped = differences(child, applied)
        if dropped:
            # Accepted, but not kept (a field behind a feature gate that is off): applying
            # again would change nothing, so it is a failure with a backoff, not a write
            # on every reconcile.
            return self._refuse(key, child, refused, dropped_fields(child, dropped))
        self._refused.get(key, {}).pop(kind, None)
        if existing is None:
            return Outcome(kind, "Created", kind)
        return Outcome(kind, "Updated", f"{kind} ({', '.join(drift[:3])} differed)")

    def _refuse(
        self, key: Key, child: dict[str, Any], refused: ChildFailure | None, error: str
    ) -> Outcome:
        """Record a refused child: named in status, retried with its own backoff."""
        failures = refused.failures + 1 if refused is not None else 1
        base, most = self._retry
        retry_at = self._clock() + min(most, base * 2 ** (failures - 1))
        self._refused.setdefault(key, {})[child["kind"]] = ChildFailure(
            child, error, failures, retry_at
        )
        return Outcome(child["kind"], detail=error)

    async def _delete_one(self, api_version: str, kind: str, existing: dict[str, Any]) -> str:
        meta = existing["metadata"]
        try:
            await self._call(
                self.api.delete, api_version, kind, meta["namespace"], meta["name"], meta["uid"]
            )
        except ApiError as exc:
            return str(exc)
        self.store.put_child(existing, deleted=True)
        return ""

    async def _apply_children(
        self, server: dict[str, Any], spec: QwenModelServerSpec, desired: list[dict[str, Any]]
    ) -> tuple[list[str], list[str], list[str]]:
        """Apply the children that differ and delete the unwanted ones, all at once.

        A child that fails does not hold the others back. Returns the kinds changed,
        the errors and the optional kinds not served. One Event per verb names them
        all; one Warning per error not announced before.
        """
        meta = server["metadata"]
        key = (meta["namespace"], meta["name"])
        live = self.store.children(key)
        wanted = [
            child
            for child in desired
            if child["kind"] not in live or differences(child, live[child["kind"]])
        ]
        kinds = {c["kind"] for c in wanted}
        for kind in [k for k in self._refused.get(key, {}) if k not in kinds]:
            del self._refused[key][kind]  # no longer wanted, or no longer differs
        unwanted = [(api, kind) for api, kind in unwanted_kinds(spec) if kind in live]
        applied = await asyncio.gather(
            *(self._apply_one(key, c, live.get(c["kind"])) for c in wanted)
        )
        deleted = await asyncio.gather(
            *(self._delete_one(api, kind, live[kind]) for api, kind in unwanted)
        )
        failed = [o for o in applied if not o.verb and not o.unavailable]
        errors = [o.detail for o in failed] + [e for e in deleted if e]
        for verb in ("Created", "Updated"):
            done = [o.detail for o in applied if o.verb == verb]
            if done:
                self._event(server, "Normal", verb, f"{verb} {', '.join(done)} {meta['name']}")
        gone = [kind for (_, kind), error in zip(unwanted, deleted, strict=True) if not error]
        if gone:
            self._event(server, "Normal", "Deleted", f"Deleted {', '.join(gone)} {meta['name']}")
        announced = self._announced.get(key, set())
        for error in errors:
            if TERMINATING not in error and error not in announced:
                self._event(server, "Warning", "ApplyFailed", error)
        self._announced[key] = set(errors)
        changed = [o.kind for o in applied if o.verb]
        return changed + gone, errors, [o.kind for o in applied if o.unavailable]


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
