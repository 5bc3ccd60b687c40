"""Request models take strict types; every error body renders whatever the message
holds, the error handler cannot raise, client input is echoed escaped and capped."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from qms_runtime.api.request.protocol import ChatCompletionRequest, CompletionRequest

pytestmark = pytest.mark.runtime


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
