"""Every error becomes one OpenAI-shaped response here, and only here.

Body: `{"error": {"message", "type", "param", "code"}}`. 400 bad input, 401 bad or
missing API key, 404 unknown model or route, 413 body too large, 429 overloaded (with
Retry-After), 503 loading or draining, 500 anything unexpected.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from qms_runtime.engine import EngineOverloaded, EngineUnavailable, GenerationFailed

log = logging.getLogger(__name__)


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


def media_error(message: str, param: str, code: str = "invalid_media") -> APIError:
    """400 for a content part that cannot be used (media.py, video.py)."""
    return APIError(400, message, param=param, code=code)


def not_ready(message: str, code: str) -> APIError:
    return APIError(503, message, type="service_unavailable", code=code)


def error_body(error: APIError) -> dict[str, Any]:
    return {
        "error": {
            "message": error.message,
            "type": error.type,
            "param": error.param,
            "code": error.code,
        }
    }


_UNION_TAGS = frozenset({"str", "int", "float", "bool", "list", "dict"})


def _is_field(part: str | int) -> bool:
    # pydantic puts union branches in `loc` ("content.str", "prompt.list[int]"): not fields.
    text = str(part)
    return text not in _UNION_TAGS and "[" not in text and not text.startswith("function-")


def from_validation_error(exc: ValidationError) -> APIError:
    first = exc.errors(include_url=False)[0]
    param = ".".join(str(part) for part in first["loc"] if _is_field(part)) or None
    message = f"{param}: {first['msg']}" if param else str(first["msg"])
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
    if isinstance(exc, EngineUnavailable):
        return not_ready(str(exc), "engine_unavailable")
    if isinstance(exc, GenerationFailed):
        return APIError(500, f"generation failed: {exc}", type="server_error", code="internal")
    if isinstance(exc, StarletteHTTPException):
        code = "not_found" if exc.status_code == 404 else None
        return APIError(exc.status_code, str(exc.detail), code=code)
    log.exception("unexpected error", exc_info=exc)
    return APIError(500, "internal server error", type="server_error", code="internal")


def error_response(error: APIError) -> JSONResponse:
    return JSONResponse(error_body(error), status_code=error.status, headers=error.headers)


def install_error_handlers(app: FastAPI, retry_after: int) -> None:
    async def handle(request: Request, exc: Exception) -> JSONResponse:
        return error_response(to_api_error(exc, retry_after))

    for exc_type in (
        APIError,
        ValidationError,
        EngineOverloaded,
        EngineUnavailable,
        GenerationFailed,
        StarletteHTTPException,
        Exception,
    ):
        app.add_exception_handler(exc_type, handle)
