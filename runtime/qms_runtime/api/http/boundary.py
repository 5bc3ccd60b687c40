"""The input boundary: a request body becomes a plain JSON object here, or a 400/413.

Everything a client sends passes this one function before pydantic, the tokenizer, the
chat template or a media decoder sees it:

- size: at most `max_request_bytes` (413), checked on the declared length and while
  reading;
- encoding: UTF-8 only;
- syntax: JSON as RFC 8259 says, so no NaN or Infinity, no number that overflows to an
  infinite float, no integer of more digits than Python converts (4300);
- depth: at most `MAX_JSON_DEPTH` nested arrays/objects (a deep document is refused
  before it can exhaust the parser's recursion);
- text: every string, keys included, is well-formed Unicode (a JSON `\\ud800` escape
  decodes to a lone surrogate, which no tokenizer or encoder takes): 400
  `invalid_unicode` with `param` naming the field.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from starlette.requests import Request

from qms_runtime.api.http.errors import APIError, bad_request, echo

MAX_JSON_DEPTH = 32
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


class _NumberRefused(ValueError):
    pass


def _parse_constant(name: str) -> Any:
    raise _NumberRefused(f"{name} is not a JSON number")


def _parse_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _NumberRefused(f"the number {echo(text, 32)} is out of range")
    return value


async def read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise APIError(413, f"request body over {limit} bytes", code="request_too_large")
    body = bytearray()
    async for chunk in request.stream():
        body.extend(chunk)
        if len(body) > limit:
            raise APIError(413, f"request body over {limit} bytes", code="request_too_large")
    return bytes(body)


def parse_json_object(raw: bytes) -> dict[str, Any]:
    """The body as a JSON object, checked as the module docstring says (raises APIError)."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise bad_request(
            f"the body is not UTF-8 (byte {exc.start})", code="invalid_encoding"
        ) from exc
    try:
        parsed = json.loads(
            text,
            parse_constant=_parse_constant,
            parse_float=_parse_float,
        )
    except RecursionError as exc:
        raise _too_deep() from exc
    except _NumberRefused as exc:
        raise bad_request(f"the body is not accepted: {exc}", code="invalid_number") from exc
    except json.JSONDecodeError as exc:  # its message: what and where, never the input
        raise bad_request(f"the body is not valid JSON: {exc}", code="invalid_json") from exc
    except ValueError as exc:  # int(): past sys.get_int_max_str_digits() digits
        raise bad_request(
            "the body is not accepted: an integer has too many digits", code="invalid_number"
        ) from exc
    if not isinstance(parsed, dict):
        raise bad_request("the body must be a JSON object", code="invalid_json")
    check_tree(parsed, text)
    return parsed


def _too_deep() -> APIError:
    return bad_request(
        f"the body nests arrays/objects deeper than {MAX_JSON_DEPTH} levels", code="too_deep"
    )


Path = tuple[Any, ...] | None  # (parent path, key or index): joined only for an error


def _field(path: Path) -> str | None:
    """`messages.0.content` for a path; hostile keys escaped and capped."""
    parts: list[str] = []
    while path is not None:
        path, part = path
        parts.append(echo(part)[1:-1])
    return ".".join(reversed(parts)) or None


def check_tree(document: dict[str, Any], text: str | None = None) -> None:
    """Depth and well-formed Unicode of every string (iterative: no recursion to exhaust).

    With the JSON `text` the document came from, the walk is skipped when the text cannot
    hold what it looks for: a lone surrogate only comes from a `\\uD800`-`\\uDFFF` escape
    (strict UTF-8 decoding refuses encoded ones), and a depth over the limit needs more
    brackets than the limit. A large prompt of token ids costs no walk.
    """
    if (
        text is not None
        and _SURROGATE_ESCAPE.search(text) is None
        and text.count("[") + text.count("{") <= MAX_JSON_DEPTH
    ):
        return
    stack: list[tuple[Any, Path, int]] = [(document, None, 1)]
    while stack:
        value, path, depth = stack.pop()
        if depth > MAX_JSON_DEPTH:
            raise _too_deep()
        items = value.items() if isinstance(value, dict) else enumerate(value)
        for key, item in items:
            if isinstance(key, str) and not key.isascii():
                _check_string(key, path, key=True)
            if isinstance(item, str):
                if not item.isascii():
                    _check_string(item, (path, key))
            elif isinstance(item, dict | list):
                stack.append((item, (path, key), depth + 1))


def _check_string(value: str, path: Path, key: bool = False) -> None:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        where = _field(path)
        if key:
            what = f"a key of {where}" if where else "a key of the body"
        else:
            what = where or "a string"
        raise bad_request(
            f"{what} is not well-formed Unicode: lone surrogate "
            f"U+{ord(value[exc.start]):04X} at character {exc.start}",
            param=where,
            code="invalid_unicode",
        ) from exc
