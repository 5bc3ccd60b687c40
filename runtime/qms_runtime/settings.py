"""Every runtime setting, its default and its documentation, in one place.

Settings come from `QMS_<NAME>` environment variables (the operator's Deployment sets
these) and from `qms-runtime serve --<name>` flags, which win over the environment.
They are parsed once, at start-up, into a frozen `RuntimeSettings`.
"""

from __future__ import annotations

import ipaddress
import json
import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

Dtype = Literal["auto", "bfloat16", "float16", "float32"]
Quantization = Literal["none", "int8"]
LogFormat = Literal["json", "text"]
Scheduler = Literal["fifo", "prefill_first"]


# The drain waits until every open connection has been idle this long (run.py).
DRAIN_IDLE_SECONDS = 6.0


class RuntimeSettings(BaseSettings):
    """Settings of `qms-runtime serve`; each field is also the env var `QMS_<FIELD>`."""

    model_config = SettingsConfigDict(env_prefix="QMS_", extra="ignore", frozen=True)

    model_dir: Path = Field(description="Local model directory (PVC mount or image path).")
    served_model_name: str | None = Field(
        default=None, description="The OpenAI `model` id; default: the directory name."
    )
    host: str = Field(default="0.0.0.0", description="Listen address.")
    port: int = Field(default=8080, ge=1, le=65535, description="One port: API, health, metrics.")
    dtype: Dtype = Field(default="auto", description="auto = bfloat16 on GPU, float32 on CPU.")
    quantization: Quantization = Field(
        default="none", description="int8: torchao weight-only int8 of Linear layers and experts."
    )
    max_batch_size: int = Field(default=16, ge=1, description="Most sequences in one batch step.")
    max_batched_tokens: int | None = Field(
        default=None,
        ge=16,
        description="Most tokens in one batch step; default 512 on CPU, auto on GPU.",
    )
    max_queued_requests: int = Field(
        default=64,
        ge=0,
        description="Sequences admitted beyond max_batch_size; past that: 429 + Retry-After.",
    )
    max_model_len: int | None = Field(
        default=None, ge=16, description="Context length (prompt + output); default: the model's."
    )
    verify_checksums: bool = Field(
        default=True, description="Verify weight files against SHA256SUMS/MD5SUMS before loading."
    )
    api_key: SecretStr | None = Field(default=None, description="Bearer key required on /v1/*.")
    api_key_file: Path | None = Field(
        default=None, description="File holding the API key (a mounted Secret); wins over api_key."
    )
    drain_timeout_seconds: float = Field(
        default=30.0,
        ge=0,
        description="On SIGTERM, how long in-flight requests may take to finish.",
    )
    drain_idle_seconds: float = Field(
        default=DRAIN_IDLE_SECONDS,
        gt=0,
        description="While draining, how long the open client connections must all have "
        "been idle before the server closes them and exits: longer than client pools keep "
        "an idle connection (httpx and the openai client: 5 s), so that closing one cannot "
        "race a request sent on it.",
    )
    keep_alive_seconds: float = Field(
        default=75.0,
        ge=1,
        description="How long an idle client connection stays open: longer than client "
        "pools keep one (httpx and the openai client: 5 s), so that the server never "
        "closes a connection a client is sending on.",
    )
    log_format: LogFormat = Field(default="json", description="json for ELK, text for humans.")
    log_level: str = Field(default="INFO", description="Python log level.")
    log_prompts: bool = Field(
        default=False,
        description="Log each request's prompt and generated text (INFO); off by default, "
        "as they may hold personal data.",
    )
    model_defaults: bool = Field(
        default=True,
        description="Sampling fields a request omits (temperature, top_p, top_k, min_p, "
        "repetition_penalty) default to the model's generation_config.json; false: OpenAI's.",
    )
    retry_after_seconds: int = Field(default=1, ge=1, description="Retry-After sent with a 429.")
    max_request_bytes: int = Field(
        default=33_554_432,
        ge=1024,
        description="Largest accepted request body (base64 media included), default 32 MiB; "
        "larger: 413.",
    )
    page_size: int = Field(default=32, ge=4, description="KV-cache page size in tokens (CPU).")
    prefix_caching: bool = Field(
        default=True,
        description="Share the KV-cache pages of a prompt prefix already in the cache (a "
        "common system prompt, earlier turns) instead of computing them again; in effect "
        "only when every layer of the model is full attention (logged at start).",
    )
    scheduler: Scheduler = Field(
        default="fifo",
        description="Batch scheduling: fifo (decoding sequences first, then prefills in "
        "arrival order) or prefill_first (new prompts first: lower time to first token, "
        "slower decoding while prompts arrive).",
    )
    kv_cache_blocks: int | None = Field(
        default=None,
        ge=1,
        description="KV-cache pages (of page_size tokens); default on CPU: a full batch of "
        "full-length sequences, on GPU: from kv_cache_memory_fraction.",
    )
    kv_cache_memory_fraction: float | None = Field(
        default=None,
        gt=0,
        le=1,
        description="GPU: fraction of free GPU memory for the KV cache; default: "
        "transformers' (0.8 to 0.9).",
    )
    warmup: bool = Field(default=True, description="Run one short generation before ready.")
    check_fit: bool = Field(
        default=True,
        description="Before loading, estimate the memory the model needs (weights from the "
        "safetensors headers, KV cache, headroom) and exit at once if the device has less.",
    )
    memory_limit_bytes: int | None = Field(
        default=None,
        ge=1,
        description="Memory the fit check counts on; default: free GPU memory, or available "
        "RAM within the container's memory limit on CPU.",
    )
    termination_log_path: Path = Field(
        default=Path("/dev/termination-log"),
        description="Where a fatal start-up error is written as one line (Kubernetes shows "
        "it as the container's termination message).",
    )
    # Qwen3-Omni media (media.py). Base64 media counts against max_request_bytes too.
    audio_output: bool = Field(
        default=False,
        description="Qwen3-Omni speech out: load the talker and code2wav (more GPU memory). "
        "Off: they are never loaded and requests asking for audio get 400.",
    )
    max_image_bytes: int = Field(
        default=10_485_760, ge=1, description="Largest image (decoded bytes), default 10 MiB."
    )
    max_audio_seconds: float = Field(
        default=300.0, gt=0, description="Longest input audio in seconds, default 300 (5 min)."
    )
    media_step_interval: int = Field(
        default=4,
        ge=1,
        description="While text runs, batch steps between two forward passes of a media "
        "request: higher favours text throughput, 1 gives media the same token rate as each "
        "text sequence.",
    )
    max_media_items: int = Field(
        default=8, ge=0, description="Most images + audio clips in one request, default 8."
    )
    allow_remote_media: bool = Field(
        default=False,
        description="Fetch http(s) image, audio and video URLs from the hosts in "
        "allowed_media_domains (pods usually have no egress); default: only data: URLs.",
    )
    allowed_media_domains: Annotated[tuple[str, ...], NoDecode] = Field(
        default=(),
        description="Hosts remote media may come from, comma-separated: exact hosts "
        "(images.example.com, 203.0.113.7) or '*.' suffixes (*.example.com: its "
        "subdomains). Addresses that are loopback, link-local, private or cloud metadata "
        "are refused unless an exact entry names the host. Needed with allow_remote_media.",
    )
    max_video_bytes: int = Field(
        default=20_971_520, ge=1, description="Largest video file (decoded bytes), default 20 MiB."
    )
    max_video_seconds: float = Field(
        default=30.0, gt=0, description="Longest input video in seconds, default 30."
    )
    video_fps: float = Field(
        default=2.0,
        gt=0,
        description="Frames per second sampled from a video file; frame lists are taken as "
        "sampled at this rate.",
    )
    max_video_frames: int = Field(
        default=64, ge=1, description="Most frames of one video given to the model, default 64."
    )
    mm_processor_kwargs: dict[str, Any] = Field(
        default_factory=dict,
        description="Extra arguments (JSON) for every processor call, like vLLM's; e.g. "
        '{"videos_kwargs": {"size": {"shortest_edge": 256, "longest_edge": 4096}}}.',
    )

    @field_validator("allowed_media_domains", mode="before")
    @classmethod
    def _split_domains(cls, value: Any) -> Any:
        if isinstance(value, str):  # env var or flag: "a.example.com, *.cdn.example.com"
            value = [part for part in re.split(r"[,\s]+", value) if part]
        if isinstance(value, list | tuple):
            return tuple(_domain_entry(str(part)) for part in value)
        return value

    @model_validator(mode="after")
    def _remote_media_needs_domains(self) -> RuntimeSettings:
        if self.allow_remote_media and not self.allowed_media_domains:
            raise ValueError(
                "allow_remote_media needs allowed_media_domains (the hosts media may be "
                "fetched from)"
            )
        return self

    @model_validator(mode="after")
    def _read_api_key_file(self) -> RuntimeSettings:
        if self.api_key_file is not None:
            key = self.api_key_file.read_text(encoding="utf-8").strip()
            if not key:
                raise ValueError(f"api_key_file {self.api_key_file} is empty")
            object.__setattr__(self, "api_key", SecretStr(key))
        return self

    @property
    def model_name(self) -> str:
        """The id clients put in `model`."""
        return self.served_model_name or self.model_dir.resolve().name

    @property
    def required_api_key(self) -> str | None:
        return self.api_key.get_secret_value() if self.api_key is not None else None


_HOST_LABEL = r"(?!-)[a-z0-9-]{1,63}(?<!-)"
_HOST = re.compile(rf"^{_HOST_LABEL}(\.{_HOST_LABEL})*$")


def _domain_entry(entry: str) -> str:
    """One allowed_media_domains entry, lowercased: a host name, an IP address, or
    `*.` + host name (its subdomains)."""
    value = entry.strip().lower().rstrip(".")
    if value.startswith("[") and value.endswith("]"):
        value = value[1:-1]
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        pass
    name = value[2:] if value.startswith("*.") else value
    if not _HOST.match(name):
        raise ValueError(
            f"allowed_media_domains: {entry!r} is not a host name, an IP address or *.<host name>"
        )
    return value


def load_settings(**overrides: Any) -> RuntimeSettings:
    """Build settings from the environment, with explicit (CLI) values taking precedence."""
    given = {name: value for name, value in overrides.items() if value is not None}
    kwargs = given.get("mm_processor_kwargs")
    if isinstance(kwargs, str):  # a flag: JSON text, as the env var is
        try:
            given["mm_processor_kwargs"] = json.loads(kwargs)
        except json.JSONDecodeError as exc:
            raise ValueError(f"mm_processor_kwargs is not JSON: {exc}") from exc
    return RuntimeSettings(**given)
