"""A FAKE generation backend (and a FAKE media side) for in-process API tests: no model,
no batching loop, no processor.

It answers every sequence with the same scripted token ids (cut at max_tokens, or at
the first end-of-sequence id unless ignore_eos), one token per chunk, and admits at
most `capacity` sequences at once, like the engine's admission. Everything above the
backend is the real thing: the app, routes, boundary, protocol, serving, the tiny
model's real tokenizer and chat template, and api/serve/events.py's event path. `FakeMedia`
stands in for Qwen3-Omni's processor and speech (types.MediaBackend): the request's
media are really decoded (qms_runtime.media) before it sees them.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
from fastapi.testclient import TestClient

from qms_runtime.api.serve.prepared import TextModel
from qms_runtime.api.serve.serving import OpenAIServing
from qms_runtime.app import create_app
from qms_runtime.finish import FinishReason
from qms_runtime.metrics import RuntimeMetrics
from qms_runtime.settings import RuntimeSettings
from qms_runtime.types import (
    EngineOverloaded,
    MediaInputs,
    Prompt,
    SamplingParams,
    TokenChunk,
    TokenLogprob,
)


class FakeAdmission:
    def __init__(self, backend: FakeBackend, sequences: int) -> None:
        self._backend = backend
        self._sequences = sequences
        self._released = False

    def release(self) -> None:
        if not self._released:
            self._released = True
            self._backend.admitted -= self._sequences

    def __enter__(self) -> FakeAdmission:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


class FakeBackend:
    """Named a fake: it stands in for the engine so the API layer runs without a model."""

    def __init__(
        self,
        script: list[int],
        eos_token_ids: tuple[int, ...],
        capacity: int,
        media: FakeMedia | None = None,
    ) -> None:
        self.script = script
        self.media = media  # the media side (types.GenerationBackend.media), None: text only
        self.eos_token_ids = eos_token_ids
        self.capacity = capacity
        self.admitted = 0
        self.prompts: list[Prompt] = []  # every prompt it was given, in order
        self.params: list[SamplingParams] = []  # and the sampling parameters with it
        self.cancelled = 0
        self.scored: list[list[int]] = []  # every sequence score() was given

    async def score(self, prompt_ids: list[int], top: int) -> list[TokenLogprob | None]:
        """Scripted log-probabilities: the token at position i has -i/10, its alternatives
        are the next ids, each 0.5 lower."""
        self.scored.append(list(prompt_ids))
        result: list[TokenLogprob | None] = [None]
        for i, token in enumerate(prompt_ids[1:], start=1):
            alternatives = tuple((token + j, -i / 10 - 0.5 * j) for j in range(top))
            result.append(TokenLogprob(token, -i / 10, alternatives))
        return result

    def admit(self, sequences: int) -> FakeAdmission:
        if self.admitted + sequences > self.capacity:
            raise EngineOverloaded(
                f"{self.admitted} sequences in flight; at most {self.capacity} are admitted"
            )
        self.admitted += sequences
        return FakeAdmission(self, sequences)

    async def tokens(
        self, prompt: Prompt, params: SamplingParams, choice: int
    ) -> AsyncGenerator[TokenChunk, None]:
        self.prompts.append(prompt)
        self.params.append(params)
        answer: list[int] = []
        for token in self.script:
            if len(answer) == params.max_new_tokens:
                break
            answer.append(token)
            if not params.ignore_eos and token in self.eos_token_ids:
                break
        finished = False
        try:
            for i, token in enumerate(answer):
                await asyncio.sleep(0)
                finished = i == len(answer) - 1
                yield TokenChunk([token], finished)
        finally:
            if not finished:
                self.cancelled += 1


class FakeMedia:
    """Named a fake: it stands in for Qwen3-Omni's processor and talker (a
    `types.MediaBackend`). `prepare` gives `base + per_item` placeholder ids per media
    item after the prompt's text tokens; `speak` answers `script` with a silent waveform
    of `samples` samples."""

    def __init__(self, tokenizer: Any, speech: bool, script: list[int], samples: int) -> None:
        self._tokenizer = tokenizer
        self._speech = speech
        self.script = script
        self.samples = samples
        self.prepared: list[tuple[MediaInputs, dict[str, Any]]] = []  # what prepare was given
        self.spoken: list[tuple[str, SamplingParams]] = []

    @property
    def speech(self) -> bool:
        return self._speech

    @property
    def voices(self) -> list[str]:
        return ["chelsie", "ethan"] if self._speech else []

    def prepare(
        self,
        media: MediaInputs,
        template_kwargs: dict[str, Any] | None = None,
        add_generation_prompt: bool = True,
        continue_final_message: bool = False,
        add_special_tokens: bool = False,
    ) -> Any:
        import torch

        self.prepared.append((media, dict(template_kwargs or {})))
        text = " ".join(
            part["text"]
            for message in media.messages
            for part in (message["content"] if isinstance(message["content"], list) else [])
            if part.get("type") == "text"
        )
        items = len(media.images) + len(media.audio) + len(media.videos)
        ids = list(self._tokenizer.encode(text or "media")) + [7] * (4 * items)
        return {"input_ids": torch.tensor([ids])}

    async def speak(
        self, inputs: Any, params: SamplingParams, voice: str, arrival: float
    ) -> tuple[list[int], FinishReason, np.ndarray[Any, Any]]:
        self.spoken.append((voice, params))
        tokens = self.script[: params.max_new_tokens]
        return tokens, "length", np.zeros(self.samples, dtype=np.float32)


@contextmanager
def fake_app(
    model_dir: Path,
    backend: FakeBackend,
    max_model_len: int,
    **settings: Any,
) -> Iterator[tuple[TestClient, RuntimeMetrics]]:
    """The runtime's app over `backend` (and its media side), with the tokenizer of `model_dir`,
    in process."""
    from transformers import AutoTokenizer

    tokenizer: Any = AutoTokenizer.from_pretrained(str(model_dir))
    config = RuntimeSettings(model_dir=model_dir, warmup=False, **settings)
    made: list[RuntimeMetrics] = []

    def serving(runtime: RuntimeSettings, metrics: RuntimeMetrics) -> OpenAIServing:
        made.append(metrics)
        model = TextModel(tokenizer, max_model_len, len(tokenizer))
        return OpenAIServing(
            backend,
            model,
            runtime.model_name,
            metrics,
            runtime.retry_after_seconds,
            settings=runtime,
        )

    app = create_app(config, serving_factory=serving)
    with TestClient(app) as client:
        yield client, made[0]
