"""The real Qwen checkpoints' own files, served: Qwen3-Omni-30B-A3B-Instruct (its template
only in chat_template.json, its processor, every media part) and Qwen3-0.6B (template in
tokenizer_config.json, thinking, tools). Models are built from the official configs with
fewer layers and random weights (real_checkpoints.py); prompt token counts are compared
with what transformers' own tokenizer and processor give for the same messages."""

from __future__ import annotations

import base64
import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import openai
import pytest
from PIL import Image
from real_checkpoints import QWEN3_06B, QWEN3_OMNI, real_files, real_model

from qms_testkit.media import data_url, mp4, png, tone
from qms_testkit.processes import RuntimeServer, start_server
from qms_testkit.tool_examples import HISTORY, TIME, WEATHER

pytestmark = pytest.mark.runtime

SERVED = "real"
# At the real contexts (40,960 and 65,536 tokens) a full CPU batch does not fit this
# machine: the fit check refuses it at start (test_fit.py). A configured context does.
SETTINGS = {"served_model_name": SERVED, "max_model_len": 4096, "max_batch_size": 4}
IMAGE = png(40, 56)
AUDIO = tone(1.0)  # 16 kHz WAV: what the feature extractor takes, no resampling
VIDEO_FRAMES = [png(32, 32, seed=s) for s in range(4)]
VIDEO = mp4(frames=4, fps=2)
# What the template sees of HISTORY: a message without content has content "".
HISTORY_TEXT = [{**m, "content": m.get("content") or ""} for m in HISTORY]


@pytest.fixture(scope="module")
def omni_dir() -> Path:
    return real_model(QWEN3_OMNI)


@pytest.fixture(scope="module")
def dense_dir() -> Path:
    return real_model(QWEN3_06B)


@pytest.fixture(scope="module")
def omni(omni_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RuntimeServer]:
    server = start_server(omni_dir, tmp_path_factory.mktemp("omni"), **SETTINGS)
    yield server
    assert server.stop() == 0


@pytest.fixture(scope="module")
def dense(dense_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RuntimeServer]:
    server = start_server(dense_dir, tmp_path_factory.mktemp("dense"), **SETTINGS)
    yield server
    assert server.stop() == 0


@pytest.fixture(scope="module")
def processor(omni_dir: Path) -> Any:
    from transformers import AutoProcessor

    return AutoProcessor.from_pretrained(str(omni_dir))


def _post(server: RuntimeServer, path: str, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(f"{server.base_url}{path}", json=body, timeout=300)


def _chat(server: RuntimeServer, messages: list[Any], **extra: Any) -> dict[str, Any]:
    body = {"model": SERVED, "messages": messages, "max_tokens": 3, "temperature": 0, **extra}
    response = _post(server, "/v1/chat/completions", body)
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


def _tokenize(server: RuntimeServer, messages: list[Any], **extra: Any) -> int:
    response = _post(server, "/tokenize", {"model": SERVED, "messages": messages, **extra})
    assert response.status_code == 200, response.text
    count: int = response.json()["count"]
    return count


# ---------------------------------------------------------------- template discovery
def test_the_omni_template_is_found_in_chat_template_json(omni_dir: Path, tmp_path: Path) -> None:
    from transformers import AutoProcessor, AutoTokenizer

    from qms_runtime.models.templates import find_chat_template

    official = json.loads((omni_dir / "chat_template.json").read_text())["chat_template"]
    tokenizer = AutoTokenizer.from_pretrained(str(omni_dir))
    assert tokenizer.chat_template is None  # the cause: AutoTokenizer does not read it
    found = find_chat_template(omni_dir, tokenizer)
    assert found is not None and (found.text, found.source) == (official, "chat_template.json")

    # A chat_template.jinja beside it comes first; with neither, the processor's.
    local = tmp_path / "model"
    shutil.copytree(omni_dir, local, ignore=shutil.ignore_patterns("*.safetensors"))
    (local / "chat_template.jinja").write_text("{{ 'jinja' }}")
    found = find_chat_template(local, tokenizer)
    assert found is not None and (found.text, found.source) == (
        "{{ 'jinja' }}",
        "chat_template.jinja",
    )
    processor = AutoProcessor.from_pretrained(str(omni_dir))
    (local / "chat_template.jinja").unlink()
    (local / "chat_template.json").unlink()
    found = find_chat_template(local, tokenizer, processor)
    assert found is not None and (found.text, found.source) == (official, "the processor")
    assert find_chat_template(local, tokenizer) is None


def test_the_dense_template_is_the_tokenizers(dense_dir: Path) -> None:
    from transformers import AutoTokenizer

    from qms_runtime.models.templates import find_chat_template

    tokenizer = AutoTokenizer.from_pretrained(str(dense_dir))
    config = json.loads((real_files(QWEN3_06B) / "tokenizer_config.json").read_text())
    found = find_chat_template(dense_dir, tokenizer)
    assert found is not None
    assert (found.text, found.source) == (
        config["chat_template"],
        "the tokenizer (tokenizer_config.json)",
    )


NOT_SHAPE = {"_name_or_path", "dtype", "transformers_version"}


def _without(config: Any, keys: set[str]) -> Any:
    if not isinstance(config, dict):
        return config
    return {k: _without(v, keys) for k, v in config.items() if k not in keys}


def test_the_model_maker_keeps_everything_but_what_it_names(
    omni_dir: Path, dense_dir: Path
) -> None:
    from transformers import AutoConfig

    for name, built in ((QWEN3_OMNI, omni_dir), (QWEN3_06B, dense_dir)):
        source = real_files(name)
        made = json.loads((built / "qms-tiny-model.json").read_text())
        for file in ("generation_config.json", "tokenizer_config.json", "vocab.json", "merges.txt"):
            assert (built / file).read_bytes() == (source / file).read_bytes(), file
        real = AutoConfig.from_pretrained(str(source)).to_dict()
        loaded = AutoConfig.from_pretrained(str(built))
        ours = loaded.to_dict()
        for path, value in made["changed"].items():
            *parents, key = path.split(".")
            real_node, our_node, attributes = real, ours, loaded
            for parent in parents:
                real_node, our_node = real_node[parent], our_node[parent]
                attributes = getattr(attributes, parent)
            assert getattr(attributes, key) == value, path  # as the model reads it
            # to_dict() writes an alias (num_experts) under its own name (num_local_experts)
            real_node[type(attributes).attribute_map.get(key, key)] = value
        if "layer_types" in real and "layer_types" not in made["changed"]:  # derived from the count
            assert ours.pop("layer_types") == real.pop("layer_types")[: made["layers"]]
        # Not the model's shape: where it was read from, and the dtype the weights were saved in.
        assert _without(ours, NOT_SHAPE) == _without(real, NOT_SHAPE), name
    changed = json.loads((dense_dir / "qms-tiny-model.json").read_text())["changed"]
    assert changed == {"num_hidden_layers": 2}


# ---------------------------------------------------------------- Qwen3-Omni served
def _media_messages() -> dict[str, list[dict[str, Any]]]:
    """Each media part as clients spell it, with the processor-format twin transformers
    counts: (our request parts, transformers' content)."""
    return {
        "image_url": [{"type": "image_url", "image_url": {"url": data_url(IMAGE, "image/png")}}],
        "image (Qwen)": [{"type": "image", "image": data_url(IMAGE, "image/png")}],
        "input_audio": [
            {
                "type": "input_audio",
                "input_audio": {"data": base64.b64encode(AUDIO).decode(), "format": "wav"},
            }
        ],
        "audio_url": [{"type": "audio_url", "audio_url": {"url": data_url(AUDIO, "audio/wav")}}],
        "audio (Qwen)": [{"type": "audio", "audio": data_url(AUDIO, "audio/wav")}],
        "video_url": [{"type": "video_url", "video_url": {"url": data_url(VIDEO, "video/mp4")}}],
        "video (Qwen, file)": [{"type": "video", "video": data_url(VIDEO, "video/mp4")}],
        "video (Qwen, frames)": [
            {"type": "video", "video": [data_url(f, "image/png") for f in VIDEO_FRAMES]}
        ],
    }


def _transformers_count(processor: Any, kind: str, text: str) -> int:
    """What Qwen's processor gives for one media item of `kind` after `text`."""
    import io

    import soundfile

    content: list[dict[str, Any]] = [{"type": "text", "text": text}]
    inputs: dict[str, Any] = {}
    if kind.startswith("image"):
        content.append({"type": "image"})
        inputs["images"] = [Image.open(io.BytesIO(IMAGE)).convert("RGB")]
    elif "audio" in kind:
        content.append({"type": "audio"})
        inputs["audio"] = [soundfile.read(io.BytesIO(AUDIO), dtype="float32")[0]]
    else:
        content.append({"type": "video"})
        frames = [np.asarray(Image.open(io.BytesIO(f)).convert("RGB")) for f in VIDEO_FRAMES]
        if "frames" not in kind:  # the server samples the 2 fps file at 2 fps: every frame
            from qms_testkit.media import decoded_frames

            frames = list(decoded_frames(VIDEO))
        inputs["videos"] = [np.stack(frames)]
        inputs["videos_kwargs"] = {"fps": 2.0, "do_sample_frames": False}
    prompt = processor.apply_chat_template(
        [{"role": "user", "content": content}], add_generation_prompt=True, tokenize=False
    )
    return len(processor(text=[prompt], return_tensors="pt", **inputs)["input_ids"][0])


def test_omni_answers_text_through_its_real_template(omni: RuntimeServer, processor: Any) -> None:
    client = openai.OpenAI(base_url=f"{omni.base_url}/v1", api_key="unused", max_retries=0)
    messages = [{"role": "user", "content": "Hello"}]
    result = client.chat.completions.create(
        model=SERVED,
        messages=messages,
        max_tokens=3,
        temperature=0,  # type: ignore[arg-type]
    )
    expected = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
    assert result.usage is not None and result.usage.prompt_tokens == len(
        expected[0] if isinstance(expected[0], list) else expected
    )
    assert result.choices[0].finish_reason == "length"
    assert "chat template from chat_template.json" in omni.log_path.read_text()


@pytest.mark.parametrize("kind", list(_media_messages()))
def test_omni_takes_every_media_part(omni: RuntimeServer, processor: Any, kind: str) -> None:
    parts = [{"type": "text", "text": "What is this?"}, *_media_messages()[kind]]
    messages = [{"role": "user", "content": parts}]
    result = _chat(omni, messages)
    expected = _transformers_count(processor, kind, "What is this?")
    assert result["usage"]["prompt_tokens"] == expected
    assert _tokenize(omni, messages) == expected  # /tokenize: the same road


def test_omni_tokenize_counts_what_chat_counts(omni: RuntimeServer, processor: Any) -> None:
    tokenizer = processor.tokenizer
    template = processor.chat_template
    cases: list[tuple[list[Any], dict[str, Any], dict[str, Any]]] = [
        ([{"role": "user", "content": "Hello"}],
         {"chat_template_kwargs": {"enable_thinking": False}}, {"enable_thinking": False}),
        (HISTORY, {"tools": [WEATHER, TIME]}, {"tools": [WEATHER, TIME]}),
    ]  # fmt: skip
    for messages, body, kwargs in cases:
        rendered = HISTORY_TEXT if messages is HISTORY else messages
        expected = len(
            tokenizer.encode(
                tokenizer.apply_chat_template(
                    rendered,
                    chat_template=template,
                    add_generation_prompt=True,
                    tokenize=False,
                    **kwargs,
                ),
                add_special_tokens=False,
            )
        )
        assert _tokenize(omni, messages, **body) == expected
        assert _chat(omni, messages, **body)["usage"]["prompt_tokens"] == expected
    # Without the kwargs the counts differ: nothing was ignored.
    assert _tokenize(omni, cases[0][0]) == expected_plain(tokenizer, template, cases[0][0])
    assert _tokenize(omni, cases[0][0]) != _tokenize(omni, cases[0][0], **cases[0][1])


def expected_plain(tokenizer: Any, template: str, messages: list[Any]) -> int:
    text = tokenizer.apply_chat_template(
        messages, chat_template=template, add_generation_prompt=True, tokenize=False
    )
    return len(tokenizer.encode(text, add_special_tokens=False))


def test_an_unknown_part_is_refused_by_name(omni: RuntimeServer) -> None:
    parts = [{"type": "text", "text": "hi"}, {"type": "file", "file": {"file_id": "x"}}]
    response = _post(
        omni,
        "/v1/chat/completions",
        {"model": SERVED, "messages": [{"role": "user", "content": parts}]},
    )
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["param"] == "messages.0.content.1"
    assert error["message"].startswith(
        "messages.0.content.1: type 'file' is not accepted; one of 'text', 'image_url', "
        "'input_audio', 'audio_url'"
    )


def test_a_bad_audio_url_is_refused_by_name(omni: RuntimeServer) -> None:
    cases = {
        "data:text/plain;base64,aGk=": "unsupported_media_type",
        "http://example.com/a.wav": "remote_media_disabled",
        "data:audio/wav;base64,AAAA": "invalid_media",  # not decodable audio
    }
    for url, code in cases.items():
        parts = [{"type": "audio_url", "audio_url": {"url": url}}]
        response = _post(
            omni,
            "/v1/chat/completions",
            {"model": SERVED, "messages": [{"role": "user", "content": parts}]},
        )
        assert response.status_code == 400, response.text
        error = response.json()["error"]
        assert (error["param"], error["code"]) == ("messages.0.content.0", code), error


# ---------------------------------------------------------------- Qwen3-0.6B served
def test_dense_model_thinks_calls_tools_and_counts_as_transformers(
    dense: RuntimeServer, dense_dir: Path
) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(dense_dir))

    def count(messages: list[Any], **kwargs: Any) -> int:
        text = tokenizer.apply_chat_template(
            messages, add_generation_prompt=True, tokenize=False, **kwargs
        )
        return len(tokenizer.encode(text, add_special_tokens=False))

    hello = [{"role": "user", "content": [{"type": "text", "text": "Hello"}]}]
    flat = [{"role": "user", "content": "Hello"}]
    for body, kwargs in (
        ({}, {}),
        ({"chat_template_kwargs": {"enable_thinking": False}}, {"enable_thinking": False}),
    ):
        expected = count(flat, **kwargs)
        assert _chat(dense, hello, **body)["usage"]["prompt_tokens"] == expected
        assert _tokenize(dense, hello, **body) == expected
    expected = count(HISTORY_TEXT, tools=[WEATHER, TIME])
    result = _chat(dense, HISTORY, tools=[WEATHER, TIME])
    assert result["usage"]["prompt_tokens"] == expected
    assert _tokenize(dense, HISTORY, tools=[WEATHER, TIME]) == expected
    # A forced call: the grammar writes it, through the real <tool_call> tokens.
    forced = _chat(dense, flat, tools=[WEATHER], tool_choice="required", max_tokens=200)
    call = forced["choices"][0]["message"]["tool_calls"][0]
    assert (call["function"]["name"], forced["choices"][0]["finish_reason"]) == (
        "get_weather",
        "tool_calls",
    )
    assert forced["usage"]["prompt_tokens"] == count(flat, tools=[WEATHER], enable_thinking=False)


def test_a_text_model_names_the_media_part_it_cannot_take(dense: RuntimeServer) -> None:
    parts = [
        {"type": "text", "text": "hi"},
        {"type": "audio_url", "audio_url": {"url": data_url(AUDIO, "audio/wav")}},
    ]
    for path in ("/v1/chat/completions", "/tokenize"):
        response = _post(
            dense, path, {"model": SERVED, "messages": [{"role": "user", "content": parts}]}
        )
        assert response.status_code == 400, response.text
        error = response.json()["error"]
        assert (error["param"], error["code"]) == ("messages.0.content.1", "unsupported_media")
        assert "the audio_url part needs a Qwen3-Omni model" in error["message"]
