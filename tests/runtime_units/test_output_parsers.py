"""The pure output parsers (api/output/tool_calls.py, api/output/reasoning.py): exact
results, and the streaming parsers give the full parser's result for every split of the
text."""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qms_runtime.api.output.reasoning import ReasoningStream, split_reasoning
from qms_runtime.api.output.tool_calls import ToolCall, ToolCallStream, parse_tool_calls


def _ids() -> Callable[[], str]:
    counter = itertools.count()
    return lambda: f"call_{next(counter)}"


CALL_A = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'
CALL_B = '<tool_call>\n{"name": "get_time", "arguments": {"zone": "CET", "n": 2}}\n</tool_call>'
BROKEN = '<tool_call>\n{"name": "get_weather", "arguments": {"city": </tool_call>'

TOOL_CASES = [
    # (text, content, [(name, arguments)])
    (CALL_A, None, [("get_weather", '{"city": "Paris"}')]),
    (CALL_A + "\n" + CALL_B + "\n", None,
     [("get_weather", '{"city": "Paris"}'), ("get_time", '{"zone": "CET", "n": 2}')]),
    ("Let me check.\n" + CALL_A, "Let me check.\n", [("get_weather", '{"city": "Paris"}')]),
    ("Before " + CALL_A + " after", "Before  after", [("get_weather", '{"city": "Paris"}')]),
    (BROKEN, BROKEN, []),
    (BROKEN + "\n" + CALL_B, BROKEN + "\n", [("get_time", '{"zone": "CET", "n": 2}')]),
    ("plain text, no calls", "plain text, no calls", []),
    ("\n", "\n", []),
    ("unclosed " + CALL_A[:-5], "unclosed " + CALL_A[:-5], []),
    ('<tool_call>{"name": 5}</tool_call>', '<tool_call>{"name": 5}</tool_call>', []),
    ('<tool_call>["a"]</tool_call>', '<tool_call>["a"]</tool_call>', []),
    ('<tool_call>{"name": "f", "arguments": "x"}</tool_call>',
     '<tool_call>{"name": "f", "arguments": "x"}</tool_call>', []),
    ('<tool_call>{"name": "noargs"}</tool_call>', None, [("noargs", "{}")]),
    ('<tool_call>{"name": "f", "arguments": {"s": "é"}}</tool_call>', None, [("f", '{"s": "é"}')]),
    ("a <tool_ b", "a <tool_ b", []),
    ("ends with <tool_c", "ends with <tool_c", []),
]  # fmt: skip


def _stream_tools(chunks: list[str]) -> tuple[str | None, list[ToolCall], list[dict[str, object]]]:
    stream = ToolCallStream(_ids())
    content, deltas = "", []
    for chunk in chunks:
        out = stream.feed(chunk)
        content += out.content
        deltas += out.tool_calls
    out = stream.finish()
    content += out.content
    deltas += out.tool_calls
    return (content if content or not stream.calls else None), stream.calls, deltas


@pytest.mark.parametrize(("text", "content", "calls"), TOOL_CASES)
def test_tool_calls_full(text: str, content: str | None, calls: list[tuple[str, str]]) -> None:
    parsed = parse_tool_calls(text, _ids())
    assert parsed.content == content
    assert [(c.name, c.arguments) for c in parsed.calls] == calls
    assert [c.id for c in parsed.calls] == [f"call_{i}" for i in range(len(calls))]
    for call in parsed.calls:
        entry = call.message_entry()
        assert entry == {"id": call.id, "type": "function",
                         "function": {"name": call.name, "arguments": call.arguments}}  # fmt: skip
        json.loads(call.arguments)


@pytest.mark.parametrize(("text", "content", "calls"), TOOL_CASES)
def test_tool_calls_stream_every_split(
    text: str, content: str | None, calls: list[tuple[str, str]]
) -> None:
    for cut in range(len(text) + 1):
        got_content, got_calls, _ = _stream_tools([text[:cut], text[cut:]])
        assert got_content == content, cut
        assert got_calls == parse_tool_calls(text, _ids()).calls, cut
    by_char = _stream_tools(list(text))
    assert by_char[0] == content and by_char[1] == parse_tool_calls(text, _ids()).calls


def test_stream_deltas_openai_shape() -> None:
    _, _, deltas = _stream_tools(list("Sure." + CALL_A + CALL_B))
    assert deltas == [
        {"index": 0, "id": "call_0", "type": "function",
         "function": {"name": "get_weather", "arguments": ""}},
        {"index": 0, "function": {"arguments": '{"city": "Paris"}'}},
        {"index": 1, "id": "call_1", "type": "function",
         "function": {"name": "get_time", "arguments": ""}},
        {"index": 1, "function": {"arguments": '{"zone": "CET", "n": 2}'}},
    ]  # fmt: skip


def test_no_partial_tag_is_content() -> None:
    stream = ToolCallStream(_ids())
    seen = [stream.feed(piece).content for piece in ["ok ", "<", "tool", "_call>", '{"name"']]
    assert seen == ["ok ", "", "", "", ""]


PIECES = st.sampled_from([CALL_A, CALL_B, BROKEN, "\n", " ", "text", "<", "<tool_call>",
                          "</tool_call>", "<think>", "</think>", "é", "{"])  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(st.lists(PIECES, max_size=8), st.lists(st.integers(0, 400), max_size=6))
def test_tool_calls_any_split(pieces: list[str], cuts: list[int]) -> None:
    text = "".join(pieces)
    points = sorted({min(c, len(text)) for c in cuts})
    chunks = [text[a:b] for a, b in zip([0, *points], [*points, len(text)], strict=True)]
    full = parse_tool_calls(text, _ids())
    content, calls, _ = _stream_tools(chunks)
    assert (content, calls) == (full.content, full.calls)


REASONING_CASES = [
    # (text, starts_in_think, reasoning, content)
    ("<think>\nI should greet.\n</think>\n\nHello!", False, "I should greet.", "Hello!"),
    ("Hello!", False, None, "Hello!"),
    ("", False, None, ""),
    ("<thi", False, None, "<thi"),
    ("x<think>a</think>b", False, None, "x<think>a</think>b"),
    ("<think>\n\n</think>\n\nHi", False, "", "Hi"),
    ("<think>cut by max_tokens", False, "cut by max_tokens", ""),
    ("<think>a </thi", False, "a </thi", ""),
    ("plan it\n</think>\n\nDone.", True, "plan it", "Done."),
    ("no end", True, "no end", ""),
    ("<think>a  b\n</think> x  \n", False, "a  b", "x  \n"),
    ("<think>r</think>" + CALL_A, False, "r", CALL_A),
]


def _stream_reasoning(chunks: list[str], starts: bool) -> tuple[str | None, str]:
    stream = ReasoningStream(starts)
    reasoning, content = "", ""
    for chunk in [*chunks, None]:
        out = stream.feed(chunk) if chunk is not None else stream.finish()
        reasoning += out.reasoning
        content += out.content
    return (reasoning if stream.found else None), content


@pytest.mark.parametrize(("text", "starts", "reasoning", "content"), REASONING_CASES)
def test_reasoning_full_and_every_split(
    text: str, starts: bool, reasoning: str | None, content: str
) -> None:
    assert split_reasoning(text, starts) == (reasoning, content)
    for cut in range(len(text) + 1):
        assert _stream_reasoning([text[:cut], text[cut:]], starts) == (reasoning, content), cut
    assert _stream_reasoning(list(text), starts) == (reasoning, content)


@settings(max_examples=300, deadline=None)
@given(st.lists(PIECES, max_size=8), st.lists(st.integers(0, 400), max_size=6), st.booleans())
def test_reasoning_any_split(pieces: list[str], cuts: list[int], starts: bool) -> None:
    text = "".join(pieces)
    points = sorted({min(c, len(text)) for c in cuts})
    chunks = [text[a:b] for a, b in zip([0, *points], [*points, len(text)], strict=True)]
    assert _stream_reasoning(chunks, starts) == split_reasoning(text, starts)
