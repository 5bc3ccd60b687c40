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

from .announce import TERMINATING, Announcer
from .apply import Api, ApiError, NotServed
from .builders import OPTIONAL_KINDS, WORKLOAD_KIND, desired_children, unwanted_kinds
from .catalog import UnknownPreset, apply_preset, does_not_fit
from .clock import utc_now
from .diff import differences
from .pods import last_words
from .rollout import replace_one_at_a_time
from .spec import QwenModelServerSpec, parse_spec
from .status import Observed, compute_status, current_pods, failed_status
from .store import Key, Store

log = logging.getLogger("qms_operator")
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
        self.announce = Announcer(api, self._call)
        # Namespaces being deleted refuse creates: leave their servers alone a while.
        self._terminating: dict[str, float] = {}
        # Refused children, per server and kind: only their retry backs off.
        self._refused: dict[Key, dict[str, ChildFailure]] = {}

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
        self.announce.recovered(key)
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
            await self._refuse_spec(server, "InvalidSpec", error)
            return True
        try:  # spec.model.preset fills what the spec leaves out (never written back)
            spec = apply_preset(spec)
        except UnknownPreset as exc:
            await self._refuse_spec(server, "InvalidSpec", str(exc))
            return True
        # A model of the catalog too big for every GPU type the spec accepts: nothing is
        # applied (no pod pulls an image to find out); children of an earlier spec stay.
        too_big = does_not_fit(spec)
        if too_big is not None:
            await self._refuse_spec(server, "DoesNotFit", too_big)
            return True
        replace_one = replace_one_at_a_time(
            spec, self.store.children(key).get(WORKLOAD_KIND), self.store.pods(key)
        )
        desired = desired_children(name, namespace, meta["uid"], spec, replace_one)
        changed, errors, unavailable = await self._apply_children(server, spec, desired)
        if any(TERMINATING in error for error in errors):
            self._terminating[namespace] = self._clock() + TERMINATING_BACKOFF
            return True
        pods = self.store.pods(key)
        causes = await self.announce.restart_causes(server, current_pods(desired, pods))
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
        self.announce.conditions(server, status.conditions, current.get("conditions", []), words)
        if body != current:
            try:
                await self._call(self.api.patch_status, namespace, name, body)
            except ApiError as exc:
                errors.append(str(exc))
        # An optional kind not served is retried (with backoff) to see its CRD arrive.
        return not errors and not unavailable

    async def _refuse_spec(self, server: dict[str, Any], reason: str, message: str) -> None:
        """A spec the operator will not act on: Stalled with `reason`, one Warning Event
        per message and generation."""
        meta = server["metadata"]
        generation = meta.get("generation", 0)
        current = server.get("status") or {}
        refused = failed_status(current, generation, reason, message, utc_now())
        if refused != current:
            await self._call(self.api.patch_status, meta["namespace"], meta["name"], refused)
        if current.get("reason") != message or current.get("observedGeneration") != generation:
            self.announce.event(server, "Warning", reason, message)

    def _forget(self, key: Key) -> None:
        self._refused.pop(key, None)
        self.announce.forget(key)

    async def _report_crash(self, key: Key, exc: Exception) -> None:
        server = self.store.servers.get(key)
        if server is None:
            return
        message = self.announce.crash(key, server, exc)
        if message is None:
            return  # reported already: not one Event per retry
        generation = server["metadata"].get("generation", 0)
        current = server.get("status") or {}
        body = failed_status(current, generation, "ReconcileError", message, utc_now())
        if body != current:
            try:
                await self._call(self.api.patch_status, *key, body)
            except Exception:
                log.exception("status of %s/%s not written", *key)

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
                self.announce.event(
                    server, "Normal", verb, f"{verb} {', '.join(done)} {meta['name']}"
                )
        gone = [kind for (_, kind), error in zip(unwanted, deleted, strict=True) if not error]
        if gone:
            self.announce.event(
                server, "Normal", "Deleted", f"Deleted {', '.join(gone)} {meta['name']}"
            )
        self.announce.apply_errors(server, key, errors)
        changed = [o.kind for o in applied if o.verb]
        return changed + gone, errors, [o.kind for o in applied if o.unavailable]
