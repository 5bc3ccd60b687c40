"""Will the model fit? An estimate from the safetensors headers and the config, before
anything loads.

A 30B model on a 16 GB GPU would otherwise load for minutes, die out of memory and
restart in a loop. The estimate: weight bytes at the configured dtype (or int8 for what
int8 quantizes) from each tensor's shape in the file headers (nothing but the headers is
read); plus what transformers' continuous batching allocates besides the weights, as its
own sizing computes it (`compat.continuous_batching_footprint`: the paged KV cache, the
attention masks [M, N + M], the per-cache-token read buffers, the IO tensors and the
activation peak), divided by its `max_memory_percent` (it refuses to start when that
footprint exceeds this fraction of what is free once the weights are loaded); plus
headroom. It is compared with what the device can give: free GPU memory
(`torch.cuda.mem_get_info`, summed over the GPUs), or on CPU the available RAM within the
container's memory limit (cgroup v2 `memory.max`). `memory_limit_bytes` overrides what is
available. The engine's continuous-batching arguments come from the caller
(`engine.batching.cb_config_kwargs`: this layer does not import the engine), so both
size the cache from the same ones.
"""

from __future__ import annotations

import importlib
import json
import math
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qms_runtime import compat
from qms_runtime.models.loading import (
    OMNI_MODEL_TYPE,
    ModelLoadError,
    read_model_type,
    resolve_dtype,
)
from qms_runtime.settings import RuntimeSettings

GIB = 1024**3
HEADROOM_FRACTION = 0.05  # allocator slack, CUDA context, what loading holds for a while
MIN_HEADROOM = 256 * 1024**2
_DTYPE_BYTES = {"bfloat16": 2, "float16": 2, "float32": 4}
_FILE_DTYPE_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2,
                     "I8": 1, "U8": 1, "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1}  # fmt: skip
_SPEECH_PREFIXES = ("talker.", "code2wav.")  # Qwen3-Omni parts loaded only for speech out
_CGROUP = Path("/sys/fs/cgroup")

# engine.batching.cb_config_kwargs: (settings, max_model_len, on_gpu) -> the arguments of
# transformers.ContinuousBatchingConfig the engine starts with.
CbConfigKwargs = Callable[[RuntimeSettings, int, bool], dict[str, Any]]


def size(count: int) -> str:
    return f"{count / GIB:.1f} GiB" if count >= GIB // 10 else f"{count / 1024**2:.0f} MiB"


class ModelDoesNotFit(Exception):
    """The estimate exceeds what the device has (a fatal start-up error)."""


@dataclass(frozen=True)
class Estimate:
    weights: int
    kv_cache: int  # transformers' paged cache tensor (with its two trash sectors)
    kv_tokens: int  # the tokens that cache holds
    buffers: int  # the rest of its footprint: masks, read buffers, IO, activation peak
    max_memory_percent: float  # the fraction of free memory transformers lets it take
    headroom: int
    dtype: str

    @property
    def batching(self) -> int:
        """transformers' `compute_memory_footprint` of the cache it will make."""
        return self.kv_cache + self.buffers

    @property
    def batching_room(self) -> int:
        """The free memory transformers wants, after loading, to allow that footprint."""
        return math.ceil(self.batching / self.max_memory_percent)

    @property
    def total(self) -> int:
        return self.weights + self.batching_room + self.headroom


def _headers(model_dir: Path) -> dict[str, Any]:
    tensors: dict[str, Any] = {}
    for path in sorted(model_dir.rglob("*.safetensors")):
        with path.open("rb") as f:
            (size,) = struct.unpack("<Q", f.read(8))
            header = json.loads(f.read(size))
        tensors.update({k: v for k, v in header.items() if k != "__metadata__"})
    return tensors


def _int8_quantized(name: str, shape: list[int]) -> bool:
    """What int8 weight-only quantization (models/quantization.py) stores as int8: the
    Linear layers' weights and the fused 3-D experts, not embeddings, norms or biases."""
    return len(shape) >= 2 and "embed" not in name and not name.endswith(".bias")


def weight_bytes(model_dir: Path, settings: RuntimeSettings, dtype: str) -> int:
    total = 0
    for name, info in _headers(model_dir).items():
        if not settings.audio_output and name.startswith(_SPEECH_PREFIXES):
            continue
        shape = list(info.get("shape", []))
        count = math.prod(shape)
        if settings.quantization == "int8" and _int8_quantized(name, shape):
            total += count
        elif info.get("dtype") in ("F32", "F16", "BF16", "F64"):
            total += count * _DTYPE_BYTES[dtype]
        else:
            total += count * _FILE_DTYPE_BYTES.get(str(info.get("dtype")), 4)
    return total


def _configs(model_dir: Path) -> tuple[Any, Any]:
    """The model's config and its batched text part (for Qwen3-Omni: the thinker's)."""
    import transformers

    auto: Any = transformers.AutoConfig  # untyped
    config = auto.from_pretrained(str(model_dir))
    return config, config.get_text_config()


def _batched_class(config: Any) -> type:
    """The class models/loading.py batches on: the thinker for Qwen3-Omni."""
    import transformers

    if config.model_type == OMNI_MODEL_TYPE:
        thinker: type = transformers.Qwen3OmniMoeThinkerForConditionalGeneration
        return thinker
    mapping: Any = transformers.MODEL_FOR_CAUSAL_LM_MAPPING  # AutoModelForCausalLM's
    if type(config) not in mapping:
        raise ModelLoadError(f"transformers has no causal LM for model_type {config.model_type}")
    found: type = mapping[type(config)]
    return found


def estimate(
    model_dir: Path, settings: RuntimeSettings, on_gpu: bool, cb_config_kwargs: CbConfigKwargs
) -> Estimate:
    import torch
    import transformers

    torch_dtype = resolve_dtype(settings.dtype, on_gpu)
    dtype = str(torch_dtype).removeprefix("torch.")
    weights = weight_bytes(model_dir, settings, dtype)
    config, text = _configs(model_dir)
    model_len = int(getattr(text, "max_position_embeddings", 4096))
    context = min(settings.max_model_len or model_len, model_len)  # as models/loading.py
    cb_config_cls: Any = transformers.ContinuousBatchingConfig  # untyped constructor
    cb_config = cb_config_cls(**cb_config_kwargs(settings, context, on_gpu))
    # CPU: num_blocks, a full batch of full-length sequences; GPU: transformers fills
    # free memory with cache, and one full-length sequence must fit.
    footprint, cache, tokens, percent = compat.continuous_batching_footprint(
        text,
        cb_config,
        torch_dtype,
        context,
        _batched_class(config),
        torch.device("cuda" if on_gpu else "cpu"),
    )
    headroom = max(MIN_HEADROOM, int(HEADROOM_FRACTION * weights))
    return Estimate(weights, cache, tokens, footprint - cache, percent, headroom, dtype)


def _cgroup_room() -> int | None:
    """What the container's cgroup v2 memory limit leaves, if it has one."""
    try:
        limit = (_CGROUP / "memory.max").read_text().strip()
        if limit == "max":
            return None
        return int(limit) - int((_CGROUP / "memory.current").read_text().strip())
    except (OSError, ValueError):
        return None


def available(on_gpu: bool) -> tuple[int, str]:
    """Bytes the model may use, and where ("2 GPUs", "CPU RAM")."""
    import torch

    if on_gpu:
        count = torch.cuda.device_count()
        free = sum(torch.cuda.mem_get_info(i)[0] for i in range(count))
        return int(free), f"{count} GPU{'s' if count > 1 else ''} ({torch.cuda.get_device_name(0)})"
    psutil: Any = importlib.import_module("psutil")  # untyped

    room = int(psutil.virtual_memory().available)
    cgroup = _cgroup_room()
    if cgroup is not None and cgroup < room:
        return cgroup, "CPU RAM within the container's memory limit"
    return room, "CPU RAM"


def check_fit(
    settings: RuntimeSettings, cb_config_kwargs: CbConfigKwargs, on_gpu: bool | None = None
) -> Estimate:
    """Raise ModelDoesNotFit, one line naming the numbers and what to change (or
    ModelLoadError when the directory is not a model directory)."""
    import torch

    model_dir = settings.model_dir
    read_model_type(model_dir)  # a clear error for a missing or foreign directory
    if on_gpu is None:
        on_gpu = torch.cuda.is_available()
    need = estimate(model_dir, settings, on_gpu, cb_config_kwargs)
    if settings.memory_limit_bytes is not None:
        have, where = settings.memory_limit_bytes, "memory_limit_bytes"
    else:
        have, where = available(on_gpu)
    if need.total <= have:
        return need
    advice = ["more GPUs" if on_gpu else "more memory"]
    if settings.quantization == "none" and need.dtype != "float32":
        advice.append("quantization int8")
    if need.weights + need.headroom < have:  # the weights fit, continuous batching does not
        knobs = "" if on_gpu else ", max_batch_size"
        advice.append(f"a smaller max_model_len{knobs} or max_batched_tokens")
    raise ModelDoesNotFit(
        f"the model does not fit: it needs about {size(need.total)} "
        f"(weights {size(need.weights)} at {need.dtype}"
        f"{' with int8' if settings.quantization == 'int8' else ''}; continuous batching "
        f"{size(need.batching)}, KV cache {size(need.kv_cache)} for {need.kv_tokens} tokens "
        f"and buffers {size(need.buffers)}, which transformers allows only "
        f"{need.max_memory_percent:.0%} of free memory for: {size(need.batching_room)}; "
        f"headroom {size(need.headroom)}) but {where} has {size(have)}; "
        f"use {', or '.join(advice)}"
    )
