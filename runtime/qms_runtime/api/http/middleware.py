"""Per-request context: request id (logs and `X-Request-ID`), request counters, access log,
and the connections ledger a drain waits on.

A drain (SIGTERM, run.py) must not fail clients that keep connections alive: kube-proxy
keeps an established connection on its old pod after the pod left the endpoints, so
the pod keeps answering on it while it drains, and each answer carries
`Connection: close` so that the client opens its next connection to another pod.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Iterable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from qms_runtime.logs import request_id_var
from qms_runtime.metrics import INFERENCE_ENDPOINTS, RuntimeMetrics

log = logging.getLogger("qms_runtime.access")

# Endpoints counted by name; anything else is "other" so scanners cannot blow up labels.
ENDPOINTS = INFERENCE_ENDPOINTS | {
    "/health",
    "/ready",
    "/metrics",
    "/v1/models",
    "/tokenize",
    "/detokenize",
}
_QUIET = frozenset({"/health", "/ready", "/metrics"})
Client = tuple[str, int]


class Connections:
    """Requests in progress and each client connection's last activity.

    Before a drain it only counts; once ``begin_drain`` is called, answers carry
    `Connection: close` and the ones finished are counted for the last words.
    """

    KEEP = 4096  # connections remembered at most (older idle ones are forgotten)

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self.active = 0
        self.last_seen: dict[Client, float] = {}
        self.draining_since: float | None = None
        self.answered_while_draining = 0
        self.last_activity = float("-inf")  # any request's start or end, on any connection

    @property
    def draining(self) -> bool:
        return self.draining_since is not None

    def begin_drain(self) -> None:
        if self.draining_since is None:
            self.draining_since = self._clock()

    def started(self, client: Client | None) -> None:
        self.active += 1
        self.last_activity = self._clock()
        if client is not None:
            self.last_seen[client] = self.last_activity

    def finished(self, client: Client | None) -> None:
        self.active -= 1
        now = self._clock()
        self.last_activity = now
        if self.draining:
            self.answered_while_draining += 1
        if client is not None:
            self.last_seen[client] = now
        if len(self.last_seen) > self.KEEP:
            oldest = sorted(self.last_seen, key=self.last_seen.__getitem__)
            for gone in oldest[: len(oldest) - self.KEEP // 2]:
                del self.last_seen[gone]

    def quiet(self, open_connections: Iterable[Client | None], idle_seconds: float) -> bool:
        """No request in progress, none begun or ended for ``idle_seconds`` on any
        connection (a proxy that has not yet seen the pod leave still sends new
        connections here: they are answered), and every connection still open idle that
        long (a client's pool drops a connection idle past its keep-alive expiry:
        closing it then cannot race a request on it)."""
        if self.active:
            return False
        now = self._clock()
        if now - self.last_activity < idle_seconds:
            return False
        since = self.draining_since if self.draining_since is not None else now
        return all(
            now - self.last_seen.get(c, since) >= idle_seconds
            for c in open_connections
            if c is not None
        )


class RequestContextMiddleware:
    def __init__(self, app: ASGIApp, metrics: RuntimeMetrics, connections: Connections) -> None:
        self.app = app
        self.metrics = metrics
        self.connections = connections

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        endpoint = path if path in ENDPOINTS else "other"
        headers = dict(scope.get("headers") or [])
        given = headers.get(b"x-request-id", b"").decode("latin-1")[:128]
        request_id = given or uuid.uuid4().hex
        token = request_id_var.set(request_id)
        started = time.perf_counter()
        status = 500
        client = scope.get("client")
        peer = (str(client[0]), int(client[1])) if client else None
        # Probes and scrapes come every few seconds from the kubelet and Prometheus,
        # whatever the pod's state: they neither keep a drain waiting nor count in it.
        counted = path not in _QUIET
        if counted:
            self.connections.started(peer)

        async def send_with_context(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                message.setdefault("headers", [])
                message["headers"] = [
                    *message["headers"],
                    (b"x-request-id", request_id.encode("latin-1")),
                ]
                if self.connections.draining:  # reconnect, to a pod that is not leaving
                    message["headers"].append((b"connection", b"close"))
                self.metrics.count_request(endpoint, status)
            await send(message)

        try:
            await self.app(scope, receive, send_with_context)
        finally:
            if counted:
                self.connections.finished(peer)
            if path not in _QUIET or status >= 500:
                log.info(
                    "%s %s %d",
                    scope["method"],
                    path,
                    status,
                    extra={"status": status, "duration_s": round(time.perf_counter() - started, 4)},
                )
            request_id_var.reset(token)
