"""SamplingParams for the two ways the runtime generates, and seeded sampling.

`cb_request_kwargs` translates SamplingParams for a continuous-batching request and
`generate_kwargs` for a plain `generate` (the media runner): the only two places that
know how a sampling parameter reaches transformers. The manager's sampling mode is
global, so QMS always samples and runs greedy requests as top-k 1: after the top-1 mask
the distribution is one-hot and `multinomial` returns exactly the argmax.
"""

from __future__ import annotations

import hashlib
import math
from typing import TYPE_CHECKING, Any

import torch

from qms_runtime.types import SamplingParams

if TYPE_CHECKING:
    from transformers import LogitsProcessorList


def cb_request_kwargs(params: SamplingParams, vocab_size: int) -> dict[str, Any]:
    """Per-request logits-processor arguments of a continuous-batching request (the
    rest of its sampling is in its per-sequence controls: engine/controls.py)."""
    if params.greedy:
        return {"temperature": 1.0, "top_k": 1, "top_p": 1.0}
    top_k = params.top_k if 0 < params.top_k < vocab_size else vocab_size
    return {
        "temperature": float(params.temperature),
        "top_k": int(top_k),
        "top_p": float(params.top_p),
    }


def generate_kwargs(
    params: SamplingParams, eos_token_ids: tuple[int, ...], choice: int = 0, prefix: str = ""
) -> dict[str, Any]:
    """`generate()` arguments with the same sampling as the batch (seeded requests get
    the same Gumbel-max noise); `prefix` "thinker_" for the Omni model's speech path."""
    eos = [] if params.ignore_eos else list(eos_token_ids)
    eos += [t for t in params.stop_token_ids if t not in eos]
    kwargs: dict[str, Any] = {
        "max_new_tokens": params.max_new_tokens,
        "eos_token_id": eos or list(eos_token_ids),
        "do_sample": not params.greedy,
    }
    if not params.greedy and params.seed is not None:
        kwargs.update(
            do_sample=False,
            logits_processor=seeded_logits_processors(
                params.seed, params.temperature, params.top_p, choice
            ),
        )
    elif not params.greedy:
        kwargs.update(temperature=params.temperature, top_p=params.top_p, top_k=params.top_k)
    if params.ignore_eos and not params.stop_token_ids:  # then no id may end it
        kwargs["min_new_tokens"] = params.max_new_tokens
    return {prefix + key: value for key, value in kwargs.items()}


# ------------------------------------------------------------------ seeded sampling
# OpenAI `seed`: a seeded request samples by the Gumbel-max trick. Sampling from
# softmax(z) is argmax(z + G) with G i.i.d. Gumbel(0, 1); G for the token at position p
# (prompt plus tokens before it) of a sequence comes from a torch.Generator seeded with
# (the sequence's seed, p) only. So the tokens depend on the seed, the prompt and the
# logits, never on the other rows of the batch, the global RNG, how the prompt was
# chunked, or a sample the batch loop threw away and redid (async offloading).


def _hash64(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little")


def choice_seed(seed: int, choice: int) -> int:
    """The 64-bit seed of choice `choice` (0 .. n-1) of a request with OpenAI `seed`."""
    return _hash64(f"qms-choice:{seed}:{choice}")


def gumbel_noise(stream: int, position: int, vocab: int, device: torch.device) -> torch.Tensor:
    """Gumbel(0, 1) noise, shape [vocab], for the token at `position` of sequence `stream`."""
    generator = torch.Generator(device=device)
    generator.manual_seed(_hash64(f"qms-token:{stream}:{position}"))
    uniform = torch.rand(vocab, generator=generator, device=device)  # [0, 1): 0 gives -inf
    return -torch.log(-torch.log(uniform))


def seeded_pick(scores: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """Per row, -inf everywhere but at argmax(scores + noise): softmax is one-hot there, so
    `multinomial` and `argmax` both return that token."""
    picked = (scores + noise).argmax(dim=-1, keepdim=True)
    kept = scores.gather(-1, picked)
    return torch.full_like(scores, -math.inf).scatter_(-1, picked, kept)


def seeded_logits_processors(
    seed: int, temperature: float, top_p: float = 1.0, choice: int = 0
) -> LogitsProcessorList:
    """Seeded sampling for a plain `generate(..., do_sample=False, logits_processor=...)`:
    temperature, top-p, then the same Gumbel-max as the batch, so a text prompt gets the
    same tokens as through the engine. Row r of a batch is choice `choice + r` (its
    position counts left padding). Greedy (temperature 0): an empty list."""
    from transformers import (
        LogitsProcessor,
        LogitsProcessorList,
        TemperatureLogitsWarper,
        TopPLogitsWarper,
    )

    class SeededGumbel(LogitsProcessor):
        def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
            position, vocab, device = input_ids.size(-1), scores.size(-1), scores.device
            noise = torch.stack(
                [
                    gumbel_noise(choice_seed(seed, choice + row), position, vocab, device)
                    for row in range(scores.size(0))
                ]
            )
            return seeded_pick(scores, noise)

    processors: list[LogitsProcessor] = []
    if temperature == 0.0:
        return LogitsProcessorList(processors)
    if temperature != 1.0:
        processors.append(TemperatureLogitsWarper(temperature))
    if top_p < 1.0:
        processors.append(TopPLogitsWarper(top_p))
    processors.append(SeededGumbel())
    return LogitsProcessorList(processors)
