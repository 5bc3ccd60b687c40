"""Prompt log-probabilities (`/v1/completions` with `echo` and `logprobs`): one forward
of the model over the token ids, on a worker thread, while the batching loop is held
between two of its steps (`Engine.pause`, as the media runner shares the model), so the
batch keeps its requests and cache and the two never run the model at once.

The log-probabilities are the raw model's (a log-softmax of the logits in float32,
before temperature and filters), as OpenAI and vLLM report them. Position 0 has none
(nothing predicts the first token).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager
from typing import Any

import torch

from qms_runtime.types import TokenLogprob

MAX_TOP = 20  # as OpenAI and vLLM: at most 20 alternatives per position


def logprobs_of(logits: torch.Tensor, token_ids: list[int], top: int) -> list[TokenLogprob | None]:
    """Per position of `token_ids`, the log-probability of its token given the tokens
    before it, and the `top` most likely tokens there; `logits` is [len, vocab]."""
    scores = torch.log_softmax(logits[:-1].float(), dim=-1)
    targets = torch.tensor(token_ids[1:], dtype=torch.long, device=scores.device)
    chosen = scores.gather(1, targets.unsqueeze(1)).squeeze(1).tolist()
    tops: list[list[tuple[int, float]]] = [[] for _ in chosen]
    if top > 0:
        values, indices = scores.topk(min(top, scores.shape[-1]), dim=-1)
        tops = [
            list(zip(map(int, ids), map(float, lps), strict=True))
            for ids, lps in zip(indices.tolist(), values.tolist(), strict=True)
        ]
    result: list[TokenLogprob | None] = [None]
    for token, logprob, alternatives in zip(token_ids[1:], chosen, tops, strict=True):
        result.append(TokenLogprob(int(token), float(logprob), tuple(alternatives)))
    return result


class PromptScorer:
    """Runs scoring forwards of `model` one at a time, each inside `pause()`."""

    def __init__(self, model: Any, pause: Callable[[], AbstractContextManager[None]]) -> None:
        self._model = model
        self._pause = pause
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="qms-score")

    def _forward(self, token_ids: list[int], top: int) -> list[TokenLogprob | None]:
        device = self._model.device
        ids = torch.tensor([token_ids], dtype=torch.long, device=device)
        with self._pause(), torch.inference_mode():
            logits = self._model(input_ids=ids, use_cache=False).logits[0]
            return logprobs_of(logits, token_ids, top)

    async def score(self, token_ids: list[int], top: int) -> list[TokenLogprob | None]:
        if not token_ids:
            return []
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            self._worker, self._forward, list(token_ids), min(max(top, 0), MAX_TOP)
        )

    def close(self) -> None:
        self._worker.shutdown(wait=False, cancel_futures=True)
