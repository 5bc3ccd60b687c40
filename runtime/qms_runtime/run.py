"""Run the app under uvicorn with Kubernetes-friendly shutdown.

SIGTERM (after the pod's preStop sleep, when kube-proxy already sends new connections
elsewhere): readiness turns false at once; requests still arriving on kept-alive
connections are answered, with `Connection: close`, so each client's next request
opens a connection to another pod. When no request is in progress and every open
connection has been idle longer than a client pool keeps an idle connection
(`drain_idle_seconds`, default 6), or `drain_timeout_seconds` passed, uvicorn shuts down and the
process exits 0, its termination message saying how many requests it drained. A
second SIGTERM or a SIGINT stops at once. A model that cannot be loaded (it does not
fit, checksum mismatch, no model directory, ...) stops the process with exit code 1,
after writing why in one line to the termination-message file.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
import time
from types import FrameType

import uvicorn

from qms_runtime.app import create_app
from qms_runtime.lifecycle import ServerState
from qms_runtime.logs import write_termination_message
from qms_runtime.settings import DRAIN_IDLE_SECONDS as DRAIN_IDLE_SECONDS
from qms_runtime.settings import RuntimeSettings

log = logging.getLogger(__name__)


class DrainingServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, state_holder: list[ServerState]) -> None:
        super().__init__(config)
        self._holder = state_holder
        self._loop: asyncio.AbstractEventLoop | None = None
        self._drain_task: asyncio.Task[None] | None = None
        self.failed = False

    async def serve(self, sockets: list[socket.socket] | None = None) -> None:
        self._loop = asyncio.get_running_loop()
        await super().serve(sockets)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if sig == signal.SIGTERM and self._drain_task is None and self._loop is not None:
            # Not recorded as a captured signal: uvicorn would re-raise it and exit 143.
            self._loop.call_soon_threadsafe(self._start_drain)
            return
        if self._holder:
            state = self._holder[0]
            write_termination_message(
                state.settings.termination_log_path,
                f"qms-runtime: stopped at once by {signal.Signals(sig).name} with "
                f"{state.connections.active} requests in progress",
            )
        super().handle_exit(sig, frame)

    def _start_drain(self) -> None:
        self._drain_task = asyncio.ensure_future(self._drain())

    def _open_connections(self) -> list[tuple[str, int] | None]:
        peers = []
        for protocol in self.server_state.connections:
            client = getattr(protocol, "client", None)
            peers.append((str(client[0]), int(client[1])) if client else None)
        return peers

    async def _drain(self) -> None:
        state = self._holder[0]
        state.begin_drain()
        t0 = time.monotonic()
        timeout = state.settings.drain_timeout_seconds
        connections = state.connections
        log.info(
            "draining: %d requests in progress, %d connections open; waiting up to %.0fs",
            connections.active,
            len(self.server_state.connections),
            timeout,
        )
        timed_out = True
        while time.monotonic() - t0 < timeout:
            quiet = connections.quiet(self._open_connections(), state.settings.drain_idle_seconds)
            if quiet and not state.in_flight:
                timed_out = False
                break
            await asyncio.sleep(0.05)
        took = time.monotonic() - t0
        words = (
            f"qms-runtime: drained {connections.answered_while_draining} requests in "
            f"{took:.1f}s after SIGTERM"
        )
        if timed_out:
            log.warning(
                "drain timeout: %d requests, %d sequences still in progress",
                connections.active,
                state.in_flight,
            )
            words += f", stopped at the drain timeout with {connections.active} in progress"
        log.info(words.removeprefix("qms-runtime: "))
        write_termination_message(state.settings.termination_log_path, f"{words}, exit 0")
        self.should_exit = True

    def fail(self, error: BaseException) -> None:
        """Called by the loader on a fatal error: stop with a non-zero exit."""
        log.error("fatal: %s", error)
        state = self._holder[0]
        write_termination_message(state.settings.termination_log_path, f"qms-runtime: {error}")
        self.failed = True
        self.should_exit = True


def serve(settings: RuntimeSettings) -> int:
    holder: list[ServerState] = []
    server_ref: list[DrainingServer] = []
    app = create_app(settings, on_fatal=lambda error: server_ref[0].fail(error))
    holder.append(app.state.qms)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=5,
        timeout_keep_alive=int(settings.keep_alive_seconds),
        lifespan="on",
    )
    server = DrainingServer(config, holder)
    server_ref.append(server)
    server.run()
    return 1 if server.failed else 0
