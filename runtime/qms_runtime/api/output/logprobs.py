"""Log-probabilities in the two OpenAI response shapes, from `TokenLogprob`s (pure).

- completions (legacy): `{"tokens", "token_logprobs", "top_logprobs", "text_offset"}`,
  `top_logprobs` one `{token text: logprob}` per position; with `echo` the prompt's
  entries come first, its first token with `null` (nothing predicts it);
- chat: `{"content": [{"token", "logprob", "bytes", "top_logprobs": [{"token",
  "logprob", "bytes"}]}]}`.

Token texts are each token decoded alone (as vLLM reports them); a token that is not
whole UTF-8 on its own decodes with U+FFFD, its `bytes` are those of that text.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from qms_runtime.types import TokenLogprob

Decode = Callable[[int], str]


def token_decoder(tokenizer: Any) -> Decode:
    """One token id -> its text (special tokens kept: they are tokens of the answer)."""
    cache: dict[int, str] = {}

    def decode(token_id: int) -> str:
        text = cache.get(token_id)
        if text is None:
            text = str(tokenizer.decode([token_id], skip_special_tokens=False))
            cache[token_id] = text
        return text

    return decode


def completion_logprobs(
    token_ids: Sequence[int],
    logprobs: Sequence[TokenLogprob | None],
    decode: Decode,
    text_offset: int = 0,
) -> dict[str, Any]:
    """The legacy object for `token_ids` (prompt then generated with echo), one entry of
    `logprobs` per token (None: no log-probability, as for the first prompt token);
    offsets count from `text_offset` (the start of the choice's text)."""
    tokens: list[str] = []
    token_logprobs: list[float | None] = []
    top_logprobs: list[dict[str, float] | None] = []
    offsets: list[int] = []
    offset = text_offset
    for token_id, entry in zip(token_ids, logprobs, strict=True):
        text = decode(token_id)
        tokens.append(text)
        offsets.append(offset)
        offset += len(text)
        if entry is None:
            token_logprobs.append(None)
            top_logprobs.append(None)
            continue
        token_logprobs.append(entry.logprob)
        top: dict[str, float] = {}
        for alternative, logprob in entry.top:
            top.setdefault(decode(alternative), logprob)  # two ids, one text: the likelier
        top.setdefault(text, entry.logprob)  # as vLLM: the chosen token is always there
        top_logprobs.append(top)
    return {
        "tokens": tokens,
        "token_logprobs": token_logprobs,
        "top_logprobs": top_logprobs,
        "text_offset": offsets,
    }


def merge_completion(parts: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Legacy objects of consecutive pieces of one choice, as one."""
    keys = ("tokens", "token_logprobs", "top_logprobs", "text_offset")
    return {key: [value for part in parts for value in part[key]] for key in keys}


def _entry(text: str, logprob: float) -> dict[str, Any]:
    return {"token": text, "logprob": logprob, "bytes": list(text.encode("utf-8"))}


def chat_logprobs(logprobs: Sequence[TokenLogprob], decode: Decode, top: int) -> dict[str, Any]:
    """The chat object for generated tokens, with the `top` alternatives of each."""
    content = []
    for entry in logprobs:
        item = _entry(decode(entry.token_id), entry.logprob)
        item["top_logprobs"] = [_entry(decode(tid), lp) for tid, lp in entry.top[:top]]
        content.append(item)
    return {"content": content}
