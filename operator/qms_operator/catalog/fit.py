"""Will a server's model fit the GPUs its spec allows? Decided from the spec alone, before
any pod starts, for the models of the catalog (catalog/sizing.py's least need: the
weights, the KV cache of one sequence of maxModelLen, headroom). Unknown models, CPU
servers, accelerator types the catalog does not know and `gpu.fitCheck: false` are left
to the runtime's check in the pod."""

from __future__ import annotations

from ..spec import QwenModelServerSpec
from .gpus import GPUS, GpuType, find_gpu
from .models import QwenModel, find_model
from .sizing import Need, gpus_needed, need, size


def model_need(model: QwenModel, spec: QwenModelServerSpec, context: int) -> Need:
    """The least one replica needs of `model` at `context` tokens, with the spec's dtype
    (auto: BF16 on GPU), quantization and speech."""
    dtype = "bfloat16" if spec.runtime.dtype == "auto" else spec.runtime.dtype
    int8 = spec.runtime.quantization == "int8"
    return need(model, dtype, int8=int8, speech=spec.runtime.audio_output, context=context)


def spec_need(spec: QwenModelServerSpec) -> Need | None:
    """The least one replica of this spec needs, or None when the model is unknown."""
    model = find_model(spec.model.preset or spec.model.name)
    if model is None:
        return None
    return model_need(model, spec, spec.runtime.batching.max_model_len)


def accepted_gpus(spec: QwenModelServerSpec) -> list[GpuType]:
    """The accepted accelerator types, when the catalog knows every one of them (a pod
    may land on any); empty when none is named or one is unknown."""
    types = [find_gpu(label) for label in spec.resources.gpu.accelerator_types]
    known = [t for t in types if t is not None]
    return known if len(known) == len(types) else []


def does_not_fit(spec: QwenModelServerSpec) -> str | None:
    """Why this spec's model cannot fit any accelerator type it accepts, with what would;
    None when it fits or the check does not apply."""
    gpu = spec.resources.gpu
    if not gpu.fit_check or gpu.count == 0:
        return None
    allowed = accepted_gpus(spec)
    required = spec_need(spec)
    if required is None or not allowed:
        return None  # none named, or one the catalog does not know: it might hold it
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
