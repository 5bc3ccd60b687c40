"""Every error becomes one OpenAI-shaped response here, and only here.

Body: `{"error": {"message", "type", "param", "code"}}`. 400 bad input, 401 bad or
missing API key, 404 unknown model or route, 413 body too large, 429 overloaded (with
Retry-After), 503 loading or draining, 500 anything unexpected.

The layers below raise domain errors (qms_runtime.types: MediaError, NotReady,
EngineOverloaded, ...); `to_api_error` maps each to its status here. Client input that
an error message repeats goes through `echo` (escaped, length-capped, quoting.py), every
text of the body through `safe_text`, and the body is rendered as ASCII JSON, so
rendering cannot fail on what a client sent. If building the answer fails all the same,
the handler falls back to a constant 500 body (`LAST_RESORT`): the error path cannot raise.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from qms_runtime.api.request import content_parts, protocol
from qms_runtime.api.request.content_parts import CONTENT_PART_TYPES
from qms_runtime.quoting import MAX_ECHO_CHARS, echo, safe_text
from qms_runtime.types import (
    EngineOverloaded,
    EngineUnavailable,
    GenerationFailed,
    MediaError,
    NotReady,
)

__all__ = ["APIError", "bad_request", "echo", "error_body", "safe_text", "to_api_error"]

log = logging.getLogger(__name__)

LAST_RESORT = (
    b'{"error":{"message":"internal server error","type":"server_error",'
    b'"param":null,"code":"internal"}}'
)


class APIError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.code = code
        self.param = param
        self.headers = headers or {}


def bad_request(message: str, param: str | None = None, code: str | None = None) -> APIError:
    return APIError(400, message, param=param, code=code)


def not_ready(message: str, code: str) -> APIError:
    return APIError(503, message, type="service_unavailable", code=code)


def error_body(error: APIError) -> dict[str, Any]:
    return {
        "error": {
            "message": safe_text(error.message),
            "type": safe_text(error.type),
            "param": None if error.param is None else safe_text(error.param, 256),
            "code": None if error.code is None else safe_text(error.code, 64),
        }
    }


_UNION_TAGS = frozenset({"str", "int", "float", "bool", "list", "dict"})


# The request models' class names: pydantic names a union's model branch by its class.
_MODEL_NAMES = frozenset(
    name
    for module in (protocol, content_parts)
    for name, value in vars(module).items()
    if isinstance(value, type) and issubclass(value, BaseModel)
)


def _is_field(part: str | int) -> bool:
    # pydantic puts union branches in `loc` ("content.str", "prompt.list[int]",
    # "tool_choice.NamedToolChoice"): not fields.
    text = str(part)
    return (
        text not in _UNION_TAGS
        and text not in _MODEL_NAMES
        and "[" not in text
        and not text.startswith("function-")
    )


def _fields(loc: tuple[str | int, ...]) -> list[str | int]:
    """The fields of an error's `loc`: without union branches, and without the `type` tag
    pydantic puts after a content part's index (`content.0.image.image` is the field
    `content.0.image`)."""
    fields: list[str | int] = []
    after_index = False
    for part in (part for part in loc if _is_field(part)):
        if not (after_index and part in CONTENT_PART_TYPES):
            fields.append(part)
        after_index = isinstance(part, int)
    return fields


def _rank(error: Any) -> tuple[int, bool]:
    """Deeper first; at equal depth a failed constraint before a type mismatch (the
    mismatch is a branch of a union that does not apply)."""
    return len(_fields(error["loc"])), not str(error["type"]).endswith("_type")


def from_validation_error(exc: ValidationError) -> APIError:
    """The error of the deepest field: where a value fails every branch of a union (a
    message's content is a string or a list of parts), the branch that got furthest
    names the problem (`messages.0.content.1: ... tag 'file' ...`), not the first branch
    (`messages.0.content: Input should be a valid string`)."""
    errors = exc.errors(include_url=False)
    first = max(errors, key=_rank)  # max keeps the first of equal rank
    fields = [safe_text(part, MAX_ECHO_CHARS) for part in _fields(first["loc"])]
    param = ".".join(fields) or None
    detail = safe_text(first["msg"], 500)
    if first["type"] == "union_tag_invalid":  # pydantic repeats the tag whole: echo it capped
        context = first.get("ctx") or {}
        detail = (
            f"{str(context.get('discriminator', 'type')).strip(chr(39))} "
            f"{echo(context.get('tag', ''))} is not "
            f"accepted; one of {context.get('expected_tags', '')}"
        )
    message = f"{param}: {detail}" if param else detail
    return bad_request(message, param=param)


def to_api_error(exc: BaseException, retry_after: int) -> APIError:
    """Map any exception to the API error that answers it."""
    if isinstance(exc, APIError):
        return exc
    if isinstance(exc, ValidationError):
        return from_validation_error(exc)
    if isinstance(exc, EngineOverloaded):
        return APIError(
            429,
            f"The server is overloaded: {exc}. Retry later.",
            type="rate_limit_error",
            code="server_overloaded",
            headers={"Retry-After": str(retry_after)},
        )
    if isinstance(exc, MediaError):
        return APIError(400, exc.message, code=exc.code, param=exc.param)
    if isinstance(exc, NotReady):
        return not_ready(exc.message, exc.code)
    if isinstance(exc, EngineUnavailable):
        return not_ready(str(exc), "engine_unavailable")
    if isinstance(exc, GenerationFailed):
        return APIError(500, f"generation failed: {exc}", type="server_error", code="internal")
    if isinstance(exc, StarletteHTTPException):
        code = "not_found" if exc.status_code == 404 else None
        return APIError(exc.status_code, str(exc.detail), code=code)
    log.exception("unexpected error", exc_info=exc)
    return APIError(500, "internal server error", type="server_error", code="internal")


class AsciiJSONResponse(JSONResponse):
    """JSON with non-ASCII characters escaped: encoding it cannot fail."""

    def render(self, content: Any) -> bytes:
        return json.dumps(content, ensure_ascii=True, allow_nan=False).encode("ascii")


def error_response(error: APIError) -> Response:
    """The OpenAI error response; the constant 500 if even that cannot be built."""
    try:
        headers = {str(k): safe_text(v, 256) for k, v in error.headers.items()}
        return AsciiJSONResponse(error_body(error), status_code=error.status, headers=headers)
    except Exception:
        return last_resort_response()


def last_resort_response() -> Response:
    return Response(LAST_RESORT, status_code=500, media_type="application/json")


def install_error_handlers(app: FastAPI, retry_after: int) -> None:
    async def handle(request: Request, exc: Exception) -> Response:
        try:
            return error_response(to_api_error(exc, retry_after))
        except Exception:
            return last_resort_response()

    for exc_type in (
        APIError,
        ValidationError,
        EngineOverloaded,
        EngineUnavailable,
        GenerationFailed,
        MediaError,
        NotReady,
        StarletteHTTPException,
        Exception,
    ):
        app.add_exception_handler(exc_type, handle)
