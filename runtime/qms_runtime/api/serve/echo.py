"""Log-probabilities and `echo` of a request's choices (between serving and the pure
shaping of api/output/logprobs.py).

Generated tokens' log-probabilities come from the generation events when the engine
produced them; when it did not (or with `echo`, whose prompt needs them too), one
scoring forward over prompt + generated tokens (`GenerationBackend.score`) gives them
all, raw, as the events would. `logprobs` is k (completions `logprobs`, chat
`top_logprobs`), None when not asked for.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from qms_runtime.api.output.logprobs import Decode, chat_logprobs, completion_logprobs
from qms_runtime.api.output.responses import ChoiceResult, Kind
from qms_runtime.types import GenerationBackend, TokenLogprob


@dataclass
class Collected:
    """The log-probabilities of one choice as its events bring them (None: one event
    came without)."""

    logprobs: list[TokenLogprob] | None = field(default_factory=list)

    def add(self, token_ids: Sequence[int], logprobs: Sequence[TokenLogprob] | None) -> None:
        if not token_ids or self.logprobs is None:
            return
        if logprobs is None or len(logprobs) != len(token_ids):
            self.logprobs = None
        else:
            self.logprobs.extend(logprobs)


@dataclass(frozen=True)
class EchoPlan:
    """What a request asked: `top` (k, or None), `echo_texts` (per prompt, or None)."""

    kind: Kind
    top: int | None
    echo_texts: list[str] | None
    n: int

    @property
    def active(self) -> bool:
        return self.top is not None or self.echo_texts is not None


async def finish_choices(
    plan: EchoPlan,
    backend: GenerationBackend,
    decode: Decode,
    prompts: list[list[int]],
    choices: list[ChoiceResult],
    collected: list[Collected],
) -> None:
    """Prepend the echoed prompt to each choice's text and set its `logprobs`."""
    for choice, got in zip(choices, collected, strict=True):
        prompt = prompts[choice.index // plan.n]
        echoed = plan.echo_texts[choice.index // plan.n] if plan.echo_texts is not None else None
        if echoed is not None:
            choice.text = echoed + choice.text
        if plan.top is None:
            continue
        generated = got.logprobs
        prompt_logprobs: list[TokenLogprob | None] = []
        if echoed is not None or (generated is None and choice.token_ids):
            scored = await backend.score(prompt + choice.token_ids, plan.top)
            prompt_logprobs = scored[: len(prompt)]
            if generated is None:
                generated = [entry for entry in scored[len(prompt) :] if entry is not None]
        generated = generated or []
        if plan.kind == "chat":
            choice.logprobs = chat_logprobs(generated, decode, plan.top)
            continue
        ids = (prompt if echoed is not None else []) + choice.token_ids
        entries: list[TokenLogprob | None] = [
            *(prompt_logprobs if echoed is not None else []),
            *generated,
        ]
        choice.logprobs = completion_logprobs(ids, entries, decode)


class StreamLogprobs:
    """The log-probabilities of a streamed request's chunks, choice by choice."""

    def __init__(
        self, plan: EchoPlan | None, backend: GenerationBackend, decode: Decode, prepared: Any
    ) -> None:
        self._plan = plan
        self._backend = backend
        self._decode = decode
        self._prompts: list[list[int]] = prepared.prompts
        self._offsets = [0] * prepared.sequences  # text sent so far per choice

    async def echo(self, index: int) -> tuple[str, dict[str, Any] | None]:
        """The first piece of a choice with `echo`: the prompt text and, if asked for,
        its log-probabilities."""
        plan = self._plan
        assert plan is not None and plan.echo_texts is not None
        text = plan.echo_texts[index // plan.n]
        self._offsets[index] = len(text)
        if plan.top is None:
            return text, None
        prompt = self._prompts[index // plan.n]
        scored = await self._backend.score(prompt, plan.top)
        return text, completion_logprobs(prompt, scored, self._decode)

    def delta(
        self, index: int, text: str, token_ids: list[int], logprobs: list[TokenLogprob] | None
    ) -> dict[str, Any] | None:
        """A delta's log-probabilities: those of its events (None when the engine
        produced none)."""
        plan, offset = self._plan, self._offsets[index]
        self._offsets[index] += len(text)
        if plan is None or plan.top is None or not token_ids or logprobs is None:
            return None
        if plan.kind == "chat":
            return chat_logprobs(logprobs, self._decode, plan.top)
        return completion_logprobs(token_ids, logprobs, self._decode, offset)


def prompt_texts(items: list[Any], prompts: list[list[int]], decode_ids: Any) -> list[str]:
    """What `echo` repeats of each prompt: its text as sent, or its ids decoded."""
    return [
        item if isinstance(item, str) else str(decode_ids(ids))
        for item, ids in zip(items, prompts, strict=True)
    ]
