"""The API layer's media and speech paths in process, over the FAKE backend and the FAKE
media side (qms_testkit.fake_backend): the same road as a real Qwen3-Omni server (decoding, the
processor's inputs as the prompt, speech as a WAV), without a model. The real model's
side of it is test_multimodal.py and test_real_checkpoints.py."""

from __future__ import annotations

import base64
import io
import wave
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from qms_testkit.fake_backend import FakeBackend, FakeMedia, fake_app
from qms_testkit.media import data_url, png, tone

pytestmark = pytest.mark.runtime

MODEL = "fake-omni"
IMAGE = png(40, 56)
AUDIO = tone(1.0)
SPOKEN_SAMPLES = 2400  # 0.1 s at 24 kHz


@pytest.fixture
def parts(qwen3_dir: Path) -> Iterator[tuple[TestClient, FakeBackend, FakeMedia, Any]]:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(qwen3_dir))
    script = list(tokenizer.encode(" a spoken answer"))
    media = FakeMedia(tokenizer, speech=True, script=script, samples=SPOKEN_SAMPLES)
    backend = FakeBackend(script, (2,), capacity=4, media=media)
    with fake_app(qwen3_dir, backend, 512, served_model_name=MODEL) as (client, _):
        yield client, backend, media, tokenizer


def _user(content: Any) -> dict[str, Any]:
    return {"model": MODEL, "messages": [{"role": "user", "content": content}], "max_tokens": 3}


def test_a_media_request_is_prepared_by_the_media_side_and_generated_by_the_backend(
    parts: tuple[TestClient, FakeBackend, FakeMedia, Any],
) -> None:
    client, backend, media, tokenizer = parts
    content = [
        {"type": "text", "text": "describe"},
        {"type": "image", "image": data_url(IMAGE, "image/png")},
        {"type": "audio_url", "audio_url": {"url": data_url(AUDIO, "audio/wav")}},
    ]
    body = {**_user(content), "chat_template_kwargs": {"enable_thinking": False}}
    response = client.post("/v1/chat/completions", json=body)
    assert response.status_code == 200, response.text
    [(decoded, kwargs)] = media.prepared
    assert [image.size for image in decoded.images] == [(40, 56)]
    assert [len(samples) for samples in decoded.audio] == [16_000]
    assert decoded.messages == [
        {"role": "user", "content": [{"type": "text", "text": "describe"}, {"type": "image"},
                                     {"type": "audio"}]}
    ]  # fmt: skip
    assert kwargs == {"enable_thinking": False}
    prompt_ids = list(tokenizer.encode("describe")) + [7] * 8
    assert response.json()["usage"]["prompt_tokens"] == len(prompt_ids)
    [prompt] = backend.prompts
    assert prompt.token_ids == prompt_ids
    assert prompt.media_inputs["input_ids"][0].tolist() == prompt_ids
    # /tokenize takes the same road and counts the same.
    counted = client.post("/tokenize", json={"model": MODEL, "messages": body["messages"]})
    assert counted.json()["count"] == len(prompt_ids)


def test_speech_out_is_a_wav_of_what_the_media_side_spoke(
    parts: tuple[TestClient, FakeBackend, FakeMedia, Any],
) -> None:
    client, backend, media, tokenizer = parts
    body = {**_user("say it"), "modalities": ["text", "audio"], "audio": {"voice": "Ethan",
            "format": "wav"}}  # fmt: skip
    response = client.post("/v1/chat/completions", json=body)
    assert response.status_code == 200, response.text
    choice = response.json()["choices"][0]
    text = tokenizer.decode(media.script[:3], skip_special_tokens=True)
    assert (choice["message"]["content"], choice["finish_reason"]) == (text, "length")
    assert choice["message"]["audio"]["transcript"] == text
    with wave.open(io.BytesIO(base64.b64decode(choice["message"]["audio"]["data"]))) as spoken:
        assert (spoken.getframerate(), spoken.getnframes()) == (24_000, SPOKEN_SAMPLES)
    assert [voice for voice, _ in media.spoken] == ["ethan"]
    assert backend.prompts == []  # speech is the media side's alone


def test_speech_and_media_errors_name_the_field(
    parts: tuple[TestClient, FakeBackend, FakeMedia, Any],
) -> None:
    client, _, media, _ = parts
    cases: list[tuple[dict[str, Any], str, str | None]] = [
        ({**_user("x"), "modalities": ["audio"], "audio": {"voice": "nobody"}}, "audio.voice",
         None),
        ({**_user("x"), "modalities": ["audio"]}, "audio", None),
        ({**_user("x"), "modalities": ["audio"], "audio": {"voice": "ethan"}, "stream": True},
         "modalities", None),
        (_user([{"type": "audio", "audio": "data:text/plain;base64,aGk="}]),
         "messages.0.content.0", "unsupported_media_type"),
        (_user([{"type": "video", "video": []}]), "messages.0.content.0.video", None),
    ]  # fmt: skip
    for body, param, code in cases:
        response = client.post("/v1/chat/completions", json=body)
        assert response.status_code == 400, response.text
        error = response.json()["error"]
        assert (error["param"], error["code"]) == (param, code), error
    assert media.prepared == [] and media.spoken == []


def test_without_a_media_side_a_media_part_is_refused_by_name(qwen3_dir: Path) -> None:
    backend = FakeBackend([5], (2,), capacity=4)
    with fake_app(qwen3_dir, backend, 512, served_model_name=MODEL) as (client, _):
        content = [{"type": "text", "text": "hi"}, {"type": "image_url",
                   "image_url": {"url": data_url(IMAGE, "image/png")}}]  # fmt: skip
        response = client.post("/v1/chat/completions", json=_user(content))
    assert response.status_code == 400
    error = response.json()["error"]
    assert (error["param"], error["code"]) == ("messages.0.content.1", "unsupported_media")
    assert error["message"] == (
        "this model takes text only: the image_url part needs a Qwen3-Omni model with a processor"
    )
    assert backend.prompts == []
