"""Qwen3-Omni media through real HTTP: images and audio in, speech out, bad media refused.

Greedy output of media requests equals `thinker.generate` called directly with the
processor's inputs, also while text-only requests run on the batching engine.
"""

from __future__ import annotations

import base64
import io
import wave
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import soundfile
import torch
from PIL import Image
from runtime_support import RuntimeServer, start_server

pytestmark = pytest.mark.runtime

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


def image_part(data: bytes, mime: str = "image/png") -> dict[str, Any]:
    url = f"data:{mime};base64,{base64.b64encode(data).decode()}"
    return {"type": "image_url", "image_url": {"url": url}}


def audio_part(data: bytes, audio_format: str = "wav") -> dict[str, Any]:
    encoded = base64.b64encode(data).decode()
    return {"type": "input_audio", "input_audio": {"data": encoded, "format": audio_format}}


def chat(parts: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    return {
        "model": SERVED,
        "messages": [{"role": "user", "content": parts}],
        "max_tokens": MAX_TOKENS,
        "temperature": 0,
        "return_token_ids": True,
        **extra,
    }


IMAGE = png(40, 56)
AUDIO = tone(1.0)
TEXT = {"type": "text", "text": "What is in this?"}
CASES = {
    "text+image": [image_part(IMAGE), TEXT],
    "text+audio": [audio_part(AUDIO), TEXT],
    "image+audio": [image_part(IMAGE), audio_part(AUDIO)],
}


@pytest.fixture(scope="module")
def omni_dir(tiny_model: Any) -> Path:
    path: Path = tiny_model("qwen3_omni_moe")
    return path


@pytest.fixture(scope="module")
def plain_server(
    omni_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RuntimeServer]:
    """Default settings: speech out off."""
    server = start_server(omni_dir, tmp_path_factory.mktemp("omni"), served_model_name=SERVED)
    yield server
    assert server.stop() == 0


@pytest.fixture(scope="module")
def speech_server(
    omni_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RuntimeServer]:
    server = start_server(
        omni_dir, tmp_path_factory.mktemp("omni-speech"), served_model_name=SERVED,
        audio_output="true", max_image_bytes=20_000, max_audio_seconds=2, max_media_items=2,
    )  # fmt: skip
    yield server
    assert server.stop() == 0


def _reference(omni_dir: Path) -> dict[str, list[int]]:
    """Greedy `thinker.generate` on the processor's inputs, for each case."""
    import transformers

    from qms_runtime.multimodal import load_processor

    tokenizer = transformers.AutoTokenizer.from_pretrained(str(omni_dir))
    processor = load_processor(omni_dir, tokenizer)
    owner = transformers.Qwen3OmniMoeForConditionalGeneration.from_pretrained(
        str(omni_dir), enable_audio_output=False
    )
    thinker, eos = owner.thinker, owner.generation_config.eos_token_id
    image = Image.open(io.BytesIO(IMAGE)).convert("RGB")
    audio, _ = soundfile.read(io.BytesIO(AUDIO), dtype="float32")
    kinds = {"text+image": ["image", "text"], "text+audio": ["audio", "text"],
             "image+audio": ["image", "audio"]}  # fmt: skip
    outputs = {}
    for name, kind in kinds.items():
        content = [{"type": k, "text": TEXT["text"]} if k == "text" else {"type": k} for k in kind]
        text = tokenizer.apply_chat_template(
            [{"role": "user", "content": content}], add_generation_prompt=True, tokenize=False
        )
        inputs = processor(
            text=[text],
            images=[image] if "image" in kind else None,
            audio=[audio] if "audio" in kind else None,
            return_tensors="pt",
        )
        with torch.no_grad():
            out = thinker.generate(
                **inputs, max_new_tokens=MAX_TOKENS, do_sample=False, eos_token_id=eos
            )
        outputs[name] = out[0, inputs["input_ids"].shape[1] :].tolist()
    return outputs


def test_media_greedy_equals_direct_generate(plain_server: RuntimeServer, omni_dir: Path) -> None:
    expected = _reference(omni_dir)
    url = plain_server.base_url + "/v1/chat/completions"
    for name, parts in CASES.items():
        response = httpx.post(url, json=chat(parts), timeout=120)
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["choices"][0]["token_ids"] == expected[name], name
        assert body["usage"]["completion_tokens"] == len(expected[name])


def test_media_and_text_requests_run_together(plain_server: RuntimeServer, omni_dir: Path) -> None:
    """Media and text at once: every answer is exactly what it is alone.

    Media requests hold the model alone (ModelGate), so the batch stepping the same
    weights on its own thread cannot disturb them.
    """
    expected = _reference(omni_dir)
    url = plain_server.base_url + "/v1/chat/completions"
    text_body = {"model": SERVED, "messages": [{"role": "user", "content": "hello there"}],
                 "max_tokens": 24, "ignore_eos": True, "return_token_ids": True,
                 "temperature": 0}  # fmt: skip
    alone = httpx.post(url, json=text_body, timeout=120).json()["choices"][0]["token_ids"]
    assert len(alone) == 24
    with ThreadPoolExecutor(7) as pool:
        texts = [pool.submit(httpx.post, url, json=text_body, timeout=120) for _ in range(4)]
        media = {name: pool.submit(httpx.post, url, json=chat(parts), timeout=120)
                 for name, parts in CASES.items()}  # fmt: skip
        for name, future in media.items():
            response = future.result()
            assert response.status_code == 200, (name, response.text)
            assert response.json()["choices"][0]["token_ids"] == expected[name], name
        for future in texts:
            response = future.result()
            assert response.status_code == 200
            assert response.json()["choices"][0]["token_ids"] == alone


def test_streamed_media_equals_full(plain_server: RuntimeServer) -> None:
    url = plain_server.base_url + "/v1/chat/completions"
    full = httpx.post(url, json=chat(CASES["text+image"]), timeout=60).json()
    tokens: list[int] = []
    with httpx.stream("POST", url, json=chat(CASES["text+image"], stream=True), timeout=60) as r:
        assert r.status_code == 200
        for line in r.iter_lines():
            if line.startswith("data: {"):
                for choice in httpx.Response(200, content=line[6:]).json()["choices"]:
                    tokens.extend(choice.get("token_ids", []))
    assert tokens == full["choices"][0]["token_ids"]


def test_flac_and_mp3_resampled_audio_are_accepted(plain_server: RuntimeServer) -> None:
    url = plain_server.base_url + "/v1/chat/completions"
    for audio_format, rate in (("flac", 22_050), ("mp3", 44_100)):
        data = tone(0.5, rate, audio_format.upper())
        response = httpx.post(url, json=chat([audio_part(data, audio_format), TEXT]), timeout=60)
        assert response.status_code == 200, (audio_format, response.text)
        assert (
            response.json()["usage"]["completion_tokens"] == MAX_TOKENS
            or response.json()["choices"][0]["finish_reason"] == "stop"
        )


def test_speech_refused_when_server_has_no_audio_output(plain_server: RuntimeServer) -> None:
    body = chat([TEXT], modalities=["text", "audio"], audio={"voice": "ethan", "format": "wav"})
    response = httpx.post(plain_server.base_url + "/v1/chat/completions", json=body, timeout=30)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "audio_output_disabled"
    assert error["param"] == "modalities"
    assert "QMS_AUDIO_OUTPUT=true" in error["message"]


def test_speech_out_returns_a_wav(speech_server: RuntimeServer) -> None:
    body = chat([image_part(IMAGE), TEXT], modalities=["text", "audio"],
                audio={"voice": "ethan", "format": "wav"})  # fmt: skip
    response = httpx.post(speech_server.base_url + "/v1/chat/completions", json=body, timeout=120)
    assert response.status_code == 200, response.text
    message = response.json()["choices"][0]["message"]
    with wave.open(io.BytesIO(base64.b64decode(message["audio"]["data"]))) as wav:
        assert wav.getframerate() == 24_000
        assert wav.getnchannels() == 1
        assert wav.getnframes() > 0
    assert message["audio"]["transcript"] == message["content"]
    unknown = dict(body, audio={"voice": "nobody", "format": "wav"})
    refused = httpx.post(speech_server.base_url + "/v1/chat/completions", json=unknown, timeout=30)
    assert refused.status_code == 400
    assert refused.json()["error"]["param"] == "audio.voice"


BAD_MEDIA = [
    ("corrupt base64", [{"type": "image_url", "image_url": {"url": "data:image/png;base64,@@@"}}],
     "invalid_media", "corrupt base64"),
    ("wrong mime", [image_part(IMAGE, "text/plain")], "unsupported_media_type", "text/plain"),
    ("not an image", [image_part(b"hello world")], "invalid_media", "not a decodable image"),
    ("image too large", [image_part(png(120, 120))], "media_too_large", "20000 bytes"),
    ("audio too long", [audio_part(tone(3.0))], "media_too_long", "3.0 s"),
    ("bad audio format", [audio_part(AUDIO, "ogg")], "unsupported_media_type", "'ogg'"),
    ("audio not audio", [audio_part(b"RIFFxxxxWAVE")], "invalid_media", "not decodable wav"),
    ("too many items", [image_part(IMAGE)] * 3, "too_many_media_items", "3 media items"),
    ("remote url", [{"type": "image_url", "image_url": {"url": "http://example.com/a.png"}}],
     "remote_media_disabled", "QMS_ALLOW_REMOTE_MEDIA"),
    ("video", [{"type": "video_url", "video_url": {"url": "data:video/mp4;base64,AAAA"}}],
     "unsupported_media_type", "video"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("name", "parts", "code", "words"), BAD_MEDIA, ids=[c[0] for c in BAD_MEDIA]
)
def test_bad_media_is_400_naming_the_problem(
    speech_server: RuntimeServer, name: str, parts: list[dict[str, Any]], code: str, words: str
) -> None:
    url = speech_server.base_url + "/v1/chat/completions"
    response = httpx.post(url, json=chat([*parts, TEXT]), timeout=30)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["code"] == code
    assert words in error["message"]
    assert error["param"] == (
        "messages" if code == "too_many_media_items" else "messages.0.content.0"
    )
    still = httpx.post(url, json=chat([TEXT]), timeout=60)
    assert still.status_code == 200
