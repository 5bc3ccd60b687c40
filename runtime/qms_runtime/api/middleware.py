"""Per-request context: request id (logs and `X-Request-ID`), request counters, access log."""

from __future__ import annotations

import logging
import time
import uuid

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


class RequestContextMiddleware:
    def __init__(self, app: ASGIApp, metrics: RuntimeMetrics) -> None:
        self.app = app
        self.metrics = metrics

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

        async def send_with_context(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                message.setdefault("headers", [])
                message["headers"] = [
                    *message["headers"],
                    (b"x-request-id", request_id.encode("latin-1")),
                ]
                self.metrics.count_request(endpoint, status)
            await send(message)

        try:
            await self.app(scope, receive, send_with_context)
        finally:
            if path not in _QUIET or status >= 500:
                log.info(
                    "%s %s %d",
                    scope["method"],
                    path,
                    status,
                    extra={"status": status, "duration_s": round(time.perf_counter() - started, 4)},
                )
            request_id_var.reset(token)
