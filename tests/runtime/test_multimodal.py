"""Qwen3-Omni media through real HTTP: images and audio in, speech out, bad media refused.

Greedy output of media requests equals `thinker.generate` called directly with the
processor's inputs, also while text-only requests run on the batching engine.
"""

from __future__ import annotations

import base64
import io
import threading
import wave
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
import soundfile
from PIL import Image

from qms_testkit.media import (
    MAX_TOKENS,
    SERVED,
    audio_part,
    chat,
    image_part,
    png,
    reference_tokens,
    tone,
)
from qms_testkit.processes import RuntimeServer, start_server
from qms_testkit.serving import metric_value

pytestmark = pytest.mark.runtime

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
    image = Image.open(io.BytesIO(IMAGE)).convert("RGB")
    audio, _ = soundfile.read(io.BytesIO(AUDIO), dtype="float32")
    text = TEXT["text"]
    cases = {"text+image": [image, text], "text+audio": [audio, text],
             "image+audio": [image, audio]}  # fmt: skip
    return reference_tokens(omni_dir, cases)


def test_media_greedy_equals_direct_generate(plain_server: RuntimeServer, omni_dir: Path) -> None:
    expected = _reference(omni_dir)
    base = plain_server.base_url
    url = base + "/v1/chat/completions"
    for name, parts in CASES.items():
        itl = metric_value(base, "qms_inter_token_latency_seconds_count")
        ttft = metric_value(base, "qms_time_to_first_token_seconds_count")
        response = httpx.post(url, json=chat(parts), timeout=120)
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["choices"][0]["token_ids"] == expected[name], name
        assert body["usage"]["completion_tokens"] == len(expected[name])
        # The media path goes through the same event path as the batch: every token
        # after the first is an inter-token interval (not observed before issue 12).
        assert metric_value(base, "qms_time_to_first_token_seconds_count") == ttft + 1
        assert metric_value(base, "qms_inter_token_latency_seconds_count") == (
            itl + len(expected[name]) - 1
        )


def test_media_and_text_requests_run_together(plain_server: RuntimeServer, omni_dir: Path) -> None:
    """Media and text at once: every answer is exactly what it is alone.

    Each forward pass of a media request pauses the batching loop between two steps
    (Engine.pause), so the batch stepping the same weights on its own thread cannot
    disturb it. (Without the pause this test fails: media outputs change.)
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


def test_seeded_media_request_is_reproducible(plain_server: RuntimeServer, omni_dir: Path) -> None:
    """`seed` on the media path: the engine's Gumbel-max sampling (sampling.py) in plain
    `generate`, so the answer equals the reference and repeats while text runs."""
    from qms_runtime.engine.sampling import seeded_logits_processors

    image = Image.open(io.BytesIO(IMAGE)).convert("RGB")
    seeded = {"logits_processor": seeded_logits_processors(99, 1.0), "min_new_tokens": 12}
    expected = reference_tokens(omni_dir, {"seeded": [image, TEXT["text"]]}, seeded)["seeded"]
    greedy = _reference(omni_dir)["text+image"]
    url = plain_server.base_url + "/v1/chat/completions"
    body = chat(CASES["text+image"], temperature=1.0, seed=99, ignore_eos=True)
    text_body = {"model": SERVED, "messages": [{"role": "user", "content": "hi"}],
                 "max_tokens": 24, "temperature": 1.0}  # fmt: skip
    with ThreadPoolExecutor(5) as pool:
        texts = [pool.submit(httpx.post, url, json=text_body, timeout=120) for _ in range(3)]
        answers = [pool.submit(httpx.post, url, json=body, timeout=120) for _ in range(2)]
        tokens = [future.result().json()["choices"][0]["token_ids"] for future in answers]
        assert all(future.result().status_code == 200 for future in texts)
    assert tokens == [expected, expected]
    assert len(expected) == MAX_TOKENS
    assert expected != greedy[: len(expected)]
    other = httpx.post(url, json=dict(body, seed=100), timeout=120).json()
    assert other["choices"][0]["token_ids"] != expected


def test_text_is_not_held_behind_a_long_media_request(plain_server: RuntimeServer) -> None:
    """Media and text interleave step by step: a short text request started while a long
    media answer streams finishes before it (and the media answer is complete)."""
    url = plain_server.base_url + "/v1/chat/completions"
    media_body = chat(CASES["text+image"], max_tokens=300, ignore_eos=True, stream=True)
    text_body = {"model": SERVED, "messages": [{"role": "user", "content": "hello there"}],
                 "max_tokens": 8, "ignore_eos": True, "temperature": 0}  # fmt: skip
    finish: list[str] = []
    started = threading.Event()

    def stream_media() -> None:
        with httpx.stream("POST", url, json=media_body, timeout=300) as response:
            assert response.status_code == 200
            for line in response.iter_lines():
                if line.startswith("data: {"):
                    started.set()
                    for choice in httpx.Response(200, content=line[6:]).json()["choices"]:
                        if choice.get("finish_reason"):
                            finish.append(choice["finish_reason"])

    with ThreadPoolExecutor(1) as pool:
        media = pool.submit(stream_media)
        assert started.wait(120)
        text = httpx.post(url, json=text_body, timeout=300)
        media_done_before_text = bool(finish)
        media.result()
    assert text.status_code == 200
    assert text.json()["usage"]["completion_tokens"] == 8
    assert not media_done_before_text
    assert finish == ["length"]


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
