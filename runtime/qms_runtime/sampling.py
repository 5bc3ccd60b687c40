"""Cheaper per-request top-k / top-p for transformers' continuous batching.

The manager's sampling mode is global, so QMS always samples and runs greedy requests
as top-k 1. transformers' CB warpers sort the whole vocabulary twice per step even
when no row needs it; these drop-in replacements keep the same masks but take
`torch.topk` of only the largest k asked for, and skip top-p when every row has p = 1.
"""

from __future__ import annotations

from typing import Any

import torch


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
