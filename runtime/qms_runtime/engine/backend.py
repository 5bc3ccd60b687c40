"""The model's generation backend: text prompts on the continuous-batching engine, media
prompts on the media runner beside it, one admission count for both."""

from __future__ import annotations

from collections.abc import AsyncGenerator

from qms_runtime.engine.batching import Admission, Engine
from qms_runtime.engine.media_runner import OmniMedia
from qms_runtime.engine.scoring import PromptScorer
from qms_runtime.types import EngineUnavailable, Prompt, SamplingParams, TokenChunk, TokenLogprob


class ModelBackend:
    """A `GenerationBackend` (qms_runtime.types) over a loaded model."""

    def __init__(self, engine: Engine, media: OmniMedia | None) -> None:
        self.engine = engine
        self.media = media
        self.eos_token_ids = engine.loaded.eos_token_ids
        self._scorer = PromptScorer(engine.loaded.model, engine.pause)

    def admit(self, sequences: int) -> Admission:
        return self.engine.admit(sequences)

    def tokens(
        self, prompt: Prompt, params: SamplingParams, choice: int
    ) -> AsyncGenerator[TokenChunk, None]:
        if prompt.media_inputs is None:
            return self.engine.tokens(prompt.token_ids, params, choice)
        if self.media is None:
            raise EngineUnavailable("this model has no media runner")
        return self.media.tokens(prompt.media_inputs, params, choice)

    async def score(self, prompt_ids: list[int], top: int) -> list[TokenLogprob | None]:
        return await self._scorer.score(prompt_ids, top)
