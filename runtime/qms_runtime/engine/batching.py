"""One model, one transformers continuous-batching manager, an asyncio bridge.

The manager (transformers 5.24 `init_continuous_batching`) runs the batch loop in its
own thread and calls our per-request handler on the event loop. What it leaves to us:

- admission: its queue bound is not an admission limit, so `admit()` keeps our own
  count and raises `EngineOverloaded` (429) past max_batch_size + max_queued_requests;
- streaming events are cumulative: `stream()` yields only the new tokens;
- `cancel_request` sends no final event: `_drop()` removes the handler and the stream
  itself, so a client that goes away frees its batch slot at the next step.

Temperature, top-k and top-p are per request (`per_request_processors`, sampling.py).
What transformers has no per-request processor for (penalties, logit_bias, min_tokens,
min_p, grammars, log-probabilities) and seeded sampling (OpenAI `seed`: picked by
Gumbel-max with noise of the sequence's own, so its tokens do not depend on what else
is in the batch) are QMS's per-sequence controls (engine/controls.py), run by a first and
a last processor (compat.use_sequence_controls). What the manager does not offer
publicly is reached through qms_runtime.compat only.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import math
import threading
from collections.abc import AsyncGenerator, Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

from qms_runtime import compat
from qms_runtime.engine import controls as seq_controls
from qms_runtime.engine.sampling import cb_request_kwargs, choice_seed
from qms_runtime.metrics import RuntimeMetrics
from qms_runtime.models.loading import LoadedModel
from qms_runtime.settings import RuntimeSettings
from qms_runtime.types import (
    EngineOverloaded,
    EngineUnavailable,
    GenerationFailed,
    SamplingParams,
    TokenChunk,
)

log = logging.getLogger(__name__)

_CPU_MAX_BATCHED_TOKENS = 512


def _all_full_attention(config: Any) -> bool:
    """Whether every layer is full attention: transformers shares prefix pages only then
    (its sliding-window page allocator cannot share). Its grouping, from the config."""
    text = config.get_text_config()
    layer_types = getattr(text, "layer_types", None)
    if layer_types is None:
        return getattr(text, "sliding_window", None) is None
    return all(kind == "full_attention" for kind in layer_types)


def cb_config_kwargs(settings: RuntimeSettings, max_model_len: int, on_gpu: bool) -> dict[str, Any]:
    """The `transformers.ContinuousBatchingConfig` arguments the engine starts with (pure:
    the fit check sizes transformers' cache from the same ones, before loading)."""
    batched_tokens = settings.max_batched_tokens or (None if on_gpu else _CPU_MAX_BATCHED_TOKENS)
    cb_kwargs: dict[str, Any] = dict(
        max_batch_tokens=batched_tokens,
        max_requests_per_batch=settings.max_batch_size,
        per_request_processors=True,
        auto_switch_to_flash=on_gpu,
        # Our logits processors (sampling.py: top-k/top-p fast paths, seeded rows) look
        # at the batch on the host at every step; a captured CUDA graph would replay
        # the first batch's decisions. So no graphs, also when flash attention is used.
        use_cuda_graph=False,
        allow_block_sharing=settings.prefix_caching,
        scheduler_type=settings.scheduler,
    )
    if settings.kv_cache_blocks is not None:
        cb_kwargs.update(num_blocks=settings.kv_cache_blocks)
    if on_gpu and settings.kv_cache_memory_fraction is not None:
        cb_kwargs.update(max_memory_percent=settings.kv_cache_memory_fraction)
    if not on_gpu:
        # No memory probing on CPU: room for a full batch of full-length sequences.
        page = settings.page_size
        blocks = math.ceil(settings.max_batch_size * max_model_len / page) + 4
        cb_kwargs.setdefault("num_blocks", blocks)
        cb_kwargs.update(page_size=page, use_async_batching=False)
    return cb_kwargs


class Admission:
    """Slots held by one HTTP request; `release()` is idempotent."""

    def __init__(self, engine: Engine, sequences: int) -> None:
        self._engine = engine
        self._sequences = sequences
        self._released = False

    def release(self) -> None:
        if not self._released:
            self._released = True
            self._engine._release(self._sequences)

    def __enter__(self) -> Admission:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


class Engine:
    def __init__(self, loaded: LoadedModel, settings: RuntimeSettings, metrics: RuntimeMetrics):
        self.loaded = loaded
        self._settings = settings
        self._metrics = metrics
        self._capacity = settings.max_batch_size + settings.max_queued_requests
        self._admitted = 0
        self._manager: Any = None
        self._streams: dict[str, asyncio.Queue[Any]] = {}
        self._ids = itertools.count()
        self._idle = asyncio.Event()
        self._idle.set()
        self.steps = 0  # batch steps so far (the batching thread counts them)
        self._stepped = threading.Condition()
        self._paused_at = 0  # `steps` when the last pause ended
        self._controls: dict[int, seq_controls.SequenceControls] = {}
        self.grammars: Any = None  # engine/grammar.Grammars, made on first use

    # ---------------------------------------------------------------- lifecycle
    def start(self) -> None:
        """Create and start the manager (call from the event loop's thread)."""
        import transformers

        generation_config_cls: Any = transformers.GenerationConfig  # untyped constructors
        cb_config_cls: Any = transformers.ContinuousBatchingConfig

        loaded, settings = self.loaded, self._settings
        on_gpu = loaded.device.type == "cuda"
        # The defaults only make the three warpers exist; every request sets its own values.
        generation_config = generation_config_cls(
            do_sample=True,
            temperature=0.7,
            top_k=50,
            top_p=0.9,
            max_new_tokens=16,
            eos_token_id=list(loaded.eos_token_ids),
            pad_token_id=loaded.tokenizer.pad_token_id,
        )
        cb_kwargs = cb_config_kwargs(settings, loaded.max_model_len, on_gpu)
        if not on_gpu:
            compat.use_gqa_sdpa_on_cpu()
        manager = loaded.model.init_continuous_batching(
            generation_config=generation_config,
            continuous_batching_config=cb_config_cls(**cb_kwargs),
        )
        compat.check_manager(manager)
        compat.use_fast_warpers(manager)
        compat.use_argmax_when_one_hot()
        compat.use_sequence_controls(
            manager, self._controls.get, self._adjust_rows, self._pick_rows
        )
        compat.on_each_step(manager, self._stepped_once)
        manager.start()
        self._manager = manager
        self._metrics.bind_engine_gauges(self.running, self.waiting, self.kv_cache_usage)
        sharing = settings.prefix_caching and _all_full_attention(loaded.model.config)
        self._metrics.prefix_caching.labels(self._metrics.model_name).set(int(sharing))
        if sharing:
            state = "on"
        elif settings.prefix_caching:
            state = "off (the model has sliding-window layers)"
        else:
            state = "off (prefix_caching is false)"
        log.info("continuous batching started: %s; prefix caching %s", cb_kwargs, state)

    @staticmethod
    def _adjust_rows(rows: list[tuple[Any, int]], scores: Any) -> Any:
        return seq_controls.adjust([seq_controls.Row(c, pos) for c, pos in rows], scores)

    @staticmethod
    def _pick_rows(rows: list[tuple[Any, int]], scores: Any) -> Any:
        return seq_controls.pick([seq_controls.Row(c, pos) for c, pos in rows], scores)

    def controls_for(
        self, prompt_ids: list[int], params: SamplingParams, choice: int
    ) -> seq_controls.SequenceControls | None:
        """The per-sequence controls a sequence needs, or None (plain sampling)."""
        seeded = params.seed is not None and not params.greedy
        if not (params.controlled or seeded):
            return None
        stream = choice_seed(params.seed, choice) if seeded and params.seed is not None else None
        eos = () if params.ignore_eos else self.loaded.eos_token_ids
        matcher = None
        if params.grammar is not None:
            matcher = self.grammar_compiler().matcher(params.grammar)
        return seq_controls.SequenceControls(
            params, prompt_ids, stream, eos + params.stop_token_ids, matcher
        )

    def grammar_compiler(self) -> Any:
        if self.grammars is None:
            from qms_runtime.engine.grammar import Grammars

            loaded = self.loaded
            self.grammars = Grammars(loaded.tokenizer, loaded.vocab_size, loaded.eos_token_ids)
        return self.grammars

    def _stepped_once(self, batch_size: int) -> None:
        """After every batch step (the batching thread)."""
        if batch_size:
            self._metrics.batch_size.observe(batch_size)
        with self._stepped:
            self.steps += 1
            self._stepped.notify_all()

    def stop(self, timeout: float) -> None:
        """Finish what is in flight (bounded), then stop the batching thread."""
        if self._manager is None:
            return
        self._manager.stop(block=True, timeout=timeout)
        for queue in list(self._streams.values()):
            queue.put_nowait(None)  # wake streams that will never get their final event

    # ------------------------------------------------------------------- state
    @property
    def alive(self) -> bool:
        manager = self._manager
        return manager is not None and compat.is_alive(manager)

    @property
    def admitted(self) -> int:
        return self._admitted

    def running(self) -> float:
        return float(compat.active_requests(self._manager)) if self._manager else 0.0

    def waiting(self) -> float:
        return float(max(0, self._admitted - int(self.running())))

    def kv_cache_usage(self) -> float:
        return compat.kv_cache_usage(self._manager) if self._manager else 0.0

    # --------------------------------------------------------------- admission
    def admit(self, sequences: int) -> Admission:
        """Hold `sequences` slots until the returned admission is released, or raise (429)."""
        if self._admitted + sequences > self._capacity:
            raise EngineOverloaded(
                f"{self._admitted} sequences in flight; at most {self._capacity} are admitted"
            )
        self._admitted += sequences
        self._idle.clear()
        return Admission(self, sequences)

    def _release(self, sequences: int) -> None:
        self._admitted -= sequences
        if self._admitted == 0:
            self._idle.set()

    async def wait_idle(self, timeout: float) -> bool:
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
        except TimeoutError:
            return False
        return True

    @contextmanager
    def pause(self, after_steps: int = 1) -> Iterator[None]:
        """Hold the batching loop between two steps (transformers' `manager.pause()`) so that
        another thread can run the same model; the batch keeps its cache and its requests.

        While text sequences run, wait first until the batch has made `after_steps` steps
        since the last pause ended (a thread that pauses at every step of its own then
        gets one step per `after_steps` batch steps). Call it from a thread other than the
        event loop's and the batching loop's.
        """
        manager = self._manager
        if manager is None or not self.alive:
            raise EngineUnavailable("the batching loop is not running")
        with self._stepped:
            due = self._paused_at + after_steps
            while self.steps < due and self.running() > 0 and self.alive:
                self._stepped.wait(0.05)  # a step notifies; the timeout covers a batch ending
        with ExitStack() as paused:
            try:
                paused.enter_context(manager.pause())
            except RuntimeError as exc:  # the loop stopped meanwhile
                raise EngineUnavailable(f"the batching loop is not running: {exc}") from exc
            try:
                yield
            finally:
                self._paused_at = self.steps

    # -------------------------------------------------------------- generation
    async def tokens(
        self, prompt_ids: list[int], params: SamplingParams, choice: int = 0
    ) -> AsyncGenerator[TokenChunk, None]:
        """Generate one sequence (`choice` of its request: seeded choices differ); yields
        only new tokens; cancels on early exit."""
        manager = self._manager
        if manager is None or not self.alive:
            raise EngineUnavailable("the batching loop is not running")
        key = next(self._ids)
        request_id = f"seq-{key}"
        queue: asyncio.Queue[Any] = asyncio.Queue()
        self._streams[request_id] = queue
        controls = self.controls_for(prompt_ids, params, choice)
        kwargs = cb_request_kwargs(params, self.loaded.vocab_size)
        if controls is not None:
            self._controls[key] = controls
            kwargs["qms_sequence"] = key
        eos: list[int] = [] if params.ignore_eos else list(self.loaded.eos_token_ids)
        eos += [t for t in params.stop_token_ids if t not in eos]
        manager.register_result_handler(request_id, queue.put_nowait)  # before add_request
        finished = False
        try:
            added = manager.add_request(
                list(prompt_ids),
                request_id=request_id,
                max_new_tokens=params.max_new_tokens,
                streaming=True,
                eos_token_id=eos or -1,
                **kwargs,
            )
            if added is None:
                raise EngineUnavailable("the batching loop is stopping")
            seen = 0
            while not finished:
                output = await queue.get()
                if output is None:
                    raise EngineUnavailable("the batching loop stopped")
                if compat.is_failed(output):
                    raise GenerationFailed(output.error or "generation failed")
                generated = output.generated_tokens
                finished = bool(output.is_finished())
                new = list(generated[seen:])  # events are cumulative
                logprobs = controls.take_logprobs(seen, len(new)) if controls else None
                yield TokenChunk(new, finished, logprobs)
                seen = len(generated)
        finally:
            self._controls.pop(key, None)
            self._drop(request_id, cancel=not finished)

    def _drop(self, request_id: str, cancel: bool) -> None:
        self._streams.pop(request_id, None)
        manager = self._manager
        if manager is None:
            return
        compat.drop_result_handler(manager, request_id)
        if cancel:
            manager.cancel_request(request_id)

    async def generate(self, prompt_ids: list[int], params: SamplingParams) -> list[int]:
        """Convenience for warm-up and tests: all tokens of one sequence."""
        tokens: list[int] = []
        async for chunk in self.tokens(prompt_ids, params):
            tokens.extend(chunk.token_ids)
        return tokens
