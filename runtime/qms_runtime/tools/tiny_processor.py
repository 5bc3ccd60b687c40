"""The tiny Omni model's processor: media special tokens, a multimodal chat template and the
processor configs (image processor, Whisper-style feature extractor, video processor).

Sizes are shrunk like the model: images are resized to at most 64x64 pixels (16 vision
tokens after the 2x2 merge), audio uses 16 mel bins. Qwen3OmniMoeProcessor's own video
defaults (128..768 x 32x32 pixels per frame) suit the real model's 16-pixel patches, not
these; a server for the tiny model passes the video config's sizes through
QMS_MM_PROCESSOR_KWARGS (`TINY_VIDEO_KWARGS`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from qms_runtime.tools.tiny_tokenizer import chat_template

# What Qwen3-Omni's tokenizer_config.json names as extra special tokens.
MEDIA_TOKENS = {
    "image_token": "<|image_pad|>",
    "audio_token": "<|audio_pad|>",
    "video_token": "<|video_pad|>",
    "vision_bos_token": "<|vision_start|>",
    "vision_eos_token": "<|vision_end|>",
    "audio_bos_token": "<|audio_start|>",
    "audio_eos_token": "<|audio_end|>",
}

# Qwen3-Omni's ChatML with content parts (tiny_tokenizer's Qwen3-style template, tools and
# thinking included): a string content renders exactly as the text-only template does;
# media parts become their placeholders, in order.
OMNI_CONTENT = (
    "{%- if content is string %}{{- content }}"
    "{%- elif content %}{%- for part in content %}"
    "{%- if part['type'] == 'text' %}{{- part['text'] }}"
    "{%- elif part['type'] == 'image' %}{{- '<|vision_start|><|image_pad|><|vision_end|>' }}"
    "{%- elif part['type'] == 'audio' %}{{- '<|audio_start|><|audio_pad|><|audio_end|>' }}"
    "{%- elif part['type'] == 'video' %}{{- '<|vision_start|><|video_pad|><|vision_end|>' }}"
    "{%- endif %}{%- endfor %}{%- endif %}"
)
OMNI_CHAT_TEMPLATE = chat_template(OMNI_CONTENT)

IMAGE = {"patch_size": 4, "temporal_patch_size": 2, "merge_size": 2}
MIN_PIXELS = 16 * 16
MAX_PIXELS = 64 * 64
SAMPLING_RATE = 16_000
TINY_VIDEO_KWARGS = {
    "videos_kwargs": {"size": {"shortest_edge": MIN_PIXELS, "longest_edge": MAX_PIXELS}}
}


def add_media_tokens(target: Path) -> Any:
    """Reload the tokenizer in `target` with the media tokens and the Omni template; save."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(
        str(target), extra_special_tokens=MEDIA_TOKENS, chat_template=OMNI_CHAT_TEMPLATE
    )
    tokenizer.save_pretrained(str(target))
    return tokenizer


def _vision_config() -> dict[str, Any]:
    """What the image and the video processor share: patching, pixel budget, normalisation."""
    return {
        "processor_class": "Qwen3OmniMoeProcessor",
        **IMAGE,
        "min_pixels": MIN_PIXELS,
        "max_pixels": MAX_PIXELS,
        "size": dict(TINY_VIDEO_KWARGS["videos_kwargs"]["size"]),
        "image_mean": [0.5, 0.5, 0.5],
        "image_std": [0.5, 0.5, 0.5],
    }


def _image_processor_config() -> dict[str, Any]:
    return {
        "image_processor_type": "Qwen2VLImageProcessor",
        **_vision_config(),
        "do_resize": True,
        "do_rescale": True,
        "do_normalize": True,
        "do_convert_rgb": True,
        "rescale_factor": 1 / 255,
    }


def _feature_extractor_config(num_mel_bins: int) -> dict[str, Any]:
    import transformers

    whisper: Any = transformers.WhisperFeatureExtractor  # untyped constructor
    extractor: Any = whisper(
        feature_size=num_mel_bins, sampling_rate=SAMPLING_RATE, return_attention_mask=True
    )
    config: dict[str, Any] = json.loads(extractor.to_json_string())
    config.pop("mel_filters", None)  # recomputed from the sizes on load
    return config


def _video_processor_config() -> dict[str, Any]:
    return {
        "video_processor_type": "Qwen2VLVideoProcessor",
        **_vision_config(),
        "do_sample_frames": False,
    }


def write_processor_configs(target: Path, model_config: Any) -> None:
    """preprocessor_config.json (image processor + feature extractor, merged as in the real
    checkpoint), video_preprocessor_config.json and chat_template.jinja."""
    mel_bins = int(model_config.thinker_config.audio_config.num_mel_bins)
    merged = _feature_extractor_config(mel_bins) | _image_processor_config()
    (target / "preprocessor_config.json").write_text(
        json.dumps(merged, indent=2, sort_keys=True) + "\n", encoding="utf-8"
    )
    (target / "video_preprocessor_config.json").write_text(
        json.dumps(_video_processor_config(), indent=2, sort_keys=True) + "\n", encoding="utf-8"
    )
    (target / "chat_template.jinja").write_text(OMNI_CHAT_TEMPLATE, encoding="utf-8")
