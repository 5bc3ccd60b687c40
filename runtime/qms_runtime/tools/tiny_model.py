"""`qms-runtime tiny-model`: real Qwen configs shrunk, random weights, a fresh tokenizer.

Used by the tests, the demo and the benchmark. Two sizes: `tiny` (hidden 64, 2 layers:
fast tests) and `small` (about 20M parameters for the dense model: benchmarks). The Omni
model also gets its processor configs (tiny_processor.py), so it takes images and audio.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Literal

from qms_runtime.models.checksums import write_sha256sums
from qms_runtime.tools.tiny_processor import MEDIA_TOKENS, add_media_tokens, write_processor_configs
from qms_runtime.tools.tiny_tokenizer import ENDOFTEXT, IM_END, IM_START, train_tokenizer

Arch = Literal["qwen3", "qwen3_moe", "qwen3_omni_moe"]
Size = Literal["tiny", "small"]
ARCHS: tuple[Arch, ...] = ("qwen3", "qwen3_moe", "qwen3_omni_moe")
SIZES: tuple[Size, ...] = ("tiny", "small")

log = logging.getLogger(__name__)

_DIMS: dict[Size, dict[str, int]] = {
    "tiny": dict(
        vocab=512,
        hidden=64,
        inter=128,
        layers=2,
        heads=4,
        kv=2,
        head_dim=16,
        experts=4,
        top_k=2,
        moe_inter=32,
        max_pos=512,
    ),
    "small": dict(
        vocab=4096,
        hidden=512,
        inter=1536,
        layers=6,
        heads=8,
        kv=4,
        head_dim=64,
        experts=8,
        top_k=2,
        moe_inter=256,
        max_pos=2048,
    ),
}


def _round_up(value: int, multiple: int) -> int:
    return (value + multiple - 1) // multiple * multiple


def _text_config(size: Size, vocab: int, moe: bool) -> dict[str, Any]:
    d = _DIMS[size]
    config: dict[str, Any] = dict(
        vocab_size=vocab,
        hidden_size=d["hidden"],
        intermediate_size=d["inter"],
        num_hidden_layers=d["layers"],
        num_attention_heads=d["heads"],
        num_key_value_heads=d["kv"],
        head_dim=d["head_dim"],
        max_position_embeddings=d["max_pos"],
        rms_norm_eps=1e-6,
    )
    if moe:
        config.update(
            num_experts=d["experts"],
            num_experts_per_tok=d["top_k"],
            moe_intermediate_size=d["moe_inter"],
            decoder_sparse_step=1,
            norm_topk_prob=True,
        )
    return config


def _omni_config(size: Size, vocab: int, ids: dict[str, int]) -> Any:
    """Qwen3-Omni-MoE: thinker (text + audio + vision encoders), talker and code2wav."""
    from transformers import Qwen3OmniMoeConfig

    mrope = {"rope_type": "default", "rope_theta": 1e6, "mrope_section": [2, 3, 3]}
    text = _text_config(size, vocab, moe=True) | {"rope_parameters": mrope | {"interleaved": True}}
    hidden = text["hidden_size"]
    # Multimodal placeholders are special tokens of the tokenizer (tiny_processor.MEDIA_TOKENS).
    media = dict(
        audio_token_id=ids["audio_token"],
        image_token_id=ids["image_token"],
        video_token_id=ids["video_token"],
    )
    media_starts = dict(
        audio_start_token_id=ids["audio_bos_token"], vision_start_token_id=ids["vision_bos_token"]
    )
    thinker = dict(
        text_config=text,
        audio_config=dict(
            num_mel_bins=16,
            encoder_layers=1,
            encoder_attention_heads=2,
            encoder_ffn_dim=64,
            d_model=32,
            output_dim=hidden,
            n_window=50,  # what the processor assumes (Qwen3OmniMoeProcessor.n_window)
            downsample_hidden_size=16,
            max_source_positions=64,
            n_window_infer=400,
            conv_chunksize=8,
        ),
        vision_config=dict(
            depth=1,
            hidden_size=32,
            intermediate_size=64,
            num_heads=2,
            out_hidden_size=hidden,
            num_position_embeddings=64,
            deepstack_visual_indexes=[0],
            patch_size=4,
        ),
        user_token_id=ids["user"],
        **media,
        **media_starts,
    )
    talker = dict(
        text_config=dict(
            vocab_size=64,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=1,
            num_attention_heads=2,
            num_key_value_heads=1,
            head_dim=16,
            moe_intermediate_size=16,
            num_experts=2,
            num_experts_per_tok=1,
            shared_expert_intermediate_size=32,
            rope_parameters=mrope | {"interleaved": True},
        ),
        code_predictor_config=dict(
            vocab_size=64,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=1,
            num_attention_heads=2,
            num_key_value_heads=1,
            head_dim=16,
            num_code_groups=4,
        ),
        num_code_groups=4,
        thinker_hidden_size=hidden,
        accept_hidden_layer=1,
        codec_eos_token_id=60,
        codec_nothink_id=61,
        codec_think_bos_id=62,
        codec_think_eos_id=63,
        codec_pad_id=58,
        codec_bos_id=59,
        spatial_merge_size=2,
        speaker_id={"ethan": 1},
        **media,
        **media_starts,
    )
    code2wav = dict(
        codebook_size=64,
        hidden_size=32,
        num_attention_heads=2,
        num_key_value_heads=2,
        intermediate_size=64,
        num_hidden_layers=1,
        num_quantizers=4,
        decoder_dim=32,
        upsample_rates=[2, 2],
        upsampling_ratios=[2],
        sliding_window=8,
    )
    return Qwen3OmniMoeConfig(
        thinker_config=thinker,
        talker_config=talker,
        code2wav_config=code2wav,
        enable_audio_output=True,
        im_start_token_id=ids["im_start"],
        im_end_token_id=ids["im_end"],
        # The talker's text markers: ids past the tokenizer, inside the embedding table.
        tts_pad_token_id=ids["tts"],
        tts_bos_token_id=ids["tts"] + 1,
        tts_eos_token_id=ids["tts"] + 2,
        system_token_id=ids["system"],
        user_token_id=ids["user"],
        assistant_token_id=ids["assistant"],
    )


def _build_model(arch: Arch, size: Size, vocab: int, ids: dict[str, int]) -> Any:
    import transformers

    if arch == "qwen3":
        config = transformers.Qwen3Config(**_text_config(size, vocab, moe=False))
        config.tie_word_embeddings = True
        return transformers.Qwen3ForCausalLM(config)
    if arch == "qwen3_moe":
        return transformers.Qwen3MoeForCausalLM(
            transformers.Qwen3MoeConfig(**_text_config(size, vocab, moe=True))
        )
    return transformers.Qwen3OmniMoeForConditionalGeneration(_omni_config(size, vocab, ids))


def write_tiny_model(
    target: Path, arch: Arch, size: Size = "tiny", seed: int = 0, max_positions: int | None = None
) -> Path:
    """Write config, random weights, tokenizer, chat template and SHA256SUMS into `target`.

    `max_positions` raises the context (default 512 tiny, 2048 small) without changing any
    weight: RoPE does not depend on it.
    """
    import torch
    from transformers import AutoTokenizer

    target.mkdir(parents=True, exist_ok=True)
    omni = arch == "qwen3_omni_moe"
    tokenizer_len = train_tokenizer(target, _DIMS[size]["vocab"])
    tokenizer = AutoTokenizer.from_pretrained(str(target))
    if omni:
        tokenizer = add_media_tokens(target)
        tokenizer_len = len(tokenizer)
    ids = {
        "im_start": tokenizer.convert_tokens_to_ids(IM_START),
        "im_end": tokenizer.convert_tokens_to_ids(IM_END),
        "endoftext": tokenizer.convert_tokens_to_ids(ENDOFTEXT),
        "system": tokenizer.encode("system")[0],
        "user": tokenizer.encode("user")[0],
        "assistant": tokenizer.encode("assistant")[0],
    }
    if omni:
        ids.update({name: tokenizer.convert_tokens_to_ids(t) for name, t in MEDIA_TOKENS.items()})
    ids["tts"] = tokenizer_len
    vocab = _round_up(tokenizer_len + (3 if omni else 0), 64)
    torch.manual_seed(seed)
    model = _build_model(arch, size, vocab, ids)
    if max_positions is not None:
        model.config.get_text_config().max_position_embeddings = max_positions
    generation = model.generation_config
    generation.eos_token_id = [ids["im_end"], ids["endoftext"]]
    generation.pad_token_id = ids["endoftext"]
    generation.bos_token_id = None
    model.save_pretrained(str(target))
    params = sum(p.numel() for p in model.parameters())
    (target / "qms-tiny-model.json").write_text(
        json.dumps({"arch": arch, "size": size, "seed": seed, "parameters": params}) + "\n",
        encoding="utf-8",
    )
    if omni:
        write_processor_configs(target, model.config)
    write_sha256sums(target)
    log.info("wrote %s %s model (%d parameters) to %s", size, arch, params, target)
    return target
