"""A chat choice's generated text as an OpenAI message: the thinking as
`reasoning_content` (api/output/reasoning.py), Hermes tool calls as `tool_calls` with
`finish_reason` "tool_calls" (api/output/tool_calls.py), `content` without them (null when
there are only tool calls). Full responses parse the whole text; streams pass each
text delta through the same two parsers, in that order."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from qms_runtime.api.output.reasoning import ReasoningStream, split_reasoning
from qms_runtime.api.output.responses import ResponseMeta, delta_chunk
from qms_runtime.api.output.tool_calls import ToolCallStream, parse_tool_calls
from qms_runtime.finish import FinishReason, after_parsing


@dataclass(frozen=True)
class OutputParsing:
    tools: bool = False  # tools were given and tool_choice is not "none"
    reasoning: bool = False  # thinking is on (not enable_thinking false)
    starts_in_think: bool = False  # the prompt ends inside a <think> block

    @property
    def active(self) -> bool:
        return self.tools or self.reasoning


NO_PARSING = OutputParsing()


@dataclass
class ParsedMessage:
    content: str | None
    reasoning_content: str | None = None
    tool_calls: list[dict[str, Any]] = field(default_factory=list)

    def fields(self) -> dict[str, Any]:
        """The message's fields besides the role."""
        body: dict[str, Any] = {"content": self.content}
        if self.reasoning_content is not None:
            body["reasoning_content"] = self.reasoning_content
        if self.tool_calls:
            body["tool_calls"] = self.tool_calls
        return body


def parse_message(text: str, parsing: OutputParsing) -> ParsedMessage:
    reasoning: str | None = None
    answer = text
    if parsing.reasoning:
        reasoning, answer = split_reasoning(text, parsing.starts_in_think)
    content: str | None = answer
    calls: list[dict[str, Any]] = []
    if parsing.tools:
        parsed = parse_tool_calls(answer)
        content = parsed.content
        calls = [call.message_entry() for call in parsed.calls]
    return ParsedMessage(content, reasoning, calls)


class ChatStream:
    """One streamed choice's parsers."""

    def __init__(self, parsing: OutputParsing) -> None:
        self._reasoning = ReasoningStream(parsing.starts_in_think) if parsing.reasoning else None
        self._tools = ToolCallStream() if parsing.tools else None

    def _deltas(self, text: str, final: bool) -> list[dict[str, Any]]:
        reasoning, content = "", text
        if self._reasoning is not None:
            out = self._reasoning.feed(text)
            reasoning, content = out.reasoning, out.content
            if final:
                end = self._reasoning.finish()
                reasoning, content = reasoning + end.reasoning, content + end.content
        calls: list[dict[str, Any]] = []
        if self._tools is not None:
            out_tools = self._tools.feed(content)
            content, calls = out_tools.content, out_tools.tool_calls
            if final:
                end_tools = self._tools.finish()
                content += end_tools.content
                calls += end_tools.tool_calls
        deltas: list[dict[str, Any]] = []
        if reasoning:
            deltas.append({"reasoning_content": reasoning})
        if content:
            deltas.append({"content": content})
        deltas += [{"tool_calls": [call]} for call in calls]
        return deltas

    @property
    def has_calls(self) -> bool:
        return self._tools is not None and bool(self._tools.calls)

    def chunks(
        self,
        meta: ResponseMeta,
        index: int,
        text: str,
        token_ids: list[int],
        reason: FinishReason | None,
        logprobs: dict[str, Any] | None = None,
    ) -> list[str]:
        """The SSE chunks of one text delta (token ids, log-probabilities and the finish
        reason on the last; log-probabilities go out even while the text is held back)."""
        deltas = self._deltas(text, reason is not None)
        reason = after_parsing(reason, self.has_calls)
        if not deltas and reason is None and not meta.return_token_ids and logprobs is None:
            return []
        deltas = deltas or [{}]
        chunks = []
        for i, fields in enumerate(deltas):
            last = i == len(deltas) - 1
            content = fields.pop("content", "")
            chunks.append(
                delta_chunk(
                    meta,
                    index,
                    content,
                    token_ids if last else [],
                    reason if last else None,
                    fields=fields,
                    logprobs=logprobs if last else None,
                )
            )
        return chunks
