"""Thin HTTP routes: authenticate, parse, hand over to serving, map nothing themselves.

`/v1/predict` is the simple path of the seed's Ingress example: it takes a
chat-completions body and answers exactly like `/v1/chat/completions`.
"""

from __future__ import annotations

import asyncio
import hmac
from collections.abc import AsyncIterator, Awaitable
from typing import Any, Protocol, TypeVar

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.background import BackgroundTask

from qms_runtime.api.http.boundary import parse_json_object, read_body
from qms_runtime.api.http.errors import APIError, error_body, not_ready, to_api_error
from qms_runtime.api.request.protocol import (
    ChatCompletionRequest,
    CompletionRequest,
    TokenizeChatRequest,
)
from qms_runtime.api.serve.prepared import PreparedRequest
from qms_runtime.api.serve.serving import OpenAIServing
from qms_runtime.logs import request_id_var
from qms_runtime.metrics import CONTENT_TYPE, RuntimeMetrics
from qms_runtime.settings import RuntimeSettings
from qms_runtime.startup import StartupProgress
from qms_runtime.types import Admission, NotReady

router = APIRouter()
T = TypeVar("T")


class ServerState(Protocol):
    """What the routes read of the server's lifecycle (qms_runtime.lifecycle.ServerState)."""

    settings: RuntimeSettings
    metrics: RuntimeMetrics
    started: float
    phase: str
    error: str | None
    startup: StartupProgress

    @property
    def ready(self) -> bool: ...

    @property
    def healthy(self) -> bool: ...

    @property
    def max_model_len(self) -> int | None: ...

    def require_serving(self) -> OpenAIServing:
        """The serving layer, or raise NotReady."""
        ...


def _state(request: Request) -> ServerState:
    state: ServerState = request.app.state.qms
    return state


def _check_api_key(state: ServerState, request: Request) -> None:
    expected = state.settings.required_api_key
    if expected is None:
        return
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip(), expected):
        raise APIError(
            401,
            "Missing or invalid API key: send 'Authorization: Bearer <key>'.",
            type="authentication_error",
            code="invalid_api_key",
        )


async def _read_json(request: Request, limit: int) -> dict[str, Any]:
    return parse_json_object(await read_body(request, limit))


async def _unless_disconnected(request: Request, work: Awaitable[T]) -> T:
    """Like vLLM's `with_cancellation`: a client that leaves cancels its generation."""
    task = asyncio.ensure_future(work)
    try:
        while True:
            done, _ = await asyncio.wait({task}, timeout=0.2)
            if done:
                return task.result()
            if await request.is_disconnected():
                task.cancel()
                raise APIError(499, "client disconnected", code="client_closed")
    finally:
        if not task.done():
            task.cancel()


async def _released_after(events: AsyncIterator[str], admission: Admission) -> AsyncIterator[str]:
    try:
        async for event in events:
            yield event
    finally:
        admission.release()


async def _generate(request: Request, kind: str) -> Response:
    state = _state(request)
    _check_api_key(state, request)
    serving = state.require_serving()
    body = await _read_json(request, state.settings.max_request_bytes)
    request_id = request_id_var.get() or "local"
    prepared: PreparedRequest
    if kind == "chat":
        chat = ChatCompletionRequest.model_validate(body)
        if chat.has_media or chat.wants_audio:  # decoding and the processor: off the loop
            prepared = await asyncio.to_thread(serving.prepare_chat, chat, request_id)
        else:
            prepared = serving.prepare_chat(chat, request_id)
    else:
        prepared = serving.prepare_completion(CompletionRequest.model_validate(body), request_id)
    admission = serving.backend.admit(prepared.sequences)
    if prepared.stream:
        return StreamingResponse(
            _released_after(serving.stream(prepared), admission),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache"},
            background=BackgroundTask(admission.release),  # also when the body never started
        )
    with admission:
        result = await _unless_disconnected(request, serving.complete(prepared))
    return JSONResponse(result)


@router.post("/v1/chat/completions")
async def chat_completions(request: Request) -> Response:
    return await _generate(request, "chat")


@router.post("/v1/predict")
async def predict(request: Request) -> Response:
    return await _generate(request, "chat")


@router.post("/v1/completions")
async def completions(request: Request) -> Response:
    return await _generate(request, "completion")


async def _tokenization(request: Request) -> tuple[Any, Any]:
    """The tokenizer endpoints' checked body and their handler."""
    state = _state(request)
    _check_api_key(state, request)
    serving = state.require_serving()
    return await _read_json(request, state.settings.max_request_bytes), serving.tokenization


@router.post("/tokenize")
async def tokenize(request: Request) -> Response:
    body, tokenization = await _tokenization(request)
    parsed = tokenization.parse(body)
    if isinstance(parsed, TokenizeChatRequest) and parsed.has_media:  # decoding: off the loop
        return JSONResponse(await asyncio.to_thread(tokenization.tokenize, parsed))
    return JSONResponse(tokenization.tokenize(parsed))


@router.post("/detokenize")
async def detokenize(request: Request) -> Response:
    body, tokenization = await _tokenization(request)
    return JSONResponse(tokenization.detokenize(body))


@router.get("/v1/models")
async def models(request: Request) -> dict[str, Any]:
    state = _state(request)
    _check_api_key(state, request)
    card: dict[str, Any] = {
        "id": state.settings.model_name,
        "object": "model",
        "created": int(state.started),
        "owned_by": "qms",
    }
    if state.max_model_len is not None:
        card["max_model_len"] = state.max_model_len
    return {"object": "list", "data": [card]}


@router.get("/health")
async def health(request: Request) -> Response:
    state = _state(request)
    if not state.healthy:
        error = not_ready(f"unhealthy: {state.error or 'batching loop died'}", "unhealthy")
        return JSONResponse(error_body(error), status_code=503)
    return JSONResponse({"status": "ok", "phase": state.phase})


@router.get("/ready")
async def ready(request: Request) -> Response:
    state = _state(request)
    if state.ready:
        return JSONResponse({"status": "ready"})
    try:
        state.require_serving()
        error = (
            not_ready("the server is shutting down", "draining")
            if state.phase == "draining"
            else not_ready("the batching loop is not running", "engine_unavailable")
        )
    except NotReady as exc:
        error = to_api_error(exc, state.settings.retry_after_seconds)
    # The status stays what probes expect; the body says how far start-up is.
    return JSONResponse({**error_body(error), "startup": state.startup.snapshot()}, 503)


@router.get("/metrics")
async def metrics(request: Request) -> Response:
    return Response(_state(request).metrics.render(), media_type=CONTENT_TYPE)
