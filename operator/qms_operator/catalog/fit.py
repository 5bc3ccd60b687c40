"""Will a server's model fit the GPUs its spec allows? Decided from the spec alone, before
any pod starts, for the models of the catalog (catalog/sizing.py's least need: the
weights, the KV cache of one sequence of maxModelLen, headroom). Unknown models, CPU
servers, accelerator types the catalog does not know and `gpu.fitCheck: false` are left
to the runtime's check in the pod."""

from __future__ import annotations

from ..spec import QwenModelServerSpec
from .gpus import GPUS, GpuType, find_gpu
from .models import find_model
from .sizing import Need, gpus_needed, need, size


def spec_need(spec: QwenModelServerSpec) -> Need | None:
    """The least one replica of this spec needs, or None when the model is unknown."""
    model = find_model(spec.model.preset or spec.model.name)
    if model is None:
        return None
    dtype = "bfloat16" if spec.runtime.dtype == "auto" else spec.runtime.dtype
    return need(
        model,
        dtype,
        int8=spec.runtime.quantization == "int8",
        speech=spec.runtime.audio_output,
        context=spec.runtime.batching.max_model_len,
    )


def does_not_fit(spec: QwenModelServerSpec) -> str | None:
    """Why this spec's model cannot fit any accelerator type it accepts, with what would;
    None when it fits or the check does not apply."""
    gpu = spec.resources.gpu
    if not gpu.fit_check or gpu.count == 0:
        return None
    allowed = [t for t in (find_gpu(label) for label in gpu.accelerator_types) if t is not None]
    required = spec_need(spec)
    if required is None or not allowed or len(allowed) < len(gpu.accelerator_types):
        return None  # an accepted type the catalog does not know might hold it
    if any(gpu.count * t.memory_bytes >= required.total for t in allowed):
        return None
    best = max(allowed, key=lambda t: t.memory_bytes)
    have = gpu.count * best.memory_bytes
    what = "weights" + (" with int8" if required.int8 else "")
    speech = ", speech on" if required.speech else ""
    return (
        f"{required.model.name} does not fit: it needs at least {size(required.total)} per "
        f"replica ({what} {size(required.weights)} at {required.dtype}{speech}, KV cache "
        f"{size(required.kv_cache)} for {required.context:,} tokens, headroom "
        f"{size(required.headroom)}) but {gpu.count} x {best.name} has {size(have)}; "
        f"use {', or '.join(_advice(spec, required, best))}"
    )


def _advice(spec: QwenModelServerSpec, required: Need, allowed: GpuType) -> list[str]:
    advice = [f"resources.gpu.count: {gpus_needed(required, allowed)} ({allowed.name})"]
    single = next((t for t in GPUS if t.memory_bytes >= required.total), None)
    if single is not None and single is not allowed:
        advice.append(f"acceleratorTypes [{single.labels[0]}] (one {single.name} holds it)")
    count = spec.resources.gpu.count
    if not required.int8 and required.dtype != "float32":
        int8 = need(required.model, required.dtype, True, required.speech, required.context)
        if count * allowed.memory_bytes >= int8.total:
            advice.append(f"runtime.quantization: int8 (at least {size(int8.total)})")
    if count * allowed.memory_bytes >= required.weights + required.headroom:
        advice.append("a shorter runtime.batching.maxModelLen")
    return advice
