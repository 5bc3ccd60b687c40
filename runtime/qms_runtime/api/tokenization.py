"""`/tokenize` and `/detokenize`, in vLLM's request and response shapes, so that clients
(and lm-eval's `remote` tokenizer) count tokens as the server does:

- tokenize: `{"prompt", "add_special_tokens"}` or `{"messages", "add_generation_prompt",
  "continue_final_message", "add_special_tokens"}`, either with `return_token_strs`
  -> `{"count", "max_model_len", "tokens", "token_strs"}`;
- detokenize: `{"tokens"}` -> `{"prompt"}`.
"""

from __future__ import annotations

from typing import Any

from qms_runtime.api.errors import APIError, bad_request, echo
from qms_runtime.api.protocol import (
    DetokenizeRequest,
    TokenizeChatRequest,
    TokenizeCompletionRequest,
)


class Tokenization:
    def __init__(self, tokenizer: Any, model_name: str, max_model_len: int, vocab: int) -> None:
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

    def tokenize(self, body: dict[str, Any]) -> dict[str, Any]:
        request: TokenizeChatRequest | TokenizeCompletionRequest
        if "messages" in body:
            request = TokenizeChatRequest.model_validate(body)
            self._check_model(request.model)
            ids = self._chat_ids(request)
        else:
            request = TokenizeCompletionRequest.model_validate(body)
            self._check_model(request.model)
            ids = self._encode(request.prompt, "prompt", request.add_special_tokens)
        answer: dict[str, Any] = {"count": len(ids), "max_model_len": self._max_len, "tokens": ids}
        answer["token_strs"] = (
            [str(t) for t in self._tokenizer.convert_ids_to_tokens(ids)]
            if request.return_token_strs
            else None
        )
        return answer

    def _chat_ids(self, request: TokenizeChatRequest) -> list[int]:
        if self._tokenizer.chat_template is None:
            raise bad_request("this model has no chat template; send a prompt", "messages")
        if request.add_generation_prompt and request.continue_final_message:
            raise bad_request(
                "add_generation_prompt and continue_final_message cannot both be true",
                "continue_final_message",
            )
        for i, message in enumerate(request.messages):
            if message.media():
                param = f"messages.{i}.content"
                raise bad_request("/tokenize takes text only", param, "unsupported_media")
        messages = [{"role": m.role, "content": m.text()} for m in request.messages]
        try:
            text = self._tokenizer.apply_chat_template(
                messages,
                add_generation_prompt=request.add_generation_prompt,
                continue_final_message=request.continue_final_message,
                tokenize=False,
            )
        except Exception as exc:  # a template may reject a conversation (jinja raise)
            raise bad_request(f"chat template failed: {exc}", "messages") from exc
        return self._encode(str(text), "messages", request.add_special_tokens)

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
