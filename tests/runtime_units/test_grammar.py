"""engine/grammar.py: grammar-constrained sampling driven as the engine drives it.

A batch of sequences samples from random logits (a fixed torch generator), the rows'
logits masked by `mask_rows` before sampling and the sampled token `accept`ed after, until
each row samples an EOS id. The logits are random, so whatever comes out is the grammar's
doing: every output must parse and validate. The model's logits are wider than the
tokenizer (64 ids past it, which must never be allowed).
"""

from __future__ import annotations

import json
import re
from typing import Any

import jsonschema
import pytest
import torch
from transformers import AddedToken, AutoTokenizer

from qms_runtime.engine.grammar import (
    GrammarError,
    GrammarMatcher,
    Grammars,
    apply_bitmask_numpy,
    apply_bitmask_torch,
    mask_rows,
)
from qms_runtime.tools.tiny_tokenizer import ENDOFTEXT, IM_END, train_tokenizer
from qms_runtime.types import GrammarSpec

SEQUENCES = 30
MAX_TOKENS = 400
EXTRA_IDS = 64  # model vocab past the tokenizer

NESTED = {
    "type": "object",
    "properties": {
        "user": {
            "type": "object",
            "properties": {
                "id": {"type": "integer", "minimum": 1, "maximum": 1000},
                "name": {"type": "string", "maxLength": 12},
            },
            "required": ["id", "name"],
            "additionalProperties": False,
        },
        "active": {"type": "boolean"},
    },
    "required": ["user", "active"],
    "additionalProperties": False,
}
ARRAYS_ENUMS = {
    "type": "object",
    "properties": {
        "colors": {
            "type": "array",
            "items": {"enum": ["red", "green", "blue"]},
            "minItems": 1,
            "maxItems": 4,
        },
        "size": {"type": "string", "enum": ["S", "M", "L"]},
        "points": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {"x": {"type": "integer"}, "y": {"type": "integer"}},
                "required": ["x", "y"],
                "additionalProperties": False,
            },
            "maxItems": 3,
        },
    },
    "required": ["colors", "size"],
    "additionalProperties": False,
}
BOUNDS = {
    "type": "object",
    "properties": {
        "age": {"type": "integer", "minimum": 18, "maximum": 99},
        "count": {"type": "integer", "exclusiveMinimum": 0, "exclusiveMaximum": 10},
        "delta": {"type": "integer", "minimum": -5, "maximum": 5},
        "ok": {"type": ["boolean", "null"]},
    },
    "required": ["age", "count", "delta", "ok"],
    "additionalProperties": False,
}
OPEN_OBJECT = {  # additionalProperties not given: extra keys allowed, as JSON Schema says
    "type": "object",
    "properties": {"id": {"type": "integer", "minimum": 0, "maximum": 9}},
    "required": ["id"],
}
WEATHER = {
    "name": "get_weather",
    "description": 'Weather for a city; "unit" {c|f}',
    "parameters": {
        "type": "object",
        "properties": {
            "city": {"type": "string", "maxLength": 10},
            "unit": {"enum": ["c", "f"]},
        },
        "required": ["city", "unit"],
        "additionalProperties": False,
    },
}
ADD = {
    "name": "add",
    "parameters": {
        "type": "object",
        "properties": {"a": {"type": "integer"}, "b": {"type": "integer", "minimum": 0}},
        "required": ["a", "b"],
        "additionalProperties": False,
    },
}
NOOP = {"name": "noop-now", "description": "no parameters"}
TOOLS = [WEATHER, ADD, NOOP]
TOOL_BLOCK = re.compile(r"<tool_call>\n(.*?)\n</tool_call>", re.DOTALL)


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory: pytest.TempPathFactory) -> Any:
    path = tmp_path_factory.mktemp("grammar-tokenizer")
    train_tokenizer(path, 512)
    return AutoTokenizer.from_pretrained(str(path))


@pytest.fixture(scope="module")
def qwen_like_tokenizer(tokenizer: Any) -> Any:
    """With <tool_call> and </tool_call> as single non-special tokens, as in Qwen3."""
    copy = AutoTokenizer.from_pretrained(tokenizer.name_or_path)
    tags = ["<tool_call>", "</tool_call>"]
    copy.add_tokens([AddedToken(tag, normalized=False, special=False) for tag in tags])
    return copy


def eos_ids(tokenizer: Any) -> tuple[int, ...]:
    return tuple(tokenizer.convert_tokens_to_ids([IM_END, ENDOFTEXT]))


@pytest.fixture(scope="module")
def grammars(tokenizer: Any) -> Grammars:
    return Grammars(tokenizer, len(tokenizer) + EXTRA_IDS, eos_ids(tokenizer))


def structure_bias(tokenizer: Any, width: int) -> torch.Tensor:
    """Favour tokens that close strings and objects, so that free-form strings (any
    JSON object's keys) end within MAX_TOKENS; the mask still decides what is valid."""
    bias = torch.zeros(width)
    for token_id in range(len(tokenizer)):
        text = tokenizer.decode([token_id])
        if '"' in text or "}" in text:
            bias[token_id] = 4.0
    return bias


def assert_dumps_layout(text: str) -> None:
    """Outside strings, whitespace is only json.dumps' one space after ',' and ':'."""
    bare = re.sub(r'"(?:\\.|[^"\\])*"', '""', text)
    assert not re.search(r"\s", re.sub(r"([,:]) ", r"\1", bare)), text


def generate(
    grammars: Grammars,
    tokenizer: Any,
    spec: GrammarSpec,
    seed: int,
    bias: torch.Tensor | None = None,
) -> list[str]:
    """SEQUENCES outputs, sampled as a batch; each ends with an EOS id (asserted)."""
    grammars.check(spec, "response_format")
    eos = set(grammars.eos_token_ids)
    width = grammars.vocab_size
    generator = torch.Generator().manual_seed(seed)
    matchers = [grammars.matcher(spec) for _ in range(SEQUENCES)]
    outputs: list[list[int]] = [[] for _ in range(SEQUENCES)]
    running = list(range(SEQUENCES))
    for _ in range(MAX_TOKENS):
        if not running:
            break
        scores = torch.randn(len(running), width, generator=generator) * 2.0
        if bias is not None:
            scores += bias
        mask_rows(scores, [matchers[i] for i in running])
        assert torch.isneginf(scores[:, len(tokenizer) :]).all()  # ids past the tokenizer
        picks = torch.multinomial(torch.softmax(scores, dim=-1), 1, generator=generator)
        still = []
        for row, token in zip(running, picks.flatten().tolist(), strict=True):
            matchers[row].accept(token)
            assert matchers[row].error is None
            if token in eos:
                assert matchers[row].done
            else:
                outputs[row].append(token)
                still.append(row)
        running = still
    assert running == [], f"{len(running)} sequences did not end in {MAX_TOKENS} tokens"
    return [tokenizer.decode(ids) for ids in outputs]


@pytest.mark.parametrize(
    ("name", "schema"),
    [("nested", NESTED), ("arrays_enums", ARRAYS_ENUMS), ("bounds", BOUNDS), ("open", OPEN_OBJECT)],
)
def test_json_schema_outputs_validate(
    grammars: Grammars, tokenizer: Any, name: str, schema: dict[str, Any]
) -> None:
    spec = GrammarSpec("json_schema", json.dumps(schema))
    bias = structure_bias(tokenizer, grammars.vocab_size) if name == "open" else None
    outputs = generate(grammars, tokenizer, spec, seed=len(name), bias=bias)
    validator = jsonschema.Draft202012Validator(schema)
    for text in outputs:
        value = json.loads(text)
        validator.validate(value)
        assert_dumps_layout(text)
    assert len(set(outputs)) > 1


def test_json_object_outputs_are_objects(grammars: Grammars, tokenizer: Any) -> None:
    bias = structure_bias(tokenizer, grammars.vocab_size)
    outputs = generate(grammars, tokenizer, GrammarSpec("json_object"), seed=7, bias=bias)
    assert all(isinstance(json.loads(text), dict) for text in outputs)
    assert any(json.loads(text) for text in outputs)  # not only {}


def test_additional_properties_as_the_schema_says(grammars: Grammars, tokenizer: Any) -> None:
    closed = OPEN_OBJECT | {"additionalProperties": False}
    typed = OPEN_OBJECT | {"additionalProperties": {"type": "boolean"}}
    cases = [
        (OPEN_OBJECT, '{"id": 3, "extra": [1]}', True),
        (closed, '{"id": 3, "extra": [1]}', False),
        (closed, '{"id": 3}', True),
        (typed, '{"id": 3, "extra": true}', True),
        (typed, '{"id": 3, "extra": 1}', False),
        (closed, '{"id":3}', False),  # json.dumps' layout only
        (closed, '{"id": 10}', False),  # maximum 9
    ]
    for schema, text, valid in cases:
        matcher = grammars.matcher(GrammarSpec("json_schema", json.dumps(schema)))
        for token in tokenizer.encode(text):
            matcher.accept(token)
        assert (matcher.error is None and matcher.done) is valid, (schema, text)


def tool_spec(choice: str, parallel: bool, tools: list[dict[str, Any]] = TOOLS) -> GrammarSpec:
    return GrammarSpec(
        "tool_calls", json.dumps({"tools": tools, "choice": choice, "parallel": parallel})
    )


def parse_tool_calls(text: str) -> list[dict[str, Any]]:
    bodies = TOOL_BLOCK.findall(text)
    assert text == "\n".join(f"<tool_call>\n{body}\n</tool_call>" for body in bodies)
    calls = [json.loads(body) for body in bodies]
    schemas = {tool["name"]: tool.get("parameters") for tool in TOOLS}
    for call in calls:
        assert list(call) == ["name", "arguments"]
        schema = schemas[call["name"]] or {"type": "object", "additionalProperties": False}
        jsonschema.Draft202012Validator(schema).validate(call["arguments"])
    return calls


@pytest.mark.parametrize("qwen_tags", [False, True])
@pytest.mark.parametrize(
    ("choice", "parallel"),
    [("required", False), ("add", False), ("required", True), ("get_weather", True)],
)
def test_tool_calls(
    tokenizer: Any, qwen_like_tokenizer: Any, qwen_tags: bool, choice: str, parallel: bool
) -> None:
    tok = qwen_like_tokenizer if qwen_tags else tokenizer
    grammars = Grammars(tok, len(tok) + EXTRA_IDS, eos_ids(tok))
    bias = structure_bias(tok, grammars.vocab_size)
    outputs = generate(grammars, tok, tool_spec(choice, parallel), seed=11, bias=bias)
    counts = []
    for text in outputs:
        calls = parse_tool_calls(text)
        counts.append(len(calls))
        if choice != "required":
            assert {call["name"] for call in calls} == {choice}
        if qwen_tags:  # the tags are Qwen's single tokens, not spelled out
            ids = tok.encode(text)
            assert ids.count(tok.convert_tokens_to_ids("<tool_call>")) == len(calls)
            assert ids.count(tok.convert_tokens_to_ids("</tool_call>")) == len(calls)
    if parallel and choice == "required":
        assert min(counts) >= 1 and max(counts) > 1
    else:
        assert set(counts) == {1}
    if choice == "required":
        names = {call["name"] for text in outputs for call in parse_tool_calls(text)}
        assert names == {"get_weather", "add", "noop-now"}


def advanced(grammars: Grammars, spec: GrammarSpec, steps: int, seed: int) -> GrammarMatcher:
    """A matcher `steps` sampled tokens into `spec` (fewer if it is done earlier)."""
    matcher = grammars.matcher(spec)
    generator = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        if matcher.done:
            break
        scores = torch.randn(1, grammars.vocab_size, generator=generator)
        mask_rows(scores, [matcher])
        matcher.accept(int(scores.argmax()))
    return matcher


def mixed_matchers(grammars: Grammars) -> list[GrammarMatcher]:
    specs = [
        GrammarSpec("json_schema", json.dumps(NESTED)),
        GrammarSpec("json_object"),
        tool_spec("required", True),
        GrammarSpec("json_schema", json.dumps(BOUNDS)),
        GrammarSpec("lark", 'start: "yes" | "no" | "maybe"'),
    ]
    return [
        advanced(grammars, spec, steps, seed)
        for seed, (spec, steps) in enumerate((s, n) for s in specs for n in (0, 3, 9, 200))
    ]


def test_batched_mask_equals_row_by_row(grammars: Grammars) -> None:
    matchers = mixed_matchers(grammars)
    assert any(m.done for m in matchers) and not all(m.done for m in matchers)
    scores = torch.randn(
        len(matchers), grammars.vocab_size, generator=torch.Generator().manual_seed(3)
    )
    batched = scores.clone()
    mask_rows(batched, matchers)
    for i, matcher in enumerate(matchers):
        row = scores[i : i + 1].clone()
        mask_rows(row, [matcher])
        assert torch.equal(row[0], batched[i])
        allowed = set(torch.isfinite(row[0]).nonzero().flatten().tolist())
        assert allowed  # never an all -inf row
        if matcher.done:
            assert allowed == set(grammars.eos_token_ids)
    # a narrower logits tensor (the model's width may be under the padded mask width)
    narrow = scores[:, :-7].clone()
    mask_rows(narrow, matchers)
    assert torch.equal(narrow, batched[:, :-7])


def test_torch_bitmask_path_equals_numpy_path(grammars: Grammars) -> None:
    """The CUDA path (torch ops) and the CPU path (numpy) give one mask; run on CPU here."""
    words = torch.randint(
        -(2**31),
        2**31 - 1,
        (5, (grammars.vocab_size + 31) // 32),
        dtype=torch.int32,
        generator=torch.Generator().manual_seed(5),
    )
    a = torch.zeros(5, grammars.vocab_size)
    b = a.clone()
    apply_bitmask_numpy(a, words)
    apply_bitmask_torch(b, words)
    assert torch.equal(a, b)
    token = 32 * 3 + 31  # the sign bit is token 32*i + 31
    words[1] = 0
    words[1, 3] = -(2**31)
    c = torch.zeros(5, grammars.vocab_size)
    apply_bitmask_torch(c, words)
    assert set(torch.isfinite(c[1]).nonzero().flatten().tolist()) == {token}


def test_rollback(grammars: Grammars, tokenizer: Any) -> None:
    matcher = grammars.matcher(GrammarSpec("json_schema", json.dumps(NESTED)))
    text = '{"user": {"id": 7, "name": "ab"}, "active": true}'
    tokens = tokenizer.encode(text)
    before: list[torch.Tensor] = []
    for token in tokens:
        scores = torch.zeros(1, grammars.vocab_size)
        mask_rows(scores, [matcher])
        before.append(scores)
        matcher.accept(token)
    assert matcher.done and matcher.accepted == len(tokens)
    matcher.rollback(5)
    assert not matcher.done and matcher.accepted == len(tokens) - 5
    scores = torch.zeros(1, grammars.vocab_size)
    mask_rows(scores, [matcher])
    assert torch.equal(scores, before[len(tokens) - 5])
    for token in tokens[-5:]:
        matcher.accept(token)
    eos = grammars.eos_token_ids[0]
    matcher.accept(eos)
    matcher.accept(eos)
    assert matcher.done and matcher.error is None and matcher.accepted == len(tokens) + 2
    matcher.rollback(3)  # both EOS and the closing brace
    assert not matcher.done and matcher.accepted == len(tokens) - 1
    mask_rows(scores := torch.zeros(1, grammars.vocab_size), [matcher])
    assert torch.equal(scores, before[-1])
    matcher.accept(tokens[-1])
    assert matcher.done
    # an accepting state that may go on (a parallel tool call may follow): EOS counts
    parallel = advanced(grammars, tool_spec("required", True), 0, 0)
    block = '<tool_call>\n{"name": "add", "arguments": {"a": 1, "b": 2}}\n</tool_call>'
    for token in tokenizer.encode(block):
        parallel.accept(token)
    assert not parallel.done
    parallel.accept(eos)
    assert parallel.done and parallel.error is None
    parallel.rollback(1)
    assert not parallel.done
    matcher.rollback(len(tokens))
    assert matcher.accepted == 0 and not matcher.done
    with pytest.raises(ValueError, match="cannot roll back 1 of 0 tokens"):
        matcher.rollback(1)


def test_forbidden_token_breaks_the_matcher_and_lets_it_end(
    grammars: Grammars, tokenizer: Any
) -> None:
    matcher = grammars.matcher(GrammarSpec("json_object"))
    matcher.accept(tokenizer.encode("x")[0])
    assert matcher.error is not None and matcher.done and matcher.accepted == 0
    scores = torch.zeros(1, grammars.vocab_size)
    mask_rows(scores, [matcher])
    assert set(torch.isfinite(scores[0]).nonzero().flatten().tolist()) == set(
        grammars.eos_token_ids
    )


def test_cached_and_one_matcher_per_sequence(grammars: Grammars, tokenizer: Any) -> None:
    spec = GrammarSpec("json_schema", json.dumps(BOUNDS))
    grammars.check(spec, "response_format")
    first, second = grammars.matcher(spec), grammars.matcher(spec)
    for token in tokenizer.encode('{"age": 2'):
        first.accept(token)
    assert first.accepted > 0 and second.accepted == 0
    fresh = torch.zeros(2, grammars.vocab_size)
    mask_rows(fresh, [second, grammars.matcher(spec)])
    assert torch.equal(fresh[0], fresh[1])
    assert set(torch.isfinite(fresh[0]).nonzero().flatten().tolist()) == {tokenizer.encode("{")[0]}


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (GrammarSpec("json_schema", '{"type": "object",'), "the JSON schema is not valid JSON: "),
        (GrammarSpec("json_schema", "[1, 2]"), "the JSON schema must be a JSON object, not list"),
        (GrammarSpec("json_schema", '{"type": "nope"}'), "invalid JSON schema: Invalid type: nope"),
        (
            GrammarSpec("json_schema", '{"type": "string", "pattern": "("}'),
            "invalid JSON schema: regex parse error:",
        ),
        (GrammarSpec("tool_calls", "{tools}"), "the tool-call spec is not valid JSON: "),
        (
            GrammarSpec("tool_calls", '{"tools": [], "choice": "required"}'),
            "tools must be a non-empty list of functions",
        ),
        (tool_spec("nope", False), "tool_choice names function 'nope', which is not in tools"),
        (
            tool_spec("required", False, [{"name": "a b"}]),
            "tools.0: function name 'a b' must be 1 to 64 of",
        ),
        (tool_spec("required", False, [ADD, ADD]), "tools.1: function name 'add' is used twice"),
        (
            tool_spec("required", False, [{"name": "f", "parameters": {"type": "array"}}]),
            "tools.0: parameters of 'f' must have type object",
        ),
        (
            tool_spec(
                "required",
                False,
                [
                    {
                        "name": "f",
                        "parameters": {"type": "object", "properties": {"x": {"type": "nope"}}},
                    }
                ],
            ),
            "invalid tool definitions: ",
        ),
        (GrammarSpec("lark", "start: foo"), 'invalid grammar: at 1(8): unknown name: "foo"'),
        (GrammarSpec("lark", ""), "the grammar is empty"),
        (GrammarSpec("regex", "a+"), "unknown grammar kind 'regex'"),
    ],
)
def test_bad_input_raises_grammar_error(
    grammars: Grammars, spec: GrammarSpec, message: str
) -> None:
    with pytest.raises(GrammarError) as caught:
        grammars.check(spec, "response_format")
    assert caught.value.message.startswith(message), caught.value.message
    assert caught.value.param == "response_format"
    assert isinstance(caught.value, ValueError)


def test_vocab_size_smaller_than_the_tokenizer(tokenizer: Any) -> None:
    with pytest.raises(ValueError, match=f"vocab_size 10 < the tokenizer's {len(tokenizer)}$"):
        Grammars(tokenizer, 10, eos_ids(tokenizer))
