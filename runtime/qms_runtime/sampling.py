"""Sampling pieces: cheaper per-request top-k / top-p for transformers' continuous
batching, and seeded (reproducible) sampling for the batch and for plain `generate`.

The manager's sampling mode is global, so QMS always samples and runs greedy requests
as top-k 1. transformers' CB warpers sort the whole vocabulary twice per step even
when no row needs it; these drop-in replacements keep the same masks but take
`torch.topk` of only the largest k asked for, and skip top-p when every row has p = 1.
"""

from __future__ import annotations

import hashlib
import math
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from transformers import LogitsProcessorList


def use_fast_warpers(manager: Any) -> None:
    """Swap the manager's CB top-k/top-p warpers for the cheaper ones (before start())."""
    from transformers.generation.continuous_batching.cb_logits_processors import (
        ContinuousBatchingTopKLogitsWarper,
        ContinuousBatchingTopPLogitsWarper,
    )

    class FastTopK(ContinuousBatchingTopKLogitsWarper):
        def __call__(self, scores: torch.Tensor, tensor_arg: torch.Tensor) -> torch.Tensor:
            vocab = scores.size(-1)
            top_k = tensor_arg[: scores.size(0)].clamp(min=1, max=vocab)
            k_max = int(top_k.max())
            if k_max >= vocab and int(top_k.min()) >= vocab:
                return scores
            values = torch.topk(scores, k_max, dim=-1).values  # sorted, largest first
            thresholds = values.gather(-1, (top_k - 1).unsqueeze(-1).to(torch.int64))
            return scores.masked_fill(scores < thresholds, self.filter_value)

    class FastTopP(ContinuousBatchingTopPLogitsWarper):
        def __call__(self, scores: torch.Tensor, tensor_arg: torch.Tensor) -> torch.Tensor:
            top_p = tensor_arg[: scores.size(0)].view(dtype=torch.float32)
            if bool((top_p >= 1.0).all()):
                return scores
            result: torch.Tensor = super().__call__(scores, tensor_arg)
            return result

    processors = manager.logit_processor.logits_processor
    for processor in processors:  # same state, faster __call__: swap the class in place
        if type(processor) is ContinuousBatchingTopKLogitsWarper:
            processor.__class__ = FastTopK
        elif type(processor) is ContinuousBatchingTopPLogitsWarper:
            processor.__class__ = FastTopP


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


def use_seeded_sampling(manager: Any) -> None:
    """Give the manager a last logits processor that takes a per-request `seed=` (an int,
    see `choice_seed`) and makes that request's rows sample by Gumbel-max (before start()).

    Rows of unseeded requests are left alone and cost nothing. transformers calls
    `prepare_tensor_args` with the requests that sample in the next forward, in row order
    (input_outputs.py `prepare_batch_tensors`, right after it advanced `position_offset`
    past the tokens of this forward), then, on the same thread, the processors on those
    rows' logits; the row -> (seed, position) list is handed over between the two calls.
    """
    from transformers.generation.continuous_batching.cb_logits_processors import (
        ContinuousBatchingLogitsProcessor,
    )

    class SeededSampling(ContinuousBatchingLogitsProcessor):
        supported_kwargs: dict[str, type] = {"seed": int}
        ignored_kwargs: tuple[str, ...] = ()

        def __init__(self) -> None:
            self.rows: list[tuple[int, int, int]] = []  # (row, seed, position) of the next forward

        def fill_defaults(self, int32_tensor: torch.Tensor) -> None:
            int32_tensor.fill_(0)  # its row of the IO's argument tensor stays unused

        def prepare_tensor_args(self, requests_with_new_token: list[Any]) -> torch.Tensor:
            rows = []
            for row, request in enumerate(requests_with_new_token):
                seed = request.state.logit_processor_kwargs.get("seed")
                if seed is not None:
                    # The token sampled now goes at this position (prompt + tokens before it).
                    rows.append((row, int(seed), int(request.state.position_offset)))
            self.rows = rows
            return torch.empty(0, dtype=torch.int32)  # nothing to send to the device

        def __call__(self, scores: torch.Tensor, tensor_arg: torch.Tensor) -> torch.Tensor:
            if not self.rows:
                return scores
            vocab, device = scores.size(-1), scores.device
            index = torch.tensor([row for row, _, _ in self.rows], device=device)
            noise = torch.stack([gumbel_noise(s, p, vocab, device) for _, s, p in self.rows])
            return scores.index_copy(0, index, seeded_pick(scores.index_select(0, index), noise))

    processors = manager.logit_processor  # a ContinuousBatchingLogitsProcessorList
    processors.logits_processor.append(SeededSampling())
    processors.tensors_required += 1  # one int32 row per CB processor in the IO's bulk tensor
    processors.supported_keys.update(SeededSampling.supported_kwargs)  # check_kwargs accepts seed
    processors.do_processing = True


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
