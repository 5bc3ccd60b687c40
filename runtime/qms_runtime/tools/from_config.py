"""`qms-runtime tiny-model --from-config DIR`: a random-weight model from a real checkpoint's
non-weight files (config, tokenizer, chat template, processor configs), fewer layers.

Everything a request's handling depends on is the real checkpoint's: the tokenizer and its
special tokens, the chat template wherever the checkpoint keeps it, the processor
configs, the vocabulary size, every special token id in the config, the rope and m-RoPE
settings (head_dim included), the patch, merge and temporal sizes and the mel settings.
What changes is written in `qms-tiny-model.json` (`changed`):

- dense and MoE Qwen3: the decoder layers only (`num_hidden_layers`);
- Qwen3-Omni-MoE: the layers of every part, and the widths of its 30B (hidden sizes,
  experts, heads), so that the model builds in seconds and runs on a CPU: a 2-layer
  thinker at full width is 1.8 billion parameters.

The real files are copied into the model directory (never into the repository) and
`generation_config.json` is the checkpoint's own, byte for byte.
"""

from __future__ import annotations

import copy
import json
import logging
import shutil
from pathlib import Path
from typing import Any

from qms_runtime.models.checksums import write_sha256sums

log = logging.getLogger(__name__)

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".gguf")
_NOT_COPIED = {"SOURCES.md", "README.md", "SHA256SUMS", "model.safetensors.index.json"}

# Qwen3-Omni-MoE: (dotted path in config.json, value), applied after the layer counts.
_OMNI_WIDTHS: tuple[tuple[str, Any], ...] = (
    ("thinker_config.text_config.hidden_size", 256),
    ("thinker_config.text_config.num_attention_heads", 4),
    ("thinker_config.text_config.num_key_value_heads", 2),
    ("thinker_config.text_config.num_experts", 8),
    ("thinker_config.text_config.num_experts_per_tok", 2),
    ("thinker_config.text_config.moe_intermediate_size", 64),
    ("thinker_config.text_config.intermediate_size", 128),
    ("thinker_config.vision_config.depth", 1),
    ("thinker_config.vision_config.hidden_size", 64),
    ("thinker_config.vision_config.intermediate_size", 128),
    ("thinker_config.vision_config.num_heads", 2),
    ("thinker_config.vision_config.out_hidden_size", 256),
    ("thinker_config.vision_config.deepstack_visual_indexes", [0]),
    ("thinker_config.audio_config.encoder_layers", 1),
    ("thinker_config.audio_config.num_hidden_layers", 1),  # its alias: read last, it wins
    ("thinker_config.audio_config.d_model", 64),
    ("thinker_config.audio_config.encoder_attention_heads", 2),
    ("thinker_config.audio_config.encoder_ffn_dim", 128),
    ("thinker_config.audio_config.output_dim", 256),
    ("thinker_config.audio_config.downsample_hidden_size", 32),
    ("talker_config.thinker_hidden_size", 256),
    ("talker_config.accept_hidden_layer", 1),
    ("talker_config.text_config.hidden_size", 64),
    ("talker_config.text_config.num_hidden_layers", 1),
    ("talker_config.text_config.num_attention_heads", 2),
    ("talker_config.text_config.num_key_value_heads", 1),
    ("talker_config.text_config.num_experts", 4),
    ("talker_config.text_config.num_experts_per_tok", 2),
    ("talker_config.text_config.moe_intermediate_size", 32),
    ("talker_config.text_config.shared_expert_intermediate_size", 64),
    ("talker_config.text_config.intermediate_size", 128),
    ("talker_config.code_predictor_config.hidden_size", 64),
    ("talker_config.code_predictor_config.num_hidden_layers", 1),
    ("talker_config.code_predictor_config.layer_types", ["full_attention"]),
    ("talker_config.code_predictor_config.num_attention_heads", 2),
    ("talker_config.code_predictor_config.num_key_value_heads", 1),
    ("talker_config.code_predictor_config.intermediate_size", 128),
    ("code2wav_config.hidden_size", 64),
    ("code2wav_config.num_hidden_layers", 1),
    ("code2wav_config.num_attention_heads", 2),
    ("code2wav_config.num_key_value_heads", 2),
    ("code2wav_config.intermediate_size", 128),
    ("code2wav_config.decoder_dim", 64),
    ("code2wav_config.codebook_dim", 64),
    ("code2wav_config.vector_quantization_hidden_dimension", 64),
)


def _set(config: dict[str, Any], path: str, value: Any) -> None:
    *parents, key = path.split(".")
    node = config
    for parent in parents:
        node = node[parent]
    if key not in node:
        raise ValueError(f"the config has no {path}: not the checkpoint this maker knows")
    node[key] = value


def shrunk_config(config: dict[str, Any], layers: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """The config with fewer layers (and, for Omni, narrower parts); what was changed."""
    model_type = config.get("model_type")
    result = copy.deepcopy(config)
    changes: dict[str, Any] = {}

    def change(path: str, value: Any) -> None:
        _set(result, path, value)
        changes[path] = value

    if model_type in ("qwen3", "qwen3_moe"):
        change("num_hidden_layers", layers)
        if isinstance(result.get("layer_types"), list):
            change("layer_types", result["layer_types"][:layers])
    elif model_type == "qwen3_omni_moe":
        change("thinker_config.text_config.num_hidden_layers", layers)
        for path, value in _OMNI_WIDTHS:
            change(path, value)
    else:
        raise ValueError(
            f"--from-config knows qwen3, qwen3_moe and qwen3_omni_moe, not {model_type}"
        )
    return result, changes


def write_from_config(
    target: Path, config_dir: Path, layers: int = 2, seed: int = 0, dtype: str = "bfloat16"
) -> Path:
    """Write a random-weight model built from `config_dir`'s real files into `target`."""
    import torch
    import transformers

    real = json.loads((config_dir / "config.json").read_text(encoding="utf-8"))
    shrunk, changes = shrunk_config(real, layers)
    target.mkdir(parents=True, exist_ok=True)
    copied = []
    for path in sorted(config_dir.iterdir()):
        if (
            path.is_file()
            and path.name not in _NOT_COPIED
            and not path.name.endswith(WEIGHT_SUFFIXES)
        ):
            shutil.copyfile(path, target / path.name)
            copied.append(path.name)
    (target / "config.json").write_text(json.dumps(shrunk, indent=2) + "\n", encoding="utf-8")
    config: Any = transformers.AutoConfig.from_pretrained(str(target))
    torch.manual_seed(seed)
    if real["model_type"] == "qwen3_omni_moe":
        model: Any = transformers.Qwen3OmniMoeForConditionalGeneration(config)
    else:
        auto: Any = transformers.AutoModelForCausalLM
        model = auto.from_config(config)
    model = model.to(getattr(torch, dtype))
    model.save_pretrained(str(target))
    # save_pretrained writes the config transformers normalised and a generation config
    # derived from it: the checkpoint's own generation_config.json is what serves.
    if (config_dir / "generation_config.json").is_file():
        shutil.copyfile(config_dir / "generation_config.json", target / "generation_config.json")
    elif (target / "generation_config.json").exists():
        (target / "generation_config.json").unlink()
    params = sum(p.numel() for p in model.parameters())
    (target / "qms-tiny-model.json").write_text(
        json.dumps(
            dict(
                arch=real["model_type"],
                size="from-config",
                source=str(config_dir),
                seed=seed,
                layers=layers,
                parameters=params,
                copied=copied,
                changed=changes,
            ),
            indent=2,
        )
        + "\n",
        encoding="utf-8",
    )
    write_sha256sums(target)
    log.info(
        "wrote %s model (%d parameters) from %s to %s",
        real["model_type"],
        params,
        config_dir,
        target,
    )
    return target
