"""What the operator knows of Qwen models and GPUs (data, with sources) and the sizing
arithmetic over them: pure, no I/O (`qms-operator size` prints it)."""

from .fit import does_not_fit, spec_need
from .gpus import GPUS, GpuType, find_gpu
from .models import MODELS, SOURCES, QwenModel, Sampling, TextArch, find_model
from .presets import UnknownPreset, apply_preset
from .sizing import Need, gpus_needed, kv_bytes_per_token, need, parameters, text_params

__all__ = [
    "GPUS",
    "MODELS",
    "SOURCES",
    "GpuType",
    "Need",
    "QwenModel",
    "Sampling",
    "TextArch",
    "UnknownPreset",
    "apply_preset",
    "does_not_fit",
    "find_gpu",
    "find_model",
    "gpus_needed",
    "kv_bytes_per_token",
    "need",
    "parameters",
    "spec_need",
    "text_params",
]
