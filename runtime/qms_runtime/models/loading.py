"""Load a local Qwen model directory: architecture, device, dtype, quantization, tokenizer.

Qwen3 dense and Qwen3-MoE load as causal LMs; Qwen3-Omni-MoE loads with its talker
disabled and batches on `model.thinker` (the text path).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from qms_runtime import compat
from qms_runtime.models.templates import use_chat_template
from qms_runtime.settings import RuntimeSettings

log = logging.getLogger(__name__)

OMNI_MODEL_TYPE = "qwen3_omni_moe"


class ModelLoadError(Exception):
    """The model directory cannot be served (bad config, no kernels for this GPU, ...)."""


@dataclass
class LoadedModel:
    model: Any  # the module that runs continuous batching (the thinker for Omni)
    tokenizer: Any
    model_type: str
    device: torch.device
    dtype: torch.dtype
    eos_token_ids: tuple[int, ...]
    max_model_len: int
    vocab_size: int
    processor: Any = None  # Qwen3-Omni: the media processor (engine/media_runner.py)
    speech_model: Any = None  # Qwen3-Omni with audio_output: the full model (talker, code2wav)
    generation_defaults: dict[str, float] = field(default_factory=dict)  # generation_config.json


# The keys of generation_config.json that are defaults of a request's sampling.
DEFAULT_KEYS = ("temperature", "top_p", "top_k", "min_p", "repetition_penalty")


def generation_defaults(model_dir: Path) -> dict[str, float]:
    """The sampling defaults the model ships in generation_config.json (only the keys it
    sets: transformers' GenerationConfig fills library defaults, e.g. top_k 50, in)."""
    path = model_dir / "generation_config.json"
    try:
        config = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    except (OSError, ValueError) as exc:
        log.warning("%s is not readable JSON (%s): OpenAI's sampling defaults apply", path, exc)
        return {}
    defaults: dict[str, float] = {}
    for key in DEFAULT_KEYS:
        value = config.get(key) if isinstance(config, dict) else None
        if isinstance(value, int | float) and not isinstance(value, bool):
            defaults[key] = float(value)
    if isinstance(config, dict) and config.get("do_sample") is False:
        defaults["temperature"] = 0.0  # the model asks for greedy decoding
    return defaults


def read_model_type(model_dir: Path) -> str:
    config_path = model_dir / "config.json"
    if not config_path.is_file():
        raise ModelLoadError(f"{config_path} not found: not a model directory")
    config = json.loads(config_path.read_text(encoding="utf-8"))
    model_type = config.get("model_type")
    if not isinstance(model_type, str):
        raise ModelLoadError(f"{config_path} has no model_type")
    return model_type


def resolve_dtype(setting: str, on_gpu: bool) -> torch.dtype:
    if setting == "auto":
        return torch.bfloat16 if on_gpu else torch.float32
    return {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}[setting]


def torch_supports_capability(archs: list[str], major: int, minor: int) -> bool:
    """Whether kernels built for `archs` (torch.cuda.get_arch_list()) run on `major.minor`.

    `sm_XY` cubins run on the same major version with an equal or newer minor; `compute_XY`
    PTX is JIT-compiled for any newer GPU.
    """
    capability = major * 10 + minor
    for arch in archs:
        kind, _, digits = arch.partition("_")
        digits = digits.rstrip("abf")
        if not digits.isdigit():
            continue
        number = int(digits)
        if kind == "sm" and number // 10 == major and number % 10 <= minor:
            return True
        if kind == "compute" and number <= capability:
            return True
    return False


def check_cuda_kernels() -> None:
    """Fail plainly when this torch build has no kernels for the GPU ("no kernel image")."""
    major, minor = torch.cuda.get_device_capability(0)
    name = torch.cuda.get_device_name(0)
    archs = torch.cuda.get_arch_list()
    if not torch_supports_capability(archs, major, minor):
        raise ModelLoadError(
            f"this torch build ({torch.__version__}, CUDA {torch.version.cuda}) has no kernels for "
            f"{name} (compute capability {major}.{minor}); it was built for {archs}. "
            "Install a torch build that supports this GPU."
        )
    log.info(
        "GPU %s (capability %d.%d) is supported by torch %s", name, major, minor, torch.__version__
    )


def _quantization_kwargs(settings: RuntimeSettings) -> dict[str, Any]:
    if settings.quantization == "none":
        return {}
    from qms_runtime.models.quantization import int8_load_kwargs

    return int8_load_kwargs()


def _placement(on_gpu: bool) -> dict[str, Any]:
    if not on_gpu:
        return {"device_map": "cpu"}
    if torch.cuda.device_count() > 1:
        return {"device_map": "auto"}
    return {"device_map": {"": 0}}


def load_processor(model_dir: Path) -> Any:
    """The model directory's Qwen3OmniMoeProcessor (image, audio and video processors)."""
    import transformers

    auto: Any = transformers.AutoProcessor  # untyped
    return auto.from_pretrained(str(model_dir))


def load_model(settings: RuntimeSettings) -> LoadedModel:
    import transformers

    compat.check_transformers()
    model_dir = settings.model_dir
    model_type = read_model_type(model_dir)
    on_gpu = torch.cuda.is_available()
    if on_gpu:
        check_cuda_kernels()
    dtype = resolve_dtype(settings.dtype, on_gpu)
    kwargs: dict[str, Any] = {
        "dtype": dtype,
        "attn_implementation": "sdpa",
        **_placement(on_gpu),
        **_quantization_kwargs(settings),
    }
    log.info(
        "loading %s model from %s (%s, %s)", model_type, model_dir, dtype, kwargs["device_map"]
    )
    if settings.audio_output and model_type != OMNI_MODEL_TYPE:
        raise ModelLoadError(f"audio_output needs a Qwen3-Omni model, not {model_type}")
    if settings.audio_output and settings.quantization != "none":
        raise ModelLoadError("audio_output cannot be combined with quantization")
    speech_model = None
    eos_source: Any = None  # the model whose generation config names the EOS tokens
    if model_type == OMNI_MODEL_TYPE and settings.quantization == "none":
        owner = transformers.Qwen3OmniMoeForConditionalGeneration.from_pretrained(
            str(model_dir), enable_audio_output=settings.audio_output, **kwargs
        )
        model = owner.thinker
        eos_source = owner  # the thinker's own generation config has no eos_token_id
        if settings.audio_output:
            speech_model = owner  # from_pretrained leaves every part in eval mode
            compat.fix_talker_config(owner)
    elif model_type == OMNI_MODEL_TYPE:
        # transformers' torchao loader needs the top-level input embeddings, which the
        # Omni wrapper does not expose; the thinker class reads the same checkpoint.
        model = transformers.Qwen3OmniMoeThinkerForConditionalGeneration.from_pretrained(
            str(model_dir), **kwargs
        )
    else:
        model = transformers.AutoModelForCausalLM.from_pretrained(str(model_dir), **kwargs)
    model.eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(model_dir))
    processor = None
    if model_type == OMNI_MODEL_TYPE:
        try:
            processor = load_processor(model_dir)
        except Exception as exc:  # text still works; media requests get 400
            log.warning("no media processor in %s (%s): text only", model_dir, exc)
    template_source = use_chat_template(model_dir, tokenizer, processor)
    if template_source is None:
        log.warning("%s has no chat template: /v1/chat/completions will answer 400", model_dir)
    else:
        log.info("chat template from %s", template_source)
    text_config = model.config.get_text_config()
    model_len = int(getattr(text_config, "max_position_embeddings", 4096))
    max_model_len = min(settings.max_model_len or model_len, model_len)
    return LoadedModel(
        model=model,
        tokenizer=tokenizer,
        model_type=model_type,
        device=model.device,
        dtype=dtype,
        eos_token_ids=_eos_ids(model if eos_source is None else eos_source, tokenizer),
        max_model_len=max_model_len,
        vocab_size=int(text_config.vocab_size),
        processor=processor,
        speech_model=speech_model,
        generation_defaults=generation_defaults(model_dir) if settings.model_defaults else {},
    )


def _eos_ids(model: Any, tokenizer: Any) -> tuple[int, ...]:
    ids: list[int] = []
    configured = getattr(model.generation_config, "eos_token_id", None)
    if isinstance(configured, int):
        ids.append(configured)
    elif isinstance(configured, list):
        ids.extend(int(i) for i in configured)
    if tokenizer.eos_token_id is not None and tokenizer.eos_token_id not in ids:
        ids.append(int(tokenizer.eos_token_id))
    return tuple(ids)
