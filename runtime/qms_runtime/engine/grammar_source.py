"""From a `GrammarSpec` to llguidance grammar text (checked here as far as plain Python
can; llguidance checks the rest when it compiles, engine/grammar.py).

Kinds: "json_object" (any JSON object), "json_schema" (`source`: the schema as JSON
text), "tool_calls" (`source`: `{"tools": [OpenAI function objects], "choice":
"required" | <name>, "parallel": bool}`, the output Qwen3's Hermes tool-call blocks) and
"lark" (`source`: a llguidance Lark grammar).

JSON is emitted the way `json.dumps` writes it (", " and ": ", no other whitespace), the
layout Qwen3 writes tool calls in; free whitespace would let a model pad forever.
"""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING, Any

import llguidance

from qms_runtime.quoting import echo, safe_text

if TYPE_CHECKING:
    from llguidance._lib import JsonCompileOptions

__all__ = ["GrammarError", "grammar_text", "tool_call_lark"]

JSON_LAYOUT: JsonCompileOptions = {
    "whitespace_flexible": False,
    "item_separator": ", ",
    "key_separator": ": ",
}
TOOL_CALL_OPEN = "<tool_call>"
TOOL_CALL_CLOSE = "</tool_call>"
_FUNCTION_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")  # OpenAI's rule for function names
_NO_PARAMETERS = {"type": "object", "properties": {}, "additionalProperties": False}


class GrammarError(ValueError):
    """A grammar, schema or tool definition that cannot be used (400); `param` names
    the request field."""

    def __init__(self, message: str, param: str) -> None:
        super().__init__(message)
        self.message = message
        self.param = param


def grammar_text(spec: Any, param: str, added_tokens: frozenset[str] = frozenset()) -> str:
    """llguidance grammar text for `spec` (a GrammarSpec); `added_tokens`: the
    tokenizer's added tokens (the tool-call tags are matched as those tokens)."""
    kind, source = spec.kind, spec.source
    if kind == "json_object":
        return str(llguidance.LLMatcher.grammar_from_json_schema({"type": "object"}, JSON_LAYOUT))
    if kind == "json_schema":
        schema = _json_object(source, "the JSON schema", param)
        return str(llguidance.LLMatcher.grammar_from_json_schema(schema, overrides=JSON_LAYOUT))
    if kind == "tool_calls":
        return str(
            llguidance.LLMatcher.grammar_from_lark(tool_call_lark(source, param, added_tokens))
        )
    if kind == "lark":
        if not source.strip():
            raise GrammarError("the grammar is empty", param)
        return str(llguidance.LLMatcher.grammar_from_lark(source))
    raise GrammarError(f"unknown grammar kind {kind!r}", param)


def tool_call_lark(source: str, param: str, added_tokens: frozenset[str] = frozenset()) -> str:
    """The Lark grammar of the tool-call blocks `source` asks for:
    `<tool_call>\\n{"name": "<name>", "arguments": <JSON of its parameters>}\\n</tool_call>`,
    one block, or with parallel and choice "required" one or more separated by "\\n"."""
    spec = _json_object(source, "the tool-call spec", param)
    tools = spec.get("tools")
    if not isinstance(tools, list) or not tools:
        raise GrammarError("tools must be a non-empty list of functions", param)
    functions: dict[str, dict[str, Any]] = {}
    for index, tool in enumerate(tools):
        name, parameters = _function(tool, index, param)
        if name in functions:
            raise GrammarError(f"tools.{index}: function name {echo(name)} is used twice", param)
        functions[name] = parameters
    choice = spec.get("choice", "required")
    parallel = spec.get("parallel", False)
    if not isinstance(parallel, bool):
        raise GrammarError("parallel must be true or false", param)
    if choice != "required":
        if not isinstance(choice, str) or choice not in functions:
            raise GrammarError(
                f"tool_choice names function {echo(choice)}, which is not in tools", param
            )
        functions = {choice: functions[choice]}
    tag_open, tag_close = (_tag(t, added_tokens) for t in (TOOL_CALL_OPEN, TOOL_CALL_CLOSE))
    repeat = ' ("\\n" call)*' if parallel and choice == "required" else ""
    alternatives = " | ".join(f"f{i}" for i in range(len(functions)))
    lines = [
        f"start: call{repeat}",
        f'call: {tag_open} "\\n{{\\"name\\": " ({alternatives}) "}}\\n" {tag_close}',
    ]
    for i, (name, parameters) in enumerate(functions.items()):
        lines.append(f'f{i}: "\\"{name}\\", \\"arguments\\": " a{i}')
        lines.append(f"a{i}: %json {json.dumps(parameters | {'x-guidance': dict(JSON_LAYOUT)})}")
    return "\n".join(lines) + "\n"


def _function(tool: Any, index: int, param: str) -> tuple[str, dict[str, Any]]:
    where = f"tools.{index}"
    if isinstance(tool, dict) and tool.get("type") == "function" and "function" in tool:
        tool = tool["function"]  # the chat request's wrapper, accepted as well
    if not isinstance(tool, dict):
        raise GrammarError(f"{where} must be a function object", param)
    name = tool.get("name")
    if not isinstance(name, str) or not _FUNCTION_NAME.fullmatch(name):
        raise GrammarError(
            f"{where}: function name {echo(name)} must be 1 to 64 of a-z, A-Z, 0-9, _ and -",
            param,
        )
    parameters = tool.get("parameters", _NO_PARAMETERS)
    if not isinstance(parameters, dict):
        raise GrammarError(
            f"{where}: parameters of {echo(name)} must be a JSON schema object", param
        )
    if parameters.get("type", "object") != "object":
        raise GrammarError(f"{where}: parameters of {echo(name)} must have type object", param)
    return name, parameters


def _tag(text: str, added_tokens: frozenset[str]) -> str:
    return text if text in added_tokens else json.dumps(text)


def _json_object(source: str, what: str, param: str) -> dict[str, Any]:
    try:
        value = json.loads(source)
    except (json.JSONDecodeError, TypeError) as exc:
        raise GrammarError(f"{what} is not valid JSON: {safe_text(exc, 200)}", param) from None
    if not isinstance(value, dict):
        raise GrammarError(f"{what} must be a JSON object, not {type(value).__name__}", param)
    return value
