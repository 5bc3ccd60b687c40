"""OpenAI request bodies, validated strictly at the edge (wrong types are 400, not coerced).

Nothing is silently ignored: every OpenAI field is declared, and is either honoured or
refused with a 400 that names it (`REFUSED`, checked by `unsupported()`). Fields that
are not OpenAI's (vendor extras: clients send more than any server implements) are
kept in `model_extra`, accepted, and logged once per name (api/serve/serving.py). vLLM's
sampling extras (top_k, min_p, repetition_penalty, min_tokens, stop_token_ids, ...) are
honoured under vLLM's names. docs/runtime.md lists every field.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    StrictStr,
    ValidationInfo,
    field_validator,
)

from qms_runtime.api.request.content_parts import ContentPart, MediaPart, TextPart

Number = Annotated[float, Field(strict=True)]
MAX_N = 16
MAX_STOPS = 32  # OpenAI allows 4; lm-evaluation-harness sends more
MAX_TOP_LOGPROBS = MAX_LOGPROBS = 20  # top alternatives per token, as OpenAI (chat) and vLLM


class FunctionCall(BaseModel):
    model_config = ConfigDict(extra="ignore")
    name: StrictStr = Field(min_length=1)
    arguments: StrictStr  # JSON text, as the model wrote it


class ToolCallItem(BaseModel):
    """An assistant message's earlier tool call, as a client sends it back."""

    model_config = ConfigDict(extra="ignore")
    id: StrictStr | None = None
    type: Literal["function"] = "function"
    function: FunctionCall


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: StrictStr | list[ContentPart] | None = None
    name: StrictStr | None = None
    tool_calls: list[ToolCallItem] | None = None
    tool_call_id: StrictStr | None = None
    reasoning_content: StrictStr | None = None

    @field_validator("tool_calls")
    @classmethod
    def _check_tool_calls(
        cls, value: list[ToolCallItem] | None, info: ValidationInfo
    ) -> list[ToolCallItem] | None:
        if value and info.data.get("role") != "assistant":
            raise ValueError("only assistant messages have tool_calls")
        return value

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


class FunctionDefinition(BaseModel):
    model_config = ConfigDict(extra="ignore")
    name: StrictStr = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")
    description: StrictStr | None = None
    parameters: dict[str, Any] | None = None  # a JSON schema
    strict: StrictBool | None = None


class Tool(BaseModel):
    model_config = ConfigDict(extra="ignore")
    type: Literal["function"]  # other tool types (custom, ...) are a 400 naming tools.N.type
    function: FunctionDefinition

    def template_entry(self) -> dict[str, Any]:
        """What the chat template lists (and the tool-call grammar reads)."""
        return {"type": "function", "function": self.function.model_dump(exclude_none=True)}


class NamedFunction(BaseModel):
    model_config = ConfigDict(extra="ignore")
    name: StrictStr


class NamedToolChoice(BaseModel):
    model_config = ConfigDict(extra="ignore")
    type: Literal["function"]
    function: NamedFunction


ToolChoice = Literal["none", "auto", "required"] | NamedToolChoice


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="ignore")
    include_usage: StrictBool = False


class JSONSchemaFormat(BaseModel):
    model_config = ConfigDict(extra="ignore")
    name: StrictStr = "response"
    description: StrictStr | None = None
    schema_: dict[str, Any] = Field(default_factory=dict, alias="schema")
    strict: StrictBool | None = None


class ResponseFormat(BaseModel):
    model_config = ConfigDict(extra="ignore")
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JSONSchemaFormat | None = None


# OpenAI fields QMS declares but does not do: a 400 naming the field when it is set
# (to anything but its default), with the reason.
REFUSED_COMMON: dict[str, str] = {}
REFUSED_CHAT = {
    "functions": "functions is deprecated and not supported; use tools",
    "function_call": "function_call is deprecated and not supported; use tool_choice",
    "prediction": "predicted outputs (prediction) are not supported",
    "web_search_options": "web search is not supported",
    "reasoning_effort": "reasoning_effort is not supported; for Qwen3 use "
    'chat_template_kwargs {"enable_thinking": false}',
    "verbosity": "verbosity is not supported",
    "metadata": "metadata is only stored with store=true, which is not supported",
}
REFUSED_COMPLETION = {
    "suffix": "suffix (insertion) is not supported",
}


class GenerationRequest(BaseModel):
    """Fields shared by chat completions and completions. Sampling fields are None when
    the request omits them: the model's generation_config.json gives the default
    (api/serve/serving.py), else OpenAI's."""

    model_config = ConfigDict(extra="allow")

    model: StrictStr
    max_tokens: StrictInt | None = Field(default=None, ge=1)
    temperature: Number | None = Field(default=None, ge=0.0, le=2.0)
    top_p: Number | None = Field(default=None, gt=0.0, le=1.0)
    n: StrictInt = Field(default=1, ge=1, le=MAX_N)
    stream: StrictBool = False
    stream_options: StreamOptions | None = None
    stop: StrictStr | list[StrictStr] | None = None
    seed: StrictInt | None = None
    user: StrictStr | None = None  # an end-user id: accepted; QMS keeps no per-user state
    safety_identifier: StrictStr | None = None  # the same, OpenAI's newer name
    prompt_cache_key: StrictStr | None = None  # prefix caching is automatic, by prefix
    presence_penalty: Number = Field(default=0.0, ge=-2.0, le=2.0)
    frequency_penalty: Number = Field(default=0.0, ge=-2.0, le=2.0)
    logit_bias: dict[StrictStr, Number] | None = None
    response_format: ResponseFormat | None = None
    service_tier: Literal["auto", "default"] | None = None  # one tier: honoured as is
    store: Literal[False] | None = None  # nothing is stored; true is a 400
    # Extensions, spelled as vLLM spells them.
    top_k: StrictInt | None = Field(default=None, ge=-1)  # -1 or 0: off
    min_p: Number | None = Field(default=None, ge=0.0, le=1.0)
    repetition_penalty: Number | None = Field(default=None, gt=0.0, le=10.0)
    min_tokens: StrictInt = Field(default=0, ge=0)
    stop_token_ids: list[StrictInt] | None = None
    ignore_eos: StrictBool = False
    return_token_ids: StrictBool = False

    refused: ClassVar[dict[str, str]] = REFUSED_COMMON

    @field_validator("stop")
    @classmethod
    def _check_stop(cls, value: str | list[str] | None) -> str | list[str] | None:
        stops = [value] if isinstance(value, str) else value or []
        if len(stops) > MAX_STOPS:
            raise ValueError(f"at most {MAX_STOPS} stop sequences are allowed")
        if any(stop == "" for stop in stops):
            raise ValueError("stop sequences must not be empty")
        return value

    @field_validator("logit_bias")
    @classmethod
    def _check_bias(cls, value: dict[str, float] | None) -> dict[str, float] | None:
        for key, bias in (value or {}).items():
            if not (key.isascii() and key.isdigit()):  # "²".isdigit() is True, int() fails
                raise ValueError(f"keys must be token ids, got {key[:40]!r}")
            if not -100.0 <= bias <= 100.0:
                raise ValueError(f"bias of token {key} must be in [-100, 100]")
        return value

    def stop_list(self) -> list[str]:
        if self.stop is None:
            return []
        return [self.stop] if isinstance(self.stop, str) else list(self.stop)

    def unsupported(self) -> tuple[str, str] | None:
        """The first requested feature QMS does not implement: (param, message)."""
        extra = self.model_extra or {}
        for name, message in self.refused.items():
            if extra.get(name):  # set to something other than its (falsy) default
                return name, message
        return None

    def vendor_extras(self) -> list[str]:
        """Fields that are neither OpenAI's nor QMS's: accepted, not used."""
        return sorted(set(self.model_extra or {}) - set(self.refused))

    @property
    def include_usage(self) -> bool:
        return self.stream_options is not None and self.stream_options.include_usage


class ChatPromptFields(BaseModel):
    """What renders a chat prompt, shared by chat completions and `/tokenize` with messages:
    one road from these fields to the prompt's token ids (api/request/chat_render.py)."""

    model_config = ConfigDict(extra="ignore")

    messages: list[ChatMessage] = Field(min_length=1)
    tools: list[Tool] | None = None
    tool_choice: ToolChoice | None = None  # "auto" with tools, "none" without (OpenAI's)
    parallel_tool_calls: StrictBool = True
    # Not OpenAI's but what every Qwen server takes (vLLM, SGLang, transformers serve).
    chat_template_kwargs: dict[StrictStr, Any] | None = None

    @property
    def has_media(self) -> bool:
        return any(message.media() for message in self.messages)

    @property
    def active_tools(self) -> list[Tool]:
        """The tools the prompt lists and the output is parsed for (none with "none")."""
        return list(self.tools or []) if self.tool_choice != "none" else []


class ChatCompletionRequest(GenerationRequest, ChatPromptFields):
    model_config = ConfigDict(extra="allow")

    max_completion_tokens: StrictInt | None = Field(default=None, ge=1)
    logprobs: StrictBool | None = None
    top_logprobs: StrictInt | None = Field(default=None, ge=0, le=MAX_TOP_LOGPROBS)
    modalities: list[Literal["text", "audio"]] | None = None
    audio: AudioOutput | None = None

    refused: ClassVar[dict[str, str]] = {**REFUSED_COMMON, **REFUSED_CHAT}

    @property
    def wants_audio(self) -> bool:
        return self.modalities is not None and "audio" in self.modalities

    def unsupported(self) -> tuple[str, str] | None:
        if self.top_logprobs and not self.logprobs:
            return "top_logprobs", "top_logprobs needs logprobs: true"
        return super().unsupported()

    def logprobs_wanted(self) -> int | None:
        return (self.top_logprobs or 0) if self.logprobs else None

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
    best_of: StrictInt | None = None

    refused: ClassVar[dict[str, str]] = {**REFUSED_COMMON, **REFUSED_COMPLETION}

    def unsupported(self) -> tuple[str, str] | None:
        if self.best_of is not None and self.best_of != self.n:
            return "best_of", "best_of other than n is not supported"
        return super().unsupported()

    def logprobs_wanted(self) -> int | None:
        return self.logprobs

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


class TokenizeChatRequest(ChatPromptFields):
    """`POST /tokenize` with messages (vLLM's shape): the same messages, tools and
    chat_template_kwargs as a chat request, through the same rendering."""

    model_config = ConfigDict(extra="ignore")
    model: StrictStr | None = None
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
