"""Streaming text: stop sequences cut across pieces, incremental detokenizing that holds
back half characters (api/output/textstream.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qms_runtime.api.output.textstream import (
    IncrementalDecoder,
    StopChecker,
    StreamDecoder,
    text_decoder,
)

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
