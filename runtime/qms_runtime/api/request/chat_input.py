"""A chat request's prompt side: the messages as the chat template reads them (tool calls,
tool results and reasoning kept), `tools` and `chat_template_kwargs` passed to the
template, the tool-call grammar for `tool_choice` "required" or a named function, and
how the output is to be parsed (api/output/chat_output.py)."""

from __future__ import annotations

import inspect
import json
from dataclasses import dataclass
from typing import Any

from qms_runtime.api.http.errors import bad_request, echo
from qms_runtime.api.output.chat_output import OutputParsing
from qms_runtime.api.output.reasoning import START as THINK_START
from qms_runtime.api.request.protocol import ChatMessage, ChatPromptFields, NamedToolChoice
from qms_runtime.types import GrammarSpec, ProcessorInputs


@dataclass(frozen=True)
class ChatPrompt:
    text: str
    grammar: GrammarSpec | None
    parsing: OutputParsing


@dataclass(frozen=True)
class RenderedChat:
    """A chat prompt as the engine takes it: token ids (and the processor's inputs when
    the messages carry media), the tool-call grammar and how the output is parsed."""

    ids: list[int]
    text: str
    grammar: GrammarSpec | None
    parsing: OutputParsing
    media_inputs: ProcessorInputs | None


def message_extras(message: ChatMessage) -> dict[str, Any]:
    """What a message carries besides role and content, as Qwen's templates read it."""
    extras: dict[str, Any] = {}
    if message.tool_calls:
        extras["tool_calls"] = [
            {
                "id": call.id,
                "type": "function",
                "function": {"name": call.function.name, "arguments": call.function.arguments},
            }
            for call in message.tool_calls
        ]
    if message.tool_call_id is not None:
        extras["tool_call_id"] = message.tool_call_id
    if message.name is not None:
        extras["name"] = message.name
    if message.reasoning_content is not None:
        extras["reasoning_content"] = message.reasoning_content
    return extras


def template_messages(body: ChatPromptFields) -> list[dict[str, Any]]:
    return [{"role": m.role, "content": m.text(), **message_extras(m)} for m in body.messages]


def template_kwargs(body: ChatPromptFields, apply: Any) -> dict[str, Any]:
    """`tools` and the client's `chat_template_kwargs`, which may not override an argument
    of `apply_chat_template` itself (messages, tokenize, chat_template, ...)."""
    kwargs = dict(body.chat_template_kwargs or {})
    reserved = set(inspect.signature(apply).parameters) | {"self", "tools", "messages"}
    for key in kwargs:
        if key in reserved:
            raise bad_request(
                f"chat_template_kwargs may not set {echo(key)}", "chat_template_kwargs"
            )
    tools = [tool.template_entry() for tool in body.active_tools]
    if tools:
        kwargs["tools"] = tools
    if tool_grammar(body) is not None:
        # The grammar makes the answer start with <tool_call>: no thinking block before it
        # (Qwen3's hybrid templates then close an empty one in the prompt).
        kwargs.setdefault("enable_thinking", False)
    return kwargs


def check_tool_choice(body: ChatPromptFields) -> None:
    choice = body.tool_choice
    names = [tool.function.name for tool in body.tools or []]
    if isinstance(choice, NamedToolChoice) and choice.function.name not in names:
        raise bad_request(
            f"tool_choice names the function {echo(choice.function.name)}, which is not in tools",
            "tool_choice",
        )
    if choice == "required" and not names:
        raise bad_request('tool_choice "required" needs tools', "tool_choice")


def tool_grammar(body: ChatPromptFields) -> GrammarSpec | None:
    """The grammar the engine enforces when a tool call is required."""
    choice = body.tool_choice
    if isinstance(choice, NamedToolChoice):
        mode = choice.function.name
    elif choice == "required":
        mode = "required"
    else:
        return None
    functions = [tool.function.model_dump(exclude_none=True) for tool in body.active_tools]
    source = {"tools": functions, "choice": mode, "parallel": body.parallel_tool_calls}
    return GrammarSpec("tool_calls", json.dumps(source))


def output_parsing(body: ChatPromptFields, prompt_text: str) -> OutputParsing:
    kwargs = body.chat_template_kwargs or {}
    if tool_grammar(body) is not None:
        kwargs = {"enable_thinking": False, **kwargs}
    return OutputParsing(
        tools=bool(body.active_tools),
        reasoning=kwargs.get("enable_thinking") is not False,
        starts_in_think=prompt_text.rstrip().endswith(THINK_START),
    )


def chat_prompt(
    tokenizer: Any,
    body: ChatPromptFields,
    add_generation_prompt: bool = True,
    continue_final_message: bool = False,
) -> ChatPrompt:
    """Render the prompt (template errors are 400s naming messages or chat_template_kwargs)."""
    check_tool_choice(body)
    messages = template_messages(body)
    kwargs = template_kwargs(body, tokenizer.apply_chat_template)

    def render(extra: dict[str, Any]) -> str:
        return str(
            tokenizer.apply_chat_template(
                messages,
                add_generation_prompt=add_generation_prompt,
                continue_final_message=continue_final_message,
                tokenize=False,
                **extra,
            )
        )

    try:
        text = render(kwargs)
    except Exception as exc:  # a template may reject a conversation (jinja raise)
        param = "messages"
        if body.chat_template_kwargs:
            try:
                render({k: v for k, v in kwargs.items() if k == "tools"})
                param = "chat_template_kwargs"
            except Exception:  # the messages fail on their own
                pass
        raise bad_request(f"chat template failed: {exc}", param) from exc
    return ChatPrompt(text, tool_grammar(body), output_parsing(body, text))
