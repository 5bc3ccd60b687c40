"""The app factory: `create_app(settings)` builds the FastAPI app; its lifespan owns the engine.

Nothing is parsed or loaded at import time. Loading runs in the background so that
`/health` answers (200) while `/ready` is still 503.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI

from qms_runtime.api.http.errors import install_error_handlers
from qms_runtime.api.http.middleware import RequestContextMiddleware
from qms_runtime.api.http.openapi import install_openapi
from qms_runtime.api.http.routes import router
from qms_runtime.lifecycle import ServerState, ServingFactory
from qms_runtime.metrics import RuntimeMetrics
from qms_runtime.settings import RuntimeSettings

log = logging.getLogger(__name__)


def create_app(
    settings: RuntimeSettings,
    on_fatal: Callable[[BaseException], None] | None = None,
    serving_factory: ServingFactory | None = None,
) -> FastAPI:
    """`serving_factory` replaces loading the model (API tests with a fake backend)."""
    metrics = RuntimeMetrics(settings.model_name)
    state = ServerState(settings=settings, metrics=metrics, serving_factory=serving_factory)
    if on_fatal is not None:
        state.on_fatal = on_fatal

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        loading = asyncio.create_task(state.load())
        try:
            yield
        finally:
            state.begin_drain()
            if not loading.done():
                loading.cancel()
            if state.engine is not None:
                await asyncio.to_thread(state.engine.stop, settings.drain_timeout_seconds)
            if state.media is not None:
                state.media.close()
            log.info("stopped")

    app = FastAPI(
        title="QMS runtime",
        version="v1",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url="/openapi.json",
    )
    app.state.qms = state
    install_error_handlers(app, settings.retry_after_seconds)
    app.include_router(router)
    install_openapi(app)
    app.add_middleware(RequestContextMiddleware, metrics=metrics, connections=state.connections)
    return app
