"""Helpers for the Qwen3-Omni media tests: media bytes, content parts, and the reference
output (greedy `thinker.generate` on the processor's inputs, outside the server)."""

from __future__ import annotations

import base64
import io
from pathlib import Path
from typing import Any

import numpy as np
import soundfile
import torch
from PIL import Image

MAX_TOKENS = 12
SERVED = "tiny-omni"


def png(width: int, height: int, seed: int = 0) -> bytes:
    pixels = (np.random.RandomState(seed).rand(height, width, 3) * 255).astype("uint8")
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def tone(seconds: float, rate: int = 16_000, audio_format: str = "WAV") -> bytes:
    t = np.arange(int(seconds * rate)) / rate
    buffer = io.BytesIO()
    soundfile.write(buffer, (0.5 * np.sin(2 * np.pi * 440 * t)).astype("float32"), rate,
                    format=audio_format)  # fmt: skip
    return buffer.getvalue()


def mp4(frames: int, fps: int, size: int = 32, seed: int = 0) -> bytes:
    """An MPEG-4 video of `frames` random frames at `fps` (encoded with PyAV)."""
    import av

    rng = np.random.RandomState(seed)
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="mp4") as container:
        stream = container.add_stream("mpeg4", rate=fps)
        stream.width = stream.height = size
        stream.pix_fmt = "yuv420p"
        for _ in range(frames):
            pixels = (rng.rand(size, size, 3) * 255).astype("uint8")
            for packet in stream.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return buffer.getvalue()


def decoded_frames(data: bytes) -> np.ndarray[Any, Any]:
    """Every frame of a video file, as the reference for what the server samples."""
    import av

    with av.open(io.BytesIO(data)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


def data_url(data: bytes, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def image_part(data: bytes, mime: str = "image/png") -> dict[str, Any]:
    return {"type": "image_url", "image_url": {"url": data_url(data, mime)}}


def audio_part(data: bytes, audio_format: str = "wav") -> dict[str, Any]:
    encoded = base64.b64encode(data).decode()
    return {"type": "input_audio", "input_audio": {"data": encoded, "format": audio_format}}


def video_part(data: bytes, mime: str = "video/mp4") -> dict[str, Any]:
    return {"type": "video_url", "video_url": {"url": data_url(data, mime)}}


def frames_part(frames: list[bytes]) -> dict[str, Any]:
    return {"type": "video", "video": [data_url(frame, "image/png") for frame in frames]}


def chat(parts: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    return {
        "model": SERVED,
        "messages": [{"role": "user", "content": parts}],
        "max_tokens": MAX_TOKENS,
        "temperature": 0,
        "return_token_ids": True,
        **extra,
    }


def reference_tokens(
    omni_dir: Path,
    cases: dict[str, list[Any]],
    generate_kwargs: dict[str, Any] | None = None,
    **processor_kwargs: Any,
) -> dict[str, list[int]]:
    """Greedy `thinker.generate` on the processor's inputs, for each case.

    A case is its content in order: a str is text, a PIL image an image, a 1-D float array
    audio (16 kHz) and a 4-D uint8 array a video's frames.
    """
    import transformers

    processor = transformers.AutoProcessor.from_pretrained(str(omni_dir))
    owner = transformers.Qwen3OmniMoeForConditionalGeneration.from_pretrained(
        str(omni_dir), enable_audio_output=False
    )
    thinker, eos = owner.thinker, owner.generation_config.eos_token_id
    outputs = {}
    for name, items in cases.items():
        content: list[dict[str, Any]] = []
        images, audio, videos = [], [], []
        for item in items:
            if isinstance(item, str):
                content.append({"type": "text", "text": item})
            elif isinstance(item, Image.Image):
                content.append({"type": "image"})
                images.append(item)
            elif item.ndim == 1:
                content.append({"type": "audio"})
                audio.append(item)
            else:
                content.append({"type": "video"})
                videos.append(item)
        text = processor.tokenizer.apply_chat_template(
            [{"role": "user", "content": content}], add_generation_prompt=True, tokenize=False
        )
        inputs = processor(
            text=[text],
            images=images or None,
            audio=audio or None,
            videos=videos or None,
            return_tensors="pt",
            **processor_kwargs,
        )
        with torch.no_grad():
            out = thinker.generate(
                **inputs,
                **{"max_new_tokens": MAX_TOKENS, "do_sample": False, "eos_token_id": eos,
                   **(generate_kwargs or {})},
            )  # fmt: skip
        outputs[name] = out[0, inputs["input_ids"].shape[1] :].tolist()
    return outputs
