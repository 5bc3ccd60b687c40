"""One reconcile for every trigger: parse -> build -> apply what differs -> status.

A work queue coalesces triggers per server (a burst of child events gives one
reconcile), bounds concurrency and retries failed reconciles with backoff.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pydantic

from .apply import Api, ApiError
from .builders import desired_children, unwanted_kinds
from .diff import differences
from .metrics import QUEUE_DEPTH, RECONCILE_SECONDS, RECONCILES, SERVERS
from .spec import QwenModelServerSpec, parse_spec
from .status import Observed, compute_status, replace_one_at_a_time
from .store import Key, Store

log = logging.getLogger("qms_operator")
# The API server's refusal to create objects in a namespace being deleted.
TERMINATING = "because it is being terminated"
TERMINATING_BACKOFF = 30.0


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _invalid_status(generation: int, previous: dict[str, Any], error: str) -> dict[str, Any]:
    cond = {
        "type": "Stalled",
        "status": "True",
        "reason": "InvalidSpec",
        "message": error,
        "lastTransitionTime": _now(),
        "observedGeneration": generation,
    }
    return {
        **previous,
        "observedGeneration": generation,
        "phase": "Failed",
        "reason": error,
        "conditions": [
            {**cond, "type": "Ready", "status": "False"},
            {**cond, "type": "Reconciling", "status": "False"},
            cond,
        ],
    }


class Reconciler:
    """Brings the children of one server in line with its spec and writes its status."""

    def __init__(self, api: Api, store: Store) -> None:
        self.api = api
        self.store = store
        self._events: set[asyncio.Task[None]] = set()
        # Namespaces being deleted refuse creates: leave their servers alone a while.
        self._terminating: dict[str, float] = {}

    async def _call(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.to_thread(fn, *args)

    async def reconcile(self, key: Key) -> bool:
        """Returns False when it should be retried (an API call failed)."""
        server = self.store.servers.get(key)
        if server is None or server["metadata"].get("deletionTimestamp"):
            return True
        namespace, name = key
        if self._terminating.get(namespace, 0.0) > time.monotonic():
            return True
        meta = server["metadata"]
        generation = meta.get("generation", 0)
        current = server.get("status") or {}
        try:
            spec = parse_spec(server.get("spec") or {})
        except pydantic.ValidationError as exc:
            error = f"invalid spec: {exc.errors()[0]['loc']}: {exc.errors()[0]['msg']}"
            invalid = _invalid_status(generation, current, error)
            if current.get("reason") != error or current.get("observedGeneration") != generation:
                await self._call(self.api.patch_status, namespace, name, invalid)
                self._event(server, "Warning", "InvalidSpec", error)
            return True
        replace_one = replace_one_at_a_time(
            spec, self.store.children(key).get("Deployment"), self.store.pods(key)
        )
        changed, errors = await self._apply_children(server, spec, replace_one)
        if any(TERMINATING in error for error in errors):
            self._terminating[namespace] = time.monotonic() + TERMINATING_BACKOFF
            return True
        seen = Observed(
            generation=generation,
            children=self.store.children(key),
            pods=self.store.pods(key),
            changed=changed,
            errors=errors,
            previous=current.get("conditions", []),
        )
        desired = desired_children(name, namespace, meta["uid"], spec, replace_one)
        status = compute_status(name, namespace, spec, desired, seen, _now())
        body = status.model_dump(by_alias=True, mode="json")
        await self._announce_stall(server, status.conditions, current.get("conditions", []))
        if body != current:
            try:
                await self._call(self.api.patch_status, namespace, name, body)
            except ApiError as exc:
                errors.append(str(exc))
        return not errors

    async def _announce_stall(
        self, server: dict[str, Any], conditions: list[Any], previous: list[dict[str, Any]]
    ) -> None:
        """A Warning Event when the server becomes Stalled, or stalls for a new reason."""
        stalled = next(c for c in conditions if c.type == "Stalled")
        before = next((c for c in previous if c.get("type") == "Stalled"), {})
        if stalled.status == "True" and (
            before.get("status") != "True" or before.get("reason") != stalled.reason
        ):
            self._event(server, "Warning", stalled.reason, stalled.message)

    def _event(self, server: dict[str, Any], type_: str, reason: str, message: str) -> None:
        """Post an Event in the background: it must not slow the reconcile down."""
        task = asyncio.get_running_loop().create_task(
            self._call(self.api.event, server, type_, reason, message)
        )
        self._events.add(task)
        task.add_done_callback(self._events.discard)

    async def _apply_one(
        self, server: dict[str, Any], child: dict[str, Any], existing: dict[str, Any] | None
    ) -> tuple[str, str]:
        """Apply one child: (verb, detail) on success, ("", error) on failure."""
        drift = differences(child, existing) if existing is not None else []
        try:
            applied = await self._call(self.api.apply, child)
        except ApiError as exc:
            return "", str(exc)
        self.store.put_child(applied)
        if existing is None:
            return "Created", child["kind"]
        return "Updated", f"{child['kind']} ({', '.join(drift[:3])} differed)"

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
        self, server: dict[str, Any], spec: QwenModelServerSpec, replace_one: bool
    ) -> tuple[list[str], list[str]]:
        """Apply the children that differ and delete the unwanted ones, all at once.

        Returns the kinds changed and the errors. One Event per verb names them all.
        """
        meta = server["metadata"]
        live = self.store.children((meta["namespace"], meta["name"]))
        wanted = [
            child
            for child in desired_children(
                meta["name"], meta["namespace"], meta["uid"], spec, replace_one
            )
            if child["kind"] not in live or differences(child, live[child["kind"]])
        ]
        unwanted = [(api, kind) for api, kind in unwanted_kinds(spec) if kind in live]
        applied = await asyncio.gather(
            *(self._apply_one(server, c, live.get(c["kind"])) for c in wanted)
        )
        deleted = await asyncio.gather(
            *(self._delete_one(api, kind, live[kind]) for api, kind in unwanted)
        )
        errors = [detail for verb, detail in applied if not verb] + [e for e in deleted if e]
        for verb in ("Created", "Updated"):
            done = [detail for v, detail in applied if v == verb]
            if done:
                self._event(server, "Normal", verb, f"{verb} {', '.join(done)} {meta['name']}")
        gone = [kind for (_, kind), error in zip(unwanted, deleted, strict=True) if not error]
        if gone:
            self._event(server, "Normal", "Deleted", f"Deleted {', '.join(gone)} {meta['name']}")
        for error in errors:
            if TERMINATING not in error:
                self._event(server, "Warning", "ApplyFailed", error)
        changed = [c["kind"] for c, (verb, _) in zip(wanted, applied, strict=True) if verb]
        return changed + gone, errors


class WorkQueue:
    """Coalescing, bounded, retrying queue of server keys."""

    def __init__(
        self,
        work: Callable[[Key], Awaitable[bool]],
        concurrency: int = 16,
        delay: float = 0.25,
        retry_base: float = 1.0,
        retry_max: float = 60.0,
    ) -> None:
        self._work = work
        self._limit = asyncio.Semaphore(concurrency)
        self._delay = delay
        self._retry = (retry_base, retry_max)
        self._pending: set[Key] = set()
        self._running: set[Key] = set()
        self._dirty: set[Key] = set()
        self._failures: dict[Key, int] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def enqueue(self, key: Key, delay: float | None = None) -> None:
        if key in self._running:
            self._dirty.add(key)
            return
        if key in self._pending:
            return
        self._pending.add(key)
        QUEUE_DEPTH.set(len(self._pending))
        task = asyncio.get_running_loop().create_task(self._run(key, delay))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, key: Key, delay: float | None) -> None:
        await asyncio.sleep(self._delay if delay is None else delay)
        async with self._limit:
            self._pending.discard(key)
            QUEUE_DEPTH.set(len(self._pending))
            self._running.add(key)
            ok = await self._once(key)
            self._running.discard(key)
        if key in self._dirty:
            self._dirty.discard(key)
            self.enqueue(key)
        elif not ok:
            failures = self._failures.get(key, 0) + 1
            self._failures[key] = failures
            base, most = self._retry
            self.enqueue(key, delay=min(most, base * 2 ** (failures - 1)))
        else:
            self._failures.pop(key, None)

    async def _once(self, key: Key) -> bool:
        started = time.perf_counter()
        try:
            ok = await self._work(key)
        except Exception:
            log.exception("reconcile of %s/%s failed", *key)
            ok = False
        RECONCILE_SECONDS.observe(time.perf_counter() - started)
        RECONCILES.labels(result="ok" if ok else "error").inc()
        return ok

    def idle(self) -> bool:
        return not (self._pending or self._running)


async def resync(store: Store, queue: WorkQueue, every: float) -> None:
    """Reconcile every known server periodically (drift that sent no event, lost events)."""
    while True:
        await asyncio.sleep(every)
        SERVERS.set(len(store.servers))
        for key in list(store.servers):
            queue.enqueue(key)
