"""The one road from a chat request's prompt fields (messages, tools, tool_choice,
chat_template_kwargs) to the prompt's token ids, for chat completions and `/tokenize`
alike: the chat template, then the tokenizer, or the media processor when the messages
carry media."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import jinja2

from qms_runtime.api.http.errors import bad_request
from qms_runtime.api.request.chat_input import (
    RenderedChat,
    chat_prompt,
    check_tool_choice,
    output_parsing,
    template_kwargs,
    tool_grammar,
)
from qms_runtime.api.request.media_parts import first_media_part, parse_media
from qms_runtime.api.request.protocol import ChatPromptFields
from qms_runtime.settings import RuntimeSettings
from qms_runtime.types import MediaBackend

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase


def encode(tokenizer: PreTrainedTokenizerBase, text: str, param: str, **kwargs: Any) -> list[int]:
    """Token ids of text the boundary has checked; should the tokenizer refuse it all
    the same, that is the client's input: 400, never 500."""
    try:
        return list(tokenizer.encode(text, **kwargs))
    except (TypeError, ValueError) as exc:
        raise bad_request(
            f"{param}: the tokenizer cannot encode this text", param, code="invalid_text"
        ) from exc


class ChatRenderer:
    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase,
        media: MediaBackend | None,
        settings: RuntimeSettings | None,
    ) -> None:
        self._tokenizer = tokenizer
        self.media = media
        self._settings = settings

    def render(
        self,
        body: ChatPromptFields,
        processor: bool = False,
        add_generation_prompt: bool = True,
        continue_final_message: bool = False,
        add_special_tokens: bool = False,
    ) -> RenderedChat:
        """The one road from chat fields to prompt token ids, for chat completions and
        `/tokenize` alike: the chat template with tools and chat_template_kwargs, then the
        tokenizer, or the media processor when the messages carry media (or `processor`:
        speech out). Decoding media is CPU work: call it off the event loop then."""
        if self._tokenizer.chat_template is None:
            raise bad_request("this model has no chat template; use /v1/completions", "messages")
        if not (processor or body.has_media):
            chat = chat_prompt(self._tokenizer, body, add_generation_prompt, continue_final_message)
            ids = encode(
                self._tokenizer, chat.text, "messages", add_special_tokens=add_special_tokens
            )
            return RenderedChat(ids, chat.text, chat.grammar, chat.parsing, None)
        media, settings = self.media, self._settings
        if media is None or settings is None:
            param, kind = first_media_part(body.messages)
            raise bad_request(
                f"this model takes text only: the {kind} part needs a Qwen3-Omni model with "
                "a processor",
                param,
                code="unsupported_media",
            )
        check_tool_choice(body)
        kwargs = template_kwargs(body, self._tokenizer.apply_chat_template)
        try:
            inputs = media.prepare(
                parse_media(body.messages, settings),
                kwargs,
                add_generation_prompt=add_generation_prompt,
                continue_final_message=continue_final_message,
                add_special_tokens=add_special_tokens,
            )
        except ValueError as exc:  # the processor refuses what it cannot take (an extreme aspect)
            raise bad_request(f"the processor refused the media: {exc}", "messages") from exc
        except jinja2.TemplateError as exc:  # the template rejects the conversation
            raise bad_request(f"chat template failed: {exc}", "messages") from exc
        ids = [int(t) for t in inputs["input_ids"][0].tolist()]
        text = str(self._tokenizer.decode(ids, skip_special_tokens=True))
        return RenderedChat(ids, text, tool_grammar(body), output_parsing(body, text), inputs)
