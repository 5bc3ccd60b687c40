"""Run the app under uvicorn with Kubernetes-friendly shutdown.

SIGTERM: readiness turns false at once and new requests get 503 while the listener
stays open (so the Service can take the pod out of rotation); in-flight requests
finish, bounded by `drain_timeout_seconds`; then uvicorn shuts down and the process
exits 0. A second SIGTERM or a SIGINT stops at once. A model that cannot be loaded
(it does not fit, checksum mismatch, no model directory, ...) stops the process with
exit code 1, after writing why in one line to the termination-message file.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
from types import FrameType

import uvicorn

from qms_runtime.app import create_app
from qms_runtime.lifecycle import ServerState
from qms_runtime.logs import write_termination_message
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
        super().handle_exit(sig, frame)

    def _start_drain(self) -> None:
        self._drain_task = asyncio.ensure_future(self._drain())

    async def _drain(self) -> None:
        state = self._holder[0]
        state.begin_drain()
        timeout = state.settings.drain_timeout_seconds
        if state.in_flight:
            log.info("waiting up to %.0fs for %d in-flight sequences", timeout, state.in_flight)
            if not await state.wait_idle(timeout):
                log.warning("drain timeout: %d sequences still in flight", state.in_flight)
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
        lifespan="on",
    )
    server = DrainingServer(config, holder)
    server_ref.append(server)
    server.run()
    return 1 if server.failed else 0
