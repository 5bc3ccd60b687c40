"""Will the model fit? An estimate from the safetensors headers, before anything loads.

A 30B model on a 16 GB GPU would otherwise load for minutes, die out of memory and
restart in a loop. The estimate: weight bytes at the configured dtype (or int8 for what
int8 quantizes) from each tensor's shape in the file headers (nothing but the headers is
read), plus the KV cache the settings imply, plus headroom for activations. It is
compared with what the device can give: free GPU memory (`torch.cuda.mem_get_info`,
summed over the GPUs), or on CPU the available RAM within the container's memory limit
(cgroup v2 `memory.max`). `memory_limit_bytes` overrides what is available.
"""

from __future__ import annotations

import importlib
import json
import math
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qms_runtime.models.loading import read_model_type
from qms_runtime.settings import RuntimeSettings

GIB = 1024**3
HEADROOM_FRACTION = 0.05  # activations, CUDA context, allocator slack
MIN_HEADROOM = 256 * 1024**2
_DTYPE_BYTES = {"bfloat16": 2, "float16": 2, "float32": 4}
_FILE_DTYPE_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2,
                     "I8": 1, "U8": 1, "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1}  # fmt: skip
_SPEECH_PREFIXES = ("talker.", "code2wav.")  # Qwen3-Omni parts loaded only for speech out
_CGROUP = Path("/sys/fs/cgroup")


def size(count: int) -> str:
    return f"{count / GIB:.1f} GiB" if count >= GIB // 10 else f"{count / 1024**2:.0f} MiB"


class ModelDoesNotFit(Exception):
    """The estimate exceeds what the device has (a fatal start-up error)."""


@dataclass(frozen=True)
class Estimate:
    weights: int
    kv_cache: int
    kv_tokens: int
    headroom: int
    dtype: str

    @property
    def total(self) -> int:
        return self.weights + self.kv_cache + self.headroom


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


def _text_config(model_dir: Path) -> dict[str, Any]:
    config: dict[str, Any] = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    thinker = config.get("thinker_config") or {}
    found: dict[str, Any] = thinker.get("text_config") or config.get("text_config") or config
    return found


def kv_bytes_per_token(model_dir: Path, dtype: str) -> int:
    config = _text_config(model_dir)
    heads = int(config["num_attention_heads"])
    kv_heads = int(config.get("num_key_value_heads") or heads)
    head_dim = int(config.get("head_dim") or int(config["hidden_size"]) // heads)
    return 2 * int(config["num_hidden_layers"]) * kv_heads * head_dim * _DTYPE_BYTES[dtype]


def estimate(model_dir: Path, settings: RuntimeSettings, on_gpu: bool) -> Estimate:
    dtype = settings.dtype if settings.dtype != "auto" else ("bfloat16" if on_gpu else "float32")
    weights = weight_bytes(model_dir, settings, dtype)
    config = _text_config(model_dir)
    model_len = int(config.get("max_position_embeddings", 4096))
    context = min(settings.max_model_len or model_len, model_len)
    # CPU: the engine allocates pages for a full batch of full-length sequences; GPU:
    # transformers sizes the cache from free memory, and one full-length sequence must fit.
    tokens = context * (1 if on_gpu else settings.max_batch_size)
    kv = kv_bytes_per_token(model_dir, dtype) * tokens
    headroom = max(MIN_HEADROOM, int(HEADROOM_FRACTION * weights))
    return Estimate(weights, kv, tokens, headroom, dtype)


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


def check_fit(settings: RuntimeSettings, on_gpu: bool | None = None) -> Estimate:
    """Raise ModelDoesNotFit, one line naming both numbers and what to change (or
    ModelLoadError when the directory is not a model directory)."""
    import torch

    model_dir = settings.model_dir
    read_model_type(model_dir)  # a clear error for a missing or foreign directory
    if on_gpu is None:
        on_gpu = torch.cuda.is_available()
    need = estimate(model_dir, settings, on_gpu)
    if settings.memory_limit_bytes is not None:
        have, where = settings.memory_limit_bytes, "memory_limit_bytes"
    else:
        have, where = available(on_gpu)
    if need.total <= have:
        return need
    advice = ["more GPUs" if on_gpu else "more memory"]
    if settings.quantization == "none" and need.dtype != "float32":
        advice.append("quantization int8")
    if need.kv_cache > need.weights // 10:
        advice.append("a smaller max_model_len" + ("" if on_gpu else " or max_batch_size"))
    raise ModelDoesNotFit(
        f"the model does not fit: it needs about {size(need.total)} "
        f"(weights {size(need.weights)} at {need.dtype}"
        f"{' with int8' if settings.quantization == 'int8' else ''}, KV cache "
        f"{size(need.kv_cache)} for {need.kv_tokens} tokens, headroom "
        f"{size(need.headroom)}) but {where} has {size(have)}; "
        f"use {', or '.join(advice)}"
    )
