"""`/tokenize` and `/detokenize`, in vLLM's request and response shapes, so that clients
(and lm-eval's `remote` tokenizer) count tokens as the server does:

- tokenize: `{"prompt", "add_special_tokens"}` or `{"messages", "tools", "tool_choice",
  "chat_template_kwargs", "add_generation_prompt", "continue_final_message",
  "add_special_tokens"}`, either with `return_token_strs`
  -> `{"count", "max_model_len", "tokens", "token_strs"}`. Messages take every shape a
  chat request takes (tool calls, reasoning, media parts on Qwen3-Omni) and go through
  the chat request's own rendering (`ChatRenderer.render`, api/request/chat_render.py),
  so `count` is the `usage.prompt_tokens` a chat request with the same fields reports;
- detokenize: `{"tokens"}` -> `{"prompt"}`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from qms_runtime.api.http.errors import APIError, bad_request, echo
from qms_runtime.api.request.chat_input import RenderedChat
from qms_runtime.api.request.protocol import (
    DetokenizeRequest,
    TokenizeChatRequest,
    TokenizeCompletionRequest,
)

RenderChat = Callable[..., RenderedChat]


class Tokenization:
    def __init__(
        self, tokenizer: Any, model_name: str, max_model_len: int, vocab: int, render: RenderChat
    ) -> None:
        self._render = render
        self._tokenizer = tokenizer
        self._model_name = model_name
        self._max_len = max_model_len
        self._vocab = vocab

    def _check_model(self, model: str | None) -> None:
        if model is not None and model != self._model_name:
            raise APIError(
                404,
                f"The model {echo(model)} does not exist; this server serves '{self._model_name}'.",
                code="model_not_found",
                param="model",
            )

    @staticmethod
    def parse(body: dict[str, Any]) -> TokenizeChatRequest | TokenizeCompletionRequest:
        if "messages" in body:
            return TokenizeChatRequest.model_validate(body)
        return TokenizeCompletionRequest.model_validate(body)

    def tokenize(self, request: TokenizeChatRequest | TokenizeCompletionRequest) -> dict[str, Any]:
        """The answer to a parsed request (with media: CPU work, call it off the loop)."""
        self._check_model(request.model)
        if isinstance(request, TokenizeChatRequest):
            ids = self._chat_ids(request)
        else:
            ids = self._encode(request.prompt, "prompt", request.add_special_tokens)
        answer: dict[str, Any] = {"count": len(ids), "max_model_len": self._max_len, "tokens": ids}
        answer["token_strs"] = (
            [str(t) for t in self._tokenizer.convert_ids_to_tokens(ids)]
            if request.return_token_strs
            else None
        )
        return answer

    def _chat_ids(self, request: TokenizeChatRequest) -> list[int]:
        if request.add_generation_prompt and request.continue_final_message:
            raise bad_request(
                "add_generation_prompt and continue_final_message cannot both be true",
                "continue_final_message",
            )
        rendered = self._render(
            request,
            add_generation_prompt=request.add_generation_prompt,
            continue_final_message=request.continue_final_message,
            add_special_tokens=request.add_special_tokens,
        )
        return rendered.ids

    def _encode(self, text: str, param: str, add_special_tokens: bool) -> list[int]:
        try:
            ids = self._tokenizer.encode(text, add_special_tokens=add_special_tokens)
        except (TypeError, ValueError) as exc:
            raise bad_request(
                f"{param}: the tokenizer cannot encode this text", param, code="invalid_text"
            ) from exc
        return [int(token) for token in ids]

    def detokenize(self, body: dict[str, Any]) -> dict[str, Any]:
        request = DetokenizeRequest.model_validate(body)
        self._check_model(request.model)
        for i, token in enumerate(request.tokens):
            if not 0 <= token < self._vocab:
                raise bad_request(
                    f"tokens.{i}: token id {token} is out of range [0, {self._vocab})",
                    f"tokens.{i}",
                    code="invalid_token_id",
                )
        return {"prompt": str(self._tokenizer.decode(request.tokens))}
