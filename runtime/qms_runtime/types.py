"""The leaf every other layer may use: what a generation is asked and answers, the
backend protocol the API layer talks to, and the domain errors that layers below the
API raise (the API layer alone turns them into HTTP statuses: api/http/errors.py).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeAlias

import numpy as np

from qms_runtime.finish import FinishReason

# Qwen3-Omni's processor output for one request (transformers' BatchFeature): `input_ids`
# [1, n] with the media placeholders expanded, pixel values, audio features, grids.
ProcessorInputs: TypeAlias = Mapping[str, Any]


@dataclass(frozen=True)
class GrammarSpec:
    """What a sequence's output must match, enforced token by token (engine/grammar.py):
    `kind` "json_object" (any JSON object), "json_schema" (`source`: the schema as JSON
    text), "tool_calls" (`source`: JSON `{"tools", "choice", "parallel"}`: Qwen3's
    Hermes tool-call blocks, engine/grammar_source.py) or "lark" (a llguidance grammar)."""

    kind: str
    source: str = ""


@dataclass(frozen=True)
class SamplingParams:
    """How one sequence is generated. A new sampling parameter is a field here, a field
    of the request models (api/request/protocol.py) and its translation for the two engines
    (engine/sampling.py: `cb_request_kwargs` and `generate_kwargs`; per-sequence
    controls in engine/controls.py)."""

    max_new_tokens: int
    temperature: float = 0.0  # 0 means greedy
    top_p: float = 1.0
    ignore_eos: bool = False
    seed: int | None = None  # OpenAI `seed`: sampled tokens depend on it and the prompt only
    top_k: int = 0  # 0: off
    min_p: float = 0.0
    repetition_penalty: float = 1.0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    min_tokens: int = 0
    stop_token_ids: tuple[int, ...] = ()
    logit_bias: tuple[tuple[int, float], ...] = ()
    logprobs: int | None = None  # None: none; k: the sampled token's and the top k (0..20)
    grammar: GrammarSpec | None = None

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0

    @property
    def controlled(self) -> bool:
        """Needs QMS's per-sequence logits controls (engine/controls.py)."""
        return bool(
            self.min_p
            or self.repetition_penalty != 1.0
            or self.presence_penalty
            or self.frequency_penalty
            or self.min_tokens
            or self.logit_bias
            or self.logprobs is not None
            or self.grammar is not None
        )


@dataclass(frozen=True)
class Prompt:
    """What a sequence starts from: token ids, and for media requests the processor's
    inputs (pixel values, audio features, m-RoPE positions) that go with them."""

    token_ids: list[int]
    media_inputs: ProcessorInputs | None = None


@dataclass(frozen=True)
class TokenLogprob:
    """The log-probability of a generated (or prompt) token under the raw model (before
    temperature and filters, as OpenAI and vLLM report it), with the top alternatives."""

    token_id: int
    logprob: float
    top: tuple[tuple[int, float], ...] = ()  # (token id, logprob), most likely first


@dataclass(frozen=True)
class TokenChunk:
    """What a backend yields: the tokens new since the last chunk, and whether the
    sequence is finished (then no chunk follows); `logprobs` (one per token) when the
    sequence asked for them."""

    token_ids: list[int]
    finished: bool = False
    logprobs: list[TokenLogprob] | None = None


@dataclass(frozen=True)
class GenerationEvent:
    new_token_ids: list[int]
    finish_reason: FinishReason | None  # None while running (qms_runtime.finish decides)
    logprobs: list[TokenLogprob] | None = None


class Admission(Protocol):
    """Slots held by one HTTP request; `release()` is idempotent."""

    def release(self) -> None: ...

    def __enter__(self) -> Admission: ...

    def __exit__(self, *exc: object) -> None: ...


class GrammarChecker(Protocol):
    """What the API layer asks of the grammar compiler (engine/grammar.Grammars): whether
    a `response_format` or tool grammar compiles, before the request is admitted."""

    def check(self, spec: GrammarSpec, param: str) -> None:
        """Raise a ValueError with `message` and `param` attributes (the engine's
        GrammarError) when `spec` does not compile."""
        ...


class GenerationBackend(Protocol):
    """The one road from the API layer into the engine (engine/backend.py's
    `ModelBackend`, or a fake in the API tests): text and media generation through
    `tokens`, and, for Qwen3-Omni, the media side (`media`: the processor and speech out),
    None for a text model."""

    eos_token_ids: tuple[int, ...]

    @property
    def media(self) -> MediaBackend | None: ...

    def admit(self, sequences: int) -> Admission:
        """Hold `sequences` slots or raise `EngineOverloaded`."""
        ...

    def tokens(
        self, prompt: Prompt, params: SamplingParams, choice: int
    ) -> AsyncGenerator[TokenChunk, None]:
        """Generate one sequence (`choice` of its request: seeded choices differ); closing
        the iterator early cancels it."""
        ...

    async def score(self, prompt_ids: list[int], top: int) -> list[TokenLogprob | None]:
        """Per position of `prompt_ids`, the raw model log-probability of its token and
        the `top` most likely tokens there (position 0: None): `echo` with `logprobs`."""
        ...


@dataclass
class MediaInputs:
    """Chat messages in the processor's format plus the decoded media, in prompt order
    (api/request/media_parts.py decodes them with qms_runtime.media)."""

    messages: list[dict[str, Any]] = field(default_factory=list)
    images: list[Any] = field(default_factory=list)  # PIL images
    audio: list[np.ndarray[Any, Any]] = field(default_factory=list)  # mono float32 at 16 kHz
    videos: list[np.ndarray[Any, Any]] = field(default_factory=list)  # uint8 (frames, h, w, 3)


class MediaBackend(Protocol):
    """Qwen3-Omni's media side as the API layer uses it: the processor that turns decoded
    media and messages into the model's inputs, and speech out (engine/media_runner.py's
    `OmniMedia`, or a fake in the API tests). Generation with those inputs goes through
    `GenerationBackend.tokens` like text (`Prompt.media_inputs`)."""

    @property
    def speech(self) -> bool:
        """Whether speech out is on (the talker and code2wav are loaded)."""
        ...

    @property
    def voices(self) -> list[str]: ...

    def prepare(
        self,
        media: MediaInputs,
        template_kwargs: dict[str, Any] | None = None,
        add_generation_prompt: bool = True,
        continue_final_message: bool = False,
        add_special_tokens: bool = False,
    ) -> ProcessorInputs:
        """The processor's inputs (a mapping with `input_ids` [1, n] with the media
        placeholders expanded, pixel values, audio features); raises ValueError when the
        processor refuses the media and jinja2.TemplateError when the template does."""
        ...

    async def speak(
        self, inputs: ProcessorInputs, params: SamplingParams, voice: str, arrival: float
    ) -> tuple[list[int], FinishReason, np.ndarray[Any, Any]]:
        """Text tokens, finish reason and spoken waveform (float32, 24 kHz) of one answer."""
        ...


# ------------------------------------------------------------------------ errors
class EngineOverloaded(Exception):
    """More sequences than the engine admits (429)."""


class EngineUnavailable(Exception):
    """The batching loop is stopping or dead (503)."""


class GenerationFailed(Exception):
    """The batching loop reported a failure for this request (500)."""


class NotReady(Exception):
    """The server cannot take requests now (503): loading, draining or failed; `code`
    says which."""

    def __init__(self, message: str, code: str) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


class MediaError(Exception):
    """A content part that cannot be used (400); `param` names it."""

    def __init__(self, message: str, param: str, code: str = "invalid_media") -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code


def media_too_large(kind: str, limit: int, param: str) -> MediaError:
    return MediaError(
        f"{param}: {kind} is over the limit of {limit} bytes", param, "media_too_large"
    )
