"""`qms-runtime tiny-model`: real Qwen configs shrunk, random weights, a fresh tokenizer.

Used by the tests, the demo and the benchmark. Three sizes: `tiny` (hidden 64, 2 layers:
fast tests), `small` (about 20M parameters for the dense model: benchmarks) and `real`
(benchmarks at real shapes, random weights): `qwen3` gets Qwen3-0.6B's shape (28 layers,
hidden 1024, vocab 151,936, tied embeddings), `qwen3_moe` Qwen3-30B-A3B's layer shape
(hidden 2048, 128 experts, 8 active) with `layers` layers (default 1; the real one has 48).
The Omni model also gets its processor configs (tiny_processor.py), so it takes images and
audio.

The tokenizer is the small trained one (4096 tokens) at every size. A `real` model's
vocabulary is 151,936 rows, so its output rows past the tokenizer are zeroed: their logit
is 0 while the maximum of 4096 random logits is positive, so greedy decoding only ever
picks ids the tokenizer can decode (an id past the tokenizer decodes to "" and would never
reach the client as text; it does not crash). The vocabulary-sized matmul, logits and
sampling stay full size.
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
Size = Literal["tiny", "small", "real"]
ARCHS: tuple[Arch, ...] = ("qwen3", "qwen3_moe", "qwen3_omni_moe")
SIZES: tuple[Size, ...] = ("tiny", "small", "real")
REAL_VOCAB = 151_936

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
# `real`: the published configs' shapes (Qwen/Qwen3-0.6B, Qwen/Qwen3-30B-A3B config.json).
_REAL: dict[str, dict[str, int]] = {
    "qwen3": dict(hidden=1024, inter=3072, layers=28, heads=16, kv=8, head_dim=128),
    "qwen3_moe": dict(
        hidden=2048,
        inter=6144,
        layers=1,
        heads=32,
        kv=4,
        head_dim=128,
        experts=128,
        top_k=8,
        moe_inter=768,
    ),
}
_REAL_MAX_POS = 40_960


def _round_up(value: int, multiple: int) -> int:
    return (value + multiple - 1) // multiple * multiple


def _dims(arch: Arch, size: Size, layers: int | None) -> dict[str, int]:
    if size != "real":
        d = dict(_DIMS[size])
    elif arch in _REAL:
        d = dict(_REAL[arch], vocab=REAL_VOCAB, max_pos=_REAL_MAX_POS)
    else:
        raise ValueError(f"size 'real' is for qwen3 and qwen3_moe, not {arch}")
    if layers is not None:
        d["layers"] = layers
    return d


def _text_config(d: dict[str, int], vocab: int, moe: bool) -> dict[str, Any]:
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


def _omni_config(d: dict[str, int], vocab: int, ids: dict[str, int]) -> Any:
    """Qwen3-Omni-MoE: thinker (text + audio + vision encoders), talker and code2wav."""
    from transformers import Qwen3OmniMoeConfig

    mrope = {"rope_type": "default", "rope_theta": 1e6, "mrope_section": [2, 3, 3]}
    text = _text_config(d, vocab, moe=True) | {"rope_parameters": mrope | {"interleaved": True}}
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


def _build_model(arch: Arch, d: dict[str, int], vocab: int, ids: dict[str, int]) -> Any:
    import transformers

    if arch == "qwen3":
        config = transformers.Qwen3Config(**_text_config(d, vocab, moe=False))
        config.tie_word_embeddings = True
        return transformers.Qwen3ForCausalLM(config)
    if arch == "qwen3_moe":
        return transformers.Qwen3MoeForCausalLM(
            transformers.Qwen3MoeConfig(**_text_config(d, vocab, moe=True))
        )
    return transformers.Qwen3OmniMoeForConditionalGeneration(_omni_config(d, vocab, ids))


def _zero_rows_past(model: Any, tokenizer_len: int) -> None:
    """Output (and, tied, input) embedding rows past the tokenizer to 0: see the module doc."""
    import torch

    with torch.no_grad():
        model.get_output_embeddings().weight[tokenizer_len:] = 0
        model.get_input_embeddings().weight[tokenizer_len:] = 0


def write_tiny_model(
    target: Path,
    arch: Arch,
    size: Size = "tiny",
    seed: int = 0,
    max_positions: int | None = None,
    layers: int | None = None,
    dtype: str | None = None,
) -> Path:
    """Write config, random weights, tokenizer, chat template and SHA256SUMS into `target`.

    `max_positions` changes the context (default 512 tiny, 2048 small, 40960 real) without
    changing any weight: RoPE does not depend on it. `layers`: the number of decoder layers
    instead of the size's own. `dtype`: save the weights in that torch dtype (e.g.
    "bfloat16": half the bytes to write for a big `real` model).
    """
    import torch
    from transformers import AutoTokenizer

    target.mkdir(parents=True, exist_ok=True)
    omni = arch == "qwen3_omni_moe"
    dims = _dims(arch, size, layers)
    tokenizer_len = train_tokenizer(target, min(dims["vocab"], _DIMS["small"]["vocab"]))
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
    if size == "real":
        vocab = dims["vocab"]
    torch.manual_seed(seed)
    model = _build_model(arch, dims, vocab, ids)
    if vocab > tokenizer_len and size == "real":
        _zero_rows_past(model, tokenizer_len)
    if max_positions is not None:
        model.config.get_text_config().max_position_embeddings = max_positions
    if dtype is not None:
        model = model.to(getattr(torch, dtype))
    generation = model.generation_config
    generation.eos_token_id = [ids["im_end"], ids["endoftext"]]
    generation.pad_token_id = ids["endoftext"]
    generation.bos_token_id = None
    model.save_pretrained(str(target))
    params = sum(p.numel() for p in model.parameters())
    (target / "qms-tiny-model.json").write_text(
        json.dumps(dict(arch=arch, size=size, seed=seed, layers=dims["layers"], parameters=params))
        + "\n",
        encoding="utf-8",
    )
    if omni:
        write_processor_configs(target, model.config)
    write_sha256sums(target)
    log.info("wrote %s %s model (%d parameters) to %s", size, arch, params, target)
    return target
