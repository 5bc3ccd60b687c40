"""What a catalog model needs on its GPUs, before any pod starts. Pure arithmetic.

The runtime's own fit check (runtime/qms_runtime/models/fit.py) runs in the pod, reads the
safetensors headers and asks transformers how much its continuous batching will
allocate: weights + that footprint / its max_memory_percent + headroom. The operator has
neither the files nor transformers, so it computes the parts it can know exactly, with
the runtime's own rules: the weights (each tensor's parameters at the dtype; int8 for
the 2-D weights besides embeddings, as models/quantization.py quantizes them; the
Qwen3-Omni talker and code2wav only when speech is on), the KV cache of the sequences
asked for at the context, and the same headroom (5% of the weights, at least 256 MiB).
That sum leaves out transformers' buffers (masks, read buffers, activation peak) and its
memory share, so it is never more than the runtime's figure: a server the operator
refuses is one the runtime would refuse too (tests/operator/test_catalog.py checks both
on the same model files), and what passes here is still checked in the pod.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .gpus import GpuType
from .models import QwenModel, TextArch

GIB = 1024**3
HEADROOM_FRACTION = 0.05  # as the runtime's models/fit.py
MIN_HEADROOM = 256 * 1024**2
DTYPE_BYTES = {"bfloat16": 2, "float16": 2, "float32": 4}


def text_params(arch: TextArch) -> tuple[int, int]:
    """(parameters int8 quantizes: 2-D weights besides the embeddings, the rest: the
    embeddings and the norms) of a Qwen3 / Qwen3-MoE text model as transformers builds it
    (q/k norms per head, no biases, a router per MoE layer, lm_head unless tied)."""
    a = arch
    attention = a.hidden * a.head_dim * (2 * a.heads + 2 * a.kv_heads)  # q, k, v, o
    if a.experts:
        mlp = a.hidden * a.experts + a.experts * 3 * a.hidden * a.moe_intermediate
    else:
        mlp = 3 * a.hidden * a.intermediate
    head = 0 if a.tied else a.vocab * a.hidden
    int8able = a.layers * (attention + mlp) + head
    norms = a.layers * (2 * a.hidden + 2 * a.head_dim) + a.hidden
    return int8able, a.vocab * a.hidden + norms


def parameters(model: QwenModel, speech: bool = False) -> int:
    """What the server loads: the text model (Qwen3-Omni: the thinker, its encoders
    included), plus the talker and code2wav when it speaks."""
    int8able, rest = text_params(model.arch)
    total = int8able + rest + sum(model.encoder_params)
    return total + (model.speech_params if speech else 0)


def kv_bytes_per_token(arch: TextArch, dtype: str) -> int:
    """K and V of every layer for one token (the cache keeps the model's dtype)."""
    return 2 * arch.layers * arch.kv_heads * arch.head_dim * DTYPE_BYTES[dtype]


def weight_bytes(model: QwenModel, dtype: str, int8: bool, speech: bool) -> int:
    size = DTYPE_BYTES[dtype]
    int8able, rest = text_params(model.arch)
    enc_int8able, enc_rest = model.encoder_params
    if int8:
        total = int8able + enc_int8able + size * (rest + enc_rest)
    else:
        total = size * (int8able + rest + enc_int8able + enc_rest)
    # The talker and code2wav are counted at the dtype (int8 estimate left conservative).
    return total + (size * model.speech_params if speech else 0)


@dataclass(frozen=True)
class Need:
    """What one replica needs, at least."""

    model: QwenModel
    dtype: str
    int8: bool
    speech: bool
    context: int
    sequences: int
    weights: int
    kv_cache: int
    headroom: int

    @property
    def total(self) -> int:
        return self.weights + self.kv_cache + self.headroom


def need(
    model: QwenModel,
    dtype: str = "bfloat16",
    int8: bool = False,
    speech: bool | None = None,
    context: int | None = None,
    sequences: int = 1,
) -> Need:
    """The least a replica needs: the weights, the KV cache of `sequences` sequences of
    `context` tokens (default: the model's max_position_embeddings, which the runtime
    caps max_model_len to), and the headroom. `speech`: default whether the model speaks."""
    speech = model.speaks if speech is None else speech and model.speaks
    context = min(context or model.arch.max_positions, model.arch.max_positions)
    weights = weight_bytes(model, dtype, int8, speech)
    kv = sequences * context * kv_bytes_per_token(model.arch, dtype)
    headroom = max(MIN_HEADROOM, int(HEADROOM_FRACTION * weights))
    return Need(model, dtype, int8, speech, context, sequences, weights, kv, headroom)


def gpus_needed(required: Need, gpu: GpuType) -> int:
    """The fewest GPUs of that type whose memory together holds `required` (the runtime
    splits the layers over the GPUs of one replica)."""
    return max(1, math.ceil(required.total / gpu.memory_bytes))


def size(count: int) -> str:
    """Bytes as people read GPU memory: GiB with one decimal, or MiB below 0.1 GiB."""
    return f"{count / GIB:.1f} GiB" if count >= GIB // 10 else f"{count / 1024**2:.0f} MiB"
