"""OpenAI request bodies, validated strictly at the edge (wrong types are 400, not coerced).

Unknown fields are ignored, as clients send more than any server implements; known
features QMS does not implement (tools, penalties, ...) are refused with a 400 that
names them rather than silently ignored.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr, field_validator

Number = Annotated[float, Field(strict=True)]
MAX_N = 16
MAX_STOPS = 4
MAX_LOGPROBS = 20  # top alternatives per token, as OpenAI (chat) and vLLM


class TextPart(BaseModel):
    model_config = ConfigDict(extra="ignore")
    type: Literal["text"]
    text: StrictStr


class ImageURL(BaseModel):
    model_config = ConfigDict(extra="ignore")
    url: StrictStr
    detail: StrictStr | None = None


class ImagePart(BaseModel):
    model_config = ConfigDict(extra="ignore")
    type: Literal["image_url"]
    image_url: ImageURL


class InputAudio(BaseModel):
    model_config = ConfigDict(extra="ignore")
    data: StrictStr  # base64
    format: StrictStr  # wav | mp3 | flac (checked in media/decode.py, with a clear message)


class AudioPart(BaseModel):
    model_config = ConfigDict(extra="ignore")
    type: Literal["input_audio"]
    input_audio: InputAudio


class VideoURL(BaseModel):
    model_config = ConfigDict(extra="ignore")
    url: StrictStr  # data:video/<type>;base64,... (http(s) only when remote media is allowed)


class VideoURLPart(BaseModel):
    """A whole video file, as vLLM spells it: frames are sampled by the server."""

    model_config = ConfigDict(extra="ignore")
    type: Literal["video_url"]
    video_url: VideoURL


class VideoFramesPart(BaseModel):
    """A video as its frames (image URLs, in order), as Qwen's own examples spell it."""

    model_config = ConfigDict(extra="ignore")
    type: Literal["video"]
    video: list[StrictStr] = Field(min_length=1)


VideoPart = VideoURLPart | VideoFramesPart
ContentPart = Annotated[
    TextPart | ImagePart | AudioPart | VideoURLPart | VideoFramesPart, Field(discriminator="type")
]
MediaPart = ImagePart | AudioPart | VideoURLPart | VideoFramesPart


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: StrictStr | list[ContentPart] | None = None
    name: StrictStr | None = None

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content if isinstance(part, TextPart))

    def media(self) -> list[MediaPart]:
        if not isinstance(self.content, list):
            return []
        return [part for part in self.content if not isinstance(part, TextPart)]


class AudioOutput(BaseModel):
    model_config = ConfigDict(extra="ignore")
    voice: StrictStr = "ethan"
    format: StrictStr = "wav"


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="ignore")
    include_usage: StrictBool = False


class GenerationRequest(BaseModel):
    """Fields shared by chat completions and completions."""

    model_config = ConfigDict(extra="ignore")

    model: StrictStr
    max_tokens: StrictInt | None = Field(default=None, ge=1)
    temperature: Number = Field(default=1.0, ge=0.0, le=2.0)
    top_p: Number = Field(default=1.0, gt=0.0, le=1.0)
    n: StrictInt = Field(default=1, ge=1, le=MAX_N)
    stream: StrictBool = False
    stream_options: StreamOptions | None = None
    stop: StrictStr | list[StrictStr] | None = None
    seed: StrictInt | None = None
    user: StrictStr | None = None
    presence_penalty: Number = Field(default=0.0, ge=-2.0, le=2.0)
    frequency_penalty: Number = Field(default=0.0, ge=-2.0, le=2.0)
    logit_bias: dict[str, Any] | None = None
    # Extensions (vLLM spells them the same way).
    ignore_eos: StrictBool = False
    return_token_ids: StrictBool = False

    @field_validator("stop")
    @classmethod
    def _check_stop(cls, value: str | list[str] | None) -> str | list[str] | None:
        stops = [value] if isinstance(value, str) else value or []
        if len(stops) > MAX_STOPS:
            raise ValueError(f"at most {MAX_STOPS} stop sequences are allowed")
        if any(stop == "" for stop in stops):
            raise ValueError("stop sequences must not be empty")
        return value

    def stop_list(self) -> list[str]:
        if self.stop is None:
            return []
        return [self.stop] if isinstance(self.stop, str) else list(self.stop)

    def unsupported(self) -> tuple[str, str] | None:
        """The first requested feature QMS does not implement: (param, message)."""
        if self.presence_penalty != 0.0 or self.frequency_penalty != 0.0:
            param = "presence_penalty" if self.presence_penalty != 0.0 else "frequency_penalty"
            return param, f"{param} is not supported"
        if self.logit_bias:
            return "logit_bias", "logit_bias is not supported"
        return None

    @property
    def include_usage(self) -> bool:
        return self.stream_options is not None and self.stream_options.include_usage


class ChatCompletionRequest(GenerationRequest):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: StrictInt | None = Field(default=None, ge=1)
    logprobs: StrictBool | None = None
    top_logprobs: StrictInt | None = Field(default=None, ge=0, le=MAX_LOGPROBS)
    tools: list[Any] | None = None
    modalities: list[Literal["text", "audio"]] | None = None
    audio: AudioOutput | None = None

    @property
    def has_media(self) -> bool:
        return any(message.media() for message in self.messages)

    @property
    def wants_audio(self) -> bool:
        return self.modalities is not None and "audio" in self.modalities

    def unsupported(self) -> tuple[str, str] | None:
        if self.top_logprobs and not self.logprobs:
            return "top_logprobs", "top_logprobs needs logprobs: true"
        if self.tools:
            return "tools", "tools are not supported"
        return super().unsupported()

    default_max_tokens: ClassVar[int | None] = None  # up to the context length

    def requested_max_tokens(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens


PromptType = StrictStr | list[StrictStr] | list[StrictInt] | list[list[StrictInt]]


class CompletionRequest(GenerationRequest):
    prompt: PromptType
    # 0 with echo: the prompt's log-probabilities alone (legacy OpenAI scoring)
    max_tokens: StrictInt | None = Field(default=None, ge=0)
    logprobs: StrictInt | None = Field(default=None, ge=0, le=MAX_LOGPROBS)
    echo: StrictBool = False
    suffix: StrictStr | None = None
    best_of: StrictInt | None = None

    def unsupported(self) -> tuple[str, str] | None:
        if self.suffix:
            return "suffix", "suffix is not supported"
        if self.best_of is not None and self.best_of != self.n:
            return "best_of", "best_of other than n is not supported"
        return super().unsupported()

    default_max_tokens: ClassVar[int | None] = 16  # OpenAI's default for completions

    def requested_max_tokens(self) -> int | None:
        return self.max_tokens


class TokenizeCompletionRequest(BaseModel):
    """`POST /tokenize` with a prompt (vLLM's shape)."""

    model_config = ConfigDict(extra="ignore")
    model: StrictStr | None = None
    prompt: StrictStr
    add_special_tokens: StrictBool = True
    return_token_strs: StrictBool = False


class TokenizeChatRequest(BaseModel):
    """`POST /tokenize` with messages, through the chat template (vLLM's shape)."""

    model_config = ConfigDict(extra="ignore")
    model: StrictStr | None = None
    messages: list[ChatMessage] = Field(min_length=1)
    add_generation_prompt: StrictBool = True
    continue_final_message: StrictBool = False
    add_special_tokens: StrictBool = False
    return_token_strs: StrictBool = False


class DetokenizeRequest(BaseModel):
    """`POST /detokenize` (vLLM's shape)."""

    model_config = ConfigDict(extra="ignore")
    model: StrictStr | None = None
    tokens: list[StrictInt]


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None
    code: str | None


class ErrorResponse(BaseModel):
    """Every 4xx/5xx body (errors.py builds it)."""

    error: ErrorDetail
