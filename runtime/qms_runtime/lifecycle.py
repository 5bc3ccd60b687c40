"""The server's lifecycle: loading -> ready -> draining, or failed. One object per app.

It raises `NotReady` (qms_runtime.types) while it cannot serve; the API layer answers 503.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from qms_runtime.api.http.middleware import Connections
from qms_runtime.api.serve.prepared import TextModel
from qms_runtime.api.serve.serving import OpenAIServing
from qms_runtime.engine.backend import ModelBackend
from qms_runtime.engine.batching import Engine, cb_config_kwargs
from qms_runtime.engine.media_runner import OmniMedia, processor_kwargs
from qms_runtime.metrics import RuntimeMetrics
from qms_runtime.models.checksums import listed_size, verify_model_dir
from qms_runtime.models.fit import check_fit, size
from qms_runtime.models.loading import LoadedModel, load_model
from qms_runtime.settings import RuntimeSettings
from qms_runtime.startup import StartupProgress
from qms_runtime.types import NotReady, SamplingParams

# Builds the serving layer without a model: API tests with a fake backend.
ServingFactory = Callable[[RuntimeSettings, RuntimeMetrics], OpenAIServing]

log = logging.getLogger(__name__)

Phase = Literal["loading", "ready", "draining", "failed"]


def _log_fatal(error: BaseException) -> None:
    log.error("the runtime cannot serve: %s", error)


@dataclass
class ServerState:
    settings: RuntimeSettings
    metrics: RuntimeMetrics
    on_fatal: Callable[[BaseException], None] = _log_fatal
    serving_factory: ServingFactory | None = None
    phase: Phase = "loading"
    engine: Engine | None = None
    media: OmniMedia | None = None  # its worker thread is closed at shutdown (app.py)
    serving: OpenAIServing | None = None
    error: str | None = None
    started: float = field(default_factory=time.time)
    connections: Connections = field(default_factory=Connections)
    startup: StartupProgress = field(init=False)

    def __post_init__(self) -> None:
        self.startup = StartupProgress(self.metrics.registry)

    @property
    def ready(self) -> bool:
        engine_alive = self.engine.alive if self.engine is not None else self.serving is not None
        return self.phase == "ready" and engine_alive

    @property
    def max_model_len(self) -> int | None:
        return self.engine.loaded.max_model_len if self.engine is not None else None

    @property
    def in_flight(self) -> int:
        """Sequences admitted and not yet finished (what a drain waits for)."""
        return self.engine.admitted if self.engine is not None else 0

    async def wait_idle(self, timeout: float) -> bool:
        return await self.engine.wait_idle(timeout) if self.engine is not None else True

    @property
    def healthy(self) -> bool:
        """Liveness: the process works and, once started, so does the batching loop."""
        if self.phase == "failed":
            return False
        return self.engine is None or self.engine.alive

    def require_serving(self) -> OpenAIServing:
        """The serving layer, or the NotReady (503) that says why there is none.

        A draining server still answers (with `Connection: close`: the middleware), so
        that a client on a kept-alive connection loses nothing; only /ready says 503.
        """
        if self.phase == "draining" and self.serving is None:
            raise NotReady("the server is shutting down", "draining")
        if self.phase == "failed":
            raise NotReady(f"the model failed to load: {self.error}", "load_failed")
        if self.serving is None or self.phase not in ("ready", "draining"):
            raise NotReady("the model is still loading", "loading")
        return self.serving

    def begin_drain(self) -> None:
        if self.phase == "failed":
            return
        if self.phase != "draining":
            log.info("draining: readiness is now false; answers say Connection: close")
        self.phase = "draining"
        self.connections.begin_drain()

    async def load(self) -> None:
        """Verify, load, start batching and warm up; then ready. Failure is fatal."""
        settings = self.settings
        try:
            if self.serving_factory is not None:
                self.serving = self.serving_factory(settings, self.metrics)
                self.phase = "ready" if self.phase == "loading" else self.phase
                self.startup.begin("ready")
                return
            if settings.check_fit:
                self.startup.begin("checking-fit")
                need = await asyncio.to_thread(check_fit, settings, cb_config_kwargs)
                log.info(
                    "fit check: the model needs about %s (weights %s, continuous batching %s "
                    "in %.0f%% of free memory, headroom %s)",
                    size(need.total),
                    size(need.weights),
                    size(need.batching),
                    100 * need.max_memory_percent,
                    size(need.headroom),
                )
            if settings.verify_checksums:
                log.info("verifying checksums in %s", settings.model_dir)
                await asyncio.to_thread(self._verify)
            else:
                log.warning("checksum verification is disabled")
            self.startup.begin("loading")
            loaded = await asyncio.to_thread(load_model, settings)
            engine = Engine(loaded, settings, self.metrics)
            await asyncio.to_thread(engine.start)
            self.engine = engine
            if settings.warmup:
                self.startup.begin("warming-up")
                prompt = loaded.tokenizer.encode("warm up") or [0]
                await engine.generate(prompt, SamplingParams(max_new_tokens=2))
            if loaded.generation_defaults:
                log.info(
                    "sampling defaults from generation_config.json: %s", loaded.generation_defaults
                )
            media = self.media = _omni_media(loaded, self.metrics, settings, engine)
            self.serving = OpenAIServing(
                ModelBackend(engine, media),
                TextModel(
                    loaded.tokenizer,
                    loaded.max_model_len,
                    loaded.vocab_size,
                    loaded.generation_defaults,
                    engine.grammar_compiler(),
                ),
                settings.model_name,
                self.metrics,
                settings.retry_after_seconds,
                settings=settings,
            )
            if self.phase == "loading":
                self.phase = "ready"
            self.startup.begin("ready")
            log.info(
                "ready: serving %s (%s) after %.1fs",
                settings.model_name,
                loaded.model_type,
                time.time() - self.started,
            )
        except Exception as exc:
            self.phase = "failed"
            self.error = str(exc)
            self.startup.begin("failed")
            self.on_fatal(exc)

    def _verify(self) -> None:
        """Every listed file against the manifest, counted in files and bytes as it goes."""
        model_dir = self.settings.model_dir
        files, nbytes = listed_size(model_dir)
        self.startup.begin("verifying", files, nbytes)
        began = time.monotonic()
        verify_model_dir(
            model_dir,
            lambda path, done, total: self.startup.advance(files=1),
            lambda count: self.startup.advance(nbytes=count),
        )
        log.info(
            "checksums ok: %d files (%.2f GiB) in %.1fs",
            files,
            nbytes / 1024**3,
            time.monotonic() - began,
        )


def _omni_media(
    loaded: LoadedModel, metrics: RuntimeMetrics, settings: RuntimeSettings, engine: Engine
) -> OmniMedia | None:
    if loaded.processor is None:
        return None
    return OmniMedia(
        loaded.processor,
        loaded.model,
        loaded.speech_model,
        loaded.eos_token_ids,
        metrics,
        processor_kwargs(settings),
        pause=functools.partial(engine.pause, settings.media_step_interval),
        controls_for=engine.controls_for,
    )
