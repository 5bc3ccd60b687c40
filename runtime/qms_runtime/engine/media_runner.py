"""Qwen3-Omni requests with media or speech out: the processor and a separate (non-CB) path.

transformers' continuous batching takes token ids only: no pixel values, audio features
or the 3-D m-RoPE positions that media need. Requests with media therefore run here,
one at a time on a worker thread, through `thinker.generate` with the processor's
inputs (and through the full model's `generate(return_audio=True)` for speech out),
while text-only requests stay on the continuous-batching engine. Both share the
engine's admission count (429) and the same weights.

The two threads never run the model at the same time: every forward pass of a media
request (prefill with its encoders, then each decoding step) holds the batching loop
between two of its steps (`Engine.pause`, transformers' `manager.pause()`), after
`media_step_interval` batch steps while text runs. So media and text interleave step by
step: the batch keeps its requests and cache, neither waits for the other to finish,
and per-call state the model keeps on itself is not shared (compat.isolate_rope_state).
Its tokens go through the same event path as the batch's (api/serve/events.py). `OmniMedia` is
the `types.MediaBackend` the API layer uses.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import functools
import logging
import threading
from collections.abc import AsyncGenerator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager
from typing import Any

import numpy as np
import torch

from qms_runtime import compat
from qms_runtime.engine.controls import generate_kwargs_with
from qms_runtime.engine.sampling import generate_kwargs
from qms_runtime.finish import FinishReason, after_tokens
from qms_runtime.metrics import RuntimeMetrics, SequenceObserver
from qms_runtime.settings import RuntimeSettings
from qms_runtime.types import MediaInputs, SamplingParams, TokenChunk

log = logging.getLogger(__name__)

# transformers 5.24 crashes (empty stack) when the talker emits its end code first.
_TALKER_MIN_NEW_TOKENS = 2


def processor_kwargs(settings: RuntimeSettings) -> dict[str, Any]:
    """What every processor call gets: the server's mm_processor_kwargs; video frames are
    sampled by video.py already (do_sample_frames off) at video_fps."""
    kwargs = copy.deepcopy(settings.mm_processor_kwargs)
    videos = kwargs.setdefault("videos_kwargs", {})
    videos.setdefault("fps", settings.video_fps)
    videos.setdefault("do_sample_frames", False)
    return kwargs


class _Cancelled:
    """A stopping criterion that ends generation once the client has gone."""

    def __init__(self) -> None:
        self.event = threading.Event()

    def __call__(
        self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs: Any
    ) -> torch.Tensor:
        return torch.full((input_ids.shape[0],), self.event.is_set(), dtype=torch.bool)


class _QueueStreamer:
    """transformers streamer -> asyncio queue (skips the prompt, which comes first)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, queue: asyncio.Queue[Any]) -> None:
        self._put: Callable[[Any], object] = lambda item: loop.call_soon_threadsafe(
            queue.put_nowait, item
        )
        self._prompt_seen = False

    def put(self, value: torch.Tensor) -> None:
        if not self._prompt_seen:
            self._prompt_seen = True
            return
        self._put([int(token) for token in value.reshape(-1).tolist()])

    def end(self) -> None:
        self._put(None)


class OmniMedia:
    """The processor and the worker that runs media requests and speech out."""

    def __init__(
        self,
        processor: Any,
        thinker: Any,
        owner: Any | None,
        eos_token_ids: tuple[int, ...],
        metrics: RuntimeMetrics,
        call_kwargs: dict[str, Any] | None = None,
        pause: Callable[[], AbstractContextManager[None]] | None = None,
        controls_for: Callable[[list[int], SamplingParams, int], Any] | None = None,
    ) -> None:
        self.processor = processor
        self._controls_for = controls_for  # Engine.controls_for: the batch's own controls
        self._call_kwargs = call_kwargs or {}
        self._thinker = thinker
        self._owner = owner  # the full model with talker + code2wav; None: no speech out
        self._eos = eos_token_ids
        self._metrics = metrics
        compat.isolate_rope_state(thinker)
        initializer = None
        if pause is not None:
            marker = compat.pause_batch_on_media_threads(thinker, pause)
            initializer = functools.partial(setattr, marker, "media", True)
        self._worker = ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="qms-media", initializer=initializer
        )

    @property
    def speech(self) -> bool:
        return self._owner is not None

    @property
    def voices(self) -> list[str]:
        if self._owner is None:
            return []
        return sorted(self._owner.config.talker_config.speaker_id)

    def prepare(
        self,
        media: MediaInputs,
        template_kwargs: dict[str, Any] | None = None,
        add_generation_prompt: bool = True,
        continue_final_message: bool = False,
        add_special_tokens: bool = False,
    ) -> Any:
        """Processor inputs (input_ids with expanded placeholders, pixel values, features);
        `template_kwargs` (tools, chat_template_kwargs) go to the chat template."""
        processor = self.processor
        text = processor.tokenizer.apply_chat_template(
            media.messages,
            chat_template=processor.chat_template,
            add_generation_prompt=add_generation_prompt,
            continue_final_message=continue_final_message,
            tokenize=False,
            **(template_kwargs or {}),
        )
        return processor(
            text=[text],
            images=media.images or None,
            audio=media.audio or None,
            videos=media.videos or None,
            return_tensors="pt",
            add_special_tokens=add_special_tokens,
            **self._call_kwargs,
        )

    def _run(
        self, inputs: Any, params: SamplingParams, choice: int, streamer: Any, stop: _Cancelled
    ) -> None:
        from transformers import StoppingCriteriaList

        device = self._thinker.device
        kwargs = generate_kwargs(params, self._eos, choice=choice)
        if self._controls_for is not None:
            prompt = [int(t) for t in inputs["input_ids"][0].tolist()]
            controls = self._controls_for(prompt, params, choice)
            if controls is not None:
                kwargs = generate_kwargs_with(kwargs, controls)
        try:
            with torch.inference_mode():
                self._thinker.generate(
                    **inputs.to(device),
                    **kwargs,
                    streamer=streamer,
                    stopping_criteria=StoppingCriteriaList([stop]),
                )
        except BaseException:
            streamer.end()  # wake the stream, which then raises what generate raised
            raise

    async def tokens(
        self, inputs: Any, params: SamplingParams, choice: int = 0
    ) -> AsyncGenerator[TokenChunk, None]:
        """Generate with media (`choice` of its request, as in Engine.tokens); yields new
        tokens as they come; stops if closed early."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Any] = asyncio.Queue()
        streamer = _QueueStreamer(loop, queue)
        stop = _Cancelled()
        future = loop.run_in_executor(
            self._worker, self._run, inputs, params, choice, streamer, stop
        )
        try:
            while True:
                new = await queue.get()
                if new is None:
                    await future  # raises what generation raised
                    yield TokenChunk([], finished=True)
                    return
                yield TokenChunk(new)
        finally:
            stop.event.set()
            if not future.done():
                future.add_done_callback(lambda done: done.exception())  # no "never retrieved"
                # The caller holds the model alone until generate has really stopped.
                with contextlib.suppress(BaseException):
                    await asyncio.shield(future)

    def _speak(self, inputs: Any, params: SamplingParams, voice: str) -> tuple[Any, Any]:
        owner: Any = self._owner
        with torch.inference_mode():
            sequences, waveform = owner.generate(
                **inputs.to(self._thinker.device),
                speaker=voice,
                return_audio=True,
                talker_min_new_tokens=_TALKER_MIN_NEW_TOKENS,
                talker_do_sample=False,  # greedy codec tokens: reproducible speech
                **generate_kwargs(params, self._eos, prefix="thinker_"),
            )
        return sequences, waveform

    async def speak(
        self, inputs: Any, params: SamplingParams, voice: str, arrival: float
    ) -> tuple[list[int], FinishReason, np.ndarray[Any, Any]]:
        """Text tokens, finish reason and spoken waveform (float32, 24 kHz) of one answer."""
        observer = SequenceObserver(self._metrics, arrival)
        loop = asyncio.get_running_loop()
        sequences, waveform = await loop.run_in_executor(
            self._worker, self._speak, inputs, params, voice
        )
        prompt_len = int(inputs["input_ids"].shape[1])
        tokens = [int(t) for t in sequences[0, prompt_len:].tolist()]
        self._metrics.generation_tokens.inc(len(tokens))  # all at once: no first token to time
        observer.finished()
        wave = np.zeros(0, np.float32) if waveform is None else waveform.float().cpu().numpy()
        return (
            tokens,
            after_tokens(tokens, self._eos, params.stop_token_ids, params.ignore_eos),
            wave.reshape(-1),
        )

    def close(self) -> None:
        self._worker.shutdown(wait=False, cancel_futures=True)
