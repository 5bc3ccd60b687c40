"""The OpenAPI document served at /openapi.json (for clients and for the schemathesis
tests): request bodies are the protocol models' JSON schemas, every operation lists the
statuses it answers with, errors have the OpenAI error body.

Routes read their bodies themselves (boundary.py bounds and checks them before pydantic),
so FastAPI cannot see the bodies; they are added here from the same models that
validate them.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic.json_schema import models_json_schema

from qms_runtime.api.request.protocol import (
    ChatCompletionRequest,
    CompletionRequest,
    DetokenizeRequest,
    ErrorResponse,
    TokenizeChatRequest,
    TokenizeCompletionRequest,
)

_REF = "#/components/schemas/{model}"
_ERRORS = {
    400: "Bad input; `param` names the field.",
    401: "Missing or wrong API key.",
    404: "Unknown model.",
    413: "Body over max_request_bytes.",
    429: "Overloaded; retry after `Retry-After` seconds.",
    500: "Unexpected server error.",
    503: "Loading or draining.",
}
_BODIES = {
    "/v1/chat/completions": "ChatCompletionRequest",
    "/v1/predict": "ChatCompletionRequest",
    "/v1/completions": "CompletionRequest",
}
_TOKENIZER_BODIES = {
    "/tokenize": ["TokenizeCompletionRequest", "TokenizeChatRequest"],
    "/detokenize": ["DetokenizeRequest"],
}
_JSON_OR_STREAM = {
    "application/json": {"schema": {"type": "object"}},
    "text/event-stream": {"schema": {"type": "string"}},
}


_JSON = {"application/json": {"schema": {"type": "object"}}}


def _ok(description: str, content: dict[str, Any]) -> dict[str, Any]:
    return {"description": description, "content": content}


def _error(description: str) -> dict[str, Any]:
    ref = {"$ref": _REF.format(model="ErrorResponse")}
    return {"description": description, "content": {"application/json": {"schema": ref}}}


def _responses(ok: dict[str, Any], *codes: int) -> dict[str, Any]:
    return {"200": ok, **{str(code): _error(_ERRORS[code]) for code in codes}}


def build_openapi(app: FastAPI) -> dict[str, Any]:
    schema = get_openapi(title=app.title, version=app.version, routes=app.routes)
    _, definitions = models_json_schema(
        [
            (ChatCompletionRequest, "validation"),
            (CompletionRequest, "validation"),
            (TokenizeCompletionRequest, "validation"),
            (TokenizeChatRequest, "validation"),
            (DetokenizeRequest, "validation"),
            (ErrorResponse, "serialization"),
        ],
        ref_template=_REF,
    )
    components = schema.setdefault("components", {})
    components.setdefault("schemas", {}).update(definitions["$defs"])
    components["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
    paths = schema["paths"]
    for path, model in _BODIES.items():
        operation = paths[path]["post"]
        operation["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": {"$ref": _REF.format(model=model)}}},
        }
        operation["security"] = [{"bearer": []}]
        answer = "The answer, or server-sent events with stream=true."
        operation["responses"] = _responses(
            _ok(answer, _JSON_OR_STREAM), 400, 401, 404, 413, 429, 500, 503
        )
    for path, names in _TOKENIZER_BODIES.items():
        refs = [{"$ref": _REF.format(model=name)} for name in names]
        operation = paths[path]["post"]
        operation["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": {"anyOf": refs}}},
        }
        operation["security"] = [{"bearer": []}]
        ok = _ok("Token ids / text.", _JSON)
        operation["responses"] = _responses(ok, 400, 401, 404, 413, 503)
    models = paths["/v1/models"]["get"]
    models["security"] = [{"bearer": []}]
    models["responses"] = _responses(_ok("The served model.", _JSON), 401)
    for path in ("/health", "/ready"):
        paths[path]["get"]["responses"] = _responses(_ok("Alive / ready.", _JSON), 503)
    text = {"text/plain": {"schema": {"type": "string"}}}
    paths["/metrics"]["get"]["responses"] = {"200": _ok("Prometheus text format.", text)}
    return schema


def install_openapi(app: FastAPI) -> None:
    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = build_openapi(app)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
