"""Small runtime pieces without a server: text streaming, checksums, settings, protocol."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from qms_runtime.api.output.textstream import (
    IncrementalDecoder,
    StopChecker,
    StreamDecoder,
    text_decoder,
)
from qms_runtime.api.request.protocol import ChatCompletionRequest, CompletionRequest
from qms_runtime.models.checksums import ChecksumError, verify_model_dir, write_sha256sums
from qms_runtime.models.loading import torch_supports_capability
from qms_runtime.settings import RuntimeSettings, load_settings

pytestmark = pytest.mark.runtime


# ------------------------------------------------------------------ stop sequences
def _feed_all(checker: StopChecker, pieces: list[str]) -> str:
    return "".join(checker.feed(piece) for piece in pieces) + checker.flush()


def test_stop_split_across_pieces_is_cut_before_it() -> None:
    checker = StopChecker(["END"])
    assert _feed_all(checker, ["abc E", "N", "D more"]) == "abc "
    assert checker.stopped is True


def test_partial_stop_prefix_is_released_when_it_does_not_complete() -> None:
    checker = StopChecker(["END"])
    assert checker.feed("abc EN") == "abc "
    assert checker.feed("x") == "ENx"
    assert checker.stopped is False


def test_earliest_of_several_stops_wins() -> None:
    checker = StopChecker(["world", "lo"])
    assert _feed_all(checker, ["hello world"]) == "hel"


def test_no_stops_passes_text_through() -> None:
    assert _feed_all(StopChecker([]), ["a", "b"]) == "ab"


# -------------------------------------------------------------- detokenization
_PIECES = {1: "he", 2: "llo", 3: " w", 4: "\xe9"}


def _decode(ids: list[int]) -> str:
    # Token 5 is the first byte of a two-byte character: alone it decodes to U+FFFD.
    data = "".join(_PIECES.get(i, "") for i in ids).encode()
    raw = b"".join(b"\xc3" if i == 5 else b"\xa9" if i == 6 else b"" for i in ids)
    return (data + raw).decode("utf-8", errors="replace") if raw else data.decode()


def test_incremental_decoder_holds_back_half_characters() -> None:
    decoder = IncrementalDecoder(_decode)
    assert decoder.push([1]) == "he"
    assert decoder.push([2, 3]) == "llo w"
    assert decoder.push([5]) == ""
    assert decoder.push([6]) == "\xe9"
    assert decoder.flush() == ""


@pytest.fixture(scope="module")
def tokenizer(qwen3_dir: Path) -> Any:
    import transformers

    return transformers.AutoTokenizer.from_pretrained(str(qwen3_dir))


def _pushed(decoder: Any, chunks: list[list[int]]) -> tuple[list[str], str]:
    return [decoder.push(chunk) for chunk in chunks], decoder.flush()


# Ids over the whole test vocabulary and past it (a random model's rows past the tokenizer
# decode to nothing), in chunks as the engine hands them over; bytes of multi-byte
# characters (the byte-level alphabet's high ids) are frequent.
_chunks = st.lists(
    st.lists(st.one_of(st.integers(0, 600), st.integers(100, 300)), min_size=0, max_size=5),
    max_size=30,
)


@settings(max_examples=300, deadline=None)
@given(chunks=_chunks)
def test_stream_decoder_gives_the_full_decode(tokenizer: Any, chunks: list[list[int]]) -> None:
    def decode(ids: list[int]) -> str:
        return str(tokenizer.decode(ids, skip_special_tokens=True))

    full = decode([token for chunk in chunks for token in chunk])
    stream = text_decoder(tokenizer, decode)
    assert isinstance(stream, StreamDecoder)
    pieces, rest = _pushed(stream, chunks)
    assert "".join(pieces) + rest == full
    assert all("\ufffd" not in piece for piece in pieces) or "\ufffd" in full
    old_pieces, old_rest = _pushed(IncrementalDecoder(decode), chunks)
    assert "".join(old_pieces) + old_rest == full


def test_stream_decoder_holds_back_half_characters(tokenizer: Any) -> None:
    def decode(ids: list[int]) -> str:
        return str(tokenizer.decode(ids, skip_special_tokens=True))

    ids = tokenizer.encode("é🎉 ok", add_special_tokens=False)
    assert len(ids) == 8  # byte-level: é is 2 bytes, 🎉 4, then " o" and "k"
    stream = StreamDecoder(tokenizer.backend_tokenizer, decode)
    assert [stream.push([token]) for token in ids] == ["", "é", "", "", "", "🎉", " o", "k"]
    assert stream.flush() == ""
    cut = StreamDecoder(tokenizer.backend_tokenizer, decode)
    assert [cut.push([token]) for token in ids[:3]] == ["", "é", ""]
    assert cut.flush() == "\ufffd"  # what decode writes for the half emoji


def test_text_decoder_without_a_tokenizers_backend_is_the_python_one() -> None:
    assert isinstance(text_decoder(object(), _decode), IncrementalDecoder)


# --------------------------------------------------------------------- checksums
def _model_dir(tmp_path: Path) -> Path:
    (tmp_path / "model.safetensors").write_bytes(b"weights-1")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "extra.bin").write_bytes(b"weights-2")
    (tmp_path / "config.json").write_text("{}")
    write_sha256sums(tmp_path)
    return tmp_path


def test_sha256sums_is_sha256sum_format(tmp_path: Path) -> None:
    model = _model_dir(tmp_path)
    digest = hashlib.sha256(b"weights-1").hexdigest()
    lines = (model / "SHA256SUMS").read_text().splitlines()
    assert f"{digest}  model.safetensors" in lines
    assert len(lines) == 3
    assert (
        verify_model_dir(model).entries["sub/extra.bin"] == hashlib.sha256(b"weights-2").hexdigest()
    )


def test_mismatch_names_the_file(tmp_path: Path) -> None:
    model = _model_dir(tmp_path)
    (model / "sub" / "extra.bin").write_bytes(b"tampered")
    with pytest.raises(ChecksumError) as caught:
        verify_model_dir(model)
    assert caught.value.path == "sub/extra.bin"
    assert "sha256 mismatch" in str(caught.value)


def test_missing_listed_file_names_the_file(tmp_path: Path) -> None:
    model = _model_dir(tmp_path)
    (model / "config.json").unlink()
    with pytest.raises(ChecksumError) as caught:
        verify_model_dir(model)
    assert (caught.value.path, caught.value.reason) == (
        "config.json",
        "listed in SHA256SUMS but missing",
    )


def test_unlisted_weight_file_is_refused(tmp_path: Path) -> None:
    model = _model_dir(tmp_path)
    (model / "model-00002.safetensors").write_bytes(b"more")
    with pytest.raises(ChecksumError) as caught:
        verify_model_dir(model)
    assert caught.value.path == "model-00002.safetensors"
    assert caught.value.reason == "weight file is not listed in SHA256SUMS"


def test_no_manifest_is_refused(tmp_path: Path) -> None:
    model = _model_dir(tmp_path)
    (model / "SHA256SUMS").unlink()
    with pytest.raises(ChecksumError, match="no SHA256SUMS or MD5SUMS manifest"):
        verify_model_dir(model)


def test_md5sums_is_accepted(tmp_path: Path) -> None:
    model = _model_dir(tmp_path)
    (model / "SHA256SUMS").unlink()
    lines = [
        f"{hashlib.md5(path.read_bytes()).hexdigest()}  {path.relative_to(model)}"
        for path in sorted(model.rglob("*"))
        if path.is_file()
    ]
    (model / "MD5SUMS").write_text("\n".join(lines) + "\n")
    assert verify_model_dir(model).algorithm == "md5"
    (model / "model.safetensors").write_bytes(b"x")
    with pytest.raises(ChecksumError, match="md5 mismatch"):
        verify_model_dir(model)


# ---------------------------------------------------------------------- settings
def test_settings_from_env_ignore_unknown_qms_vars(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("QMS_MODEL_DIR", str(tmp_path / "my-model"))
    monkeypatch.setenv("QMS_MAX_BATCH_SIZE", "8")
    monkeypatch.setenv("QMS_VERIFY_CHECKSUMS", "false")
    monkeypatch.setenv("QMS_SOMETHING_NEW", "whatever")
    settings = load_settings(port="9000")
    assert (settings.max_batch_size, settings.verify_checksums, settings.port) == (8, False, 9000)
    assert settings.model_name == "my-model"
    assert settings.required_api_key is None


def test_api_key_file_wins_over_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    key_file = tmp_path / "key"
    key_file.write_text("from-file\n")
    monkeypatch.setenv("QMS_API_KEY", "from-env")
    settings = RuntimeSettings(model_dir=tmp_path, api_key_file=key_file)
    assert settings.required_api_key == "from-file"


def test_bad_setting_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValidationError):
        RuntimeSettings(model_dir=tmp_path, quantization="int4")  # type: ignore[arg-type]


def test_mm_processor_kwargs_from_flag_and_env(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    kwargs = '{"videos_kwargs": {"size": {"shortest_edge": 256, "longest_edge": 4096}}}'
    from_flag = load_settings(model_dir=str(tmp_path), mm_processor_kwargs=kwargs)
    monkeypatch.setenv("QMS_MM_PROCESSOR_KWARGS", kwargs)
    from_env = load_settings(model_dir=str(tmp_path))
    expected = {"videos_kwargs": {"size": {"shortest_edge": 256, "longest_edge": 4096}}}
    assert from_flag.mm_processor_kwargs == from_env.mm_processor_kwargs == expected
    with pytest.raises(ValueError, match="mm_processor_kwargs is not JSON"):
        load_settings(model_dir=str(tmp_path), mm_processor_kwargs="{bad")


# --------------------------------------------------------------- GPU kernel check
@pytest.mark.parametrize(
    ("archs", "capability", "expected"),
    [
        (["sm_80", "sm_90"], (9, 0), True),
        (["sm_80", "sm_86"], (8, 9), True),
        (["sm_50", "sm_60", "sm_70"], (9, 0), False),
        (["sm_70", "compute_70"], (9, 0), True),
        (["sm_90", "sm_100"], (12, 0), False),
    ],
)
def test_torch_supports_capability(
    archs: list[str], capability: tuple[int, int], expected: bool
) -> None:
    assert torch_supports_capability(archs, *capability) is expected


# ---------------------------------------------------------------------- protocol
def test_strict_types_are_not_coerced() -> None:
    with pytest.raises(ValidationError):
        CompletionRequest.model_validate({"model": "m", "prompt": "x", "stream": "true"})
    with pytest.raises(ValidationError):
        CompletionRequest.model_validate({"model": "m", "prompt": "x", "max_tokens": 1.5})
    body = ChatCompletionRequest.model_validate(
        {"model": "m", "messages": [{"role": "user", "content": [{"type": "text", "text": "a"}]}],
         "temperature": 0, "stop": "x"}
    )  # fmt: skip
    assert (body.messages[0].text(), body.temperature, body.stop_list()) == ("a", 0.0, ["x"])


# ------------------------------------------------------------- the error path
class _Unprintable(Exception):
    def __str__(self) -> str:
        raise RuntimeError("str() fails")


def _handled(exc: Exception) -> tuple[int, bytes]:
    import asyncio

    from fastapi import FastAPI
    from starlette.requests import Request

    from qms_runtime.api.http.errors import install_error_handlers

    app = FastAPI()
    install_error_handlers(app, retry_after=1)
    handler = app.exception_handlers[Exception]
    request = Request({"type": "http", "method": "POST", "path": "/", "headers": []})
    response = asyncio.run(handler(request, exc))  # type: ignore[arg-type]
    return response.status_code, bytes(response.body)


def test_error_bodies_render_whatever_the_message_holds() -> None:
    import json

    from qms_runtime.api.http.errors import APIError

    status, body = _handled(
        APIError(404, "no model '\ud800\x00'", param="mo\udfffdel", code="x\ud800")
    )
    assert status == 404
    error = json.loads(body.decode("ascii"))["error"]
    assert error == {
        "message": "no model '\\ud800\\x00'",
        "type": "invalid_request_error",
        "param": "mo\\udfffdel",
        "code": "x\\ud800",
    }


def test_the_error_handler_cannot_raise() -> None:
    import json

    from starlette.exceptions import HTTPException

    from qms_runtime.api.http.errors import LAST_RESORT

    class BadDetail:
        def __str__(self) -> str:
            raise RuntimeError("no")

    internal = json.loads(LAST_RESORT)
    assert internal["error"]["code"] == "internal"
    for exc in (_Unprintable(), RecursionError()):  # the normal path: a logged 500
        status, body = _handled(exc)
        assert (status, json.loads(body)) == (500, internal)
    # Mapping this one raises (str() of its detail): the constant last resort answers.
    assert _handled(HTTPException(418, detail=BadDetail())) == (500, LAST_RESORT)  # type: ignore[arg-type]


def test_echo_escapes_and_caps() -> None:
    from qms_runtime.api.http.errors import echo, safe_text

    assert echo("gpt-5") == "'gpt-5'"
    assert echo("a\nb\x1b[0m\u202e") == "'a\\x0ab\\x1b[0m\\u202e'"
    assert echo("x" * 100) == "'" + "x" * 64 + "...'"
    assert echo("caf\u00e9 \U0001f600") == "'caf\u00e9 \U0001f600'"
    assert safe_text(_Unprintable()) == "<unprintable>"


def test_invalid_settings_never_print_the_api_key(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    secret = "sk-do-not-print-" + "S" * 16
    env = {k: v for k, v in os.environ.items() if not k.startswith("QMS_")}
    env.update(QMS_API_KEY=secret, QMS_ALLOW_REMOTE_MEDIA="true")
    done = subprocess.run(
        [sys.executable, "-m", "qms_runtime.cli", "serve", "--model-dir", str(tmp_path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    assert "allow_remote_media needs allowed_media_domains" in done.stderr
    # pydantic's own message would show the input, the key cut to its first 12 characters
    assert secret[:8] not in done.stderr + done.stdout
