"""Behaviour patches of transformers' continuous-batching sampling: cheaper top-k/top-p
warpers, QMS's per-sequence controls in the logits-processor list, argmax when every row
is one-hot, and GQA through sdpa on CPU."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch


def use_fast_warpers(manager: Any) -> None:
    """Swap the manager's CB top-k/top-p warpers for cheaper ones (before start()).

    transformers' CB warpers sort the whole vocabulary twice per step even when no row
    needs it; these keep the same masks but take `torch.topk` of only the largest k
    asked for, and skip top-p when every row has p = 1.
    """
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

    for processor in manager.logit_processor.logits_processor:
        if type(processor) is ContinuousBatchingTopKLogitsWarper:  # same state, faster call
            processor.__class__ = FastTopK
        elif type(processor) is ContinuousBatchingTopPLogitsWarper:
            processor.__class__ = FastTopP


RowHook = Callable[[list[tuple[Any, int]], torch.Tensor], torch.Tensor]


def use_sequence_controls(
    manager: Any, lookup: Callable[[int], Any], adjust: RowHook, pick: RowHook
) -> None:
    """Give the manager two processors for QMS's per-sequence controls (before start()).

    A request added with `qms_sequence=<key>` has its rows handed, as (controls,
    position) with `lookup(key)` as controls, to `adjust` (first processor: the raw
    logits) and to `pick` (last processor: after temperature, top-k and top-p); each
    returns those rows' new scores (engine/controls.py). Rows of other requests are left
    alone and cost nothing. transformers calls `prepare_tensor_args` with the requests
    that sample in the next forward, in row order (input_outputs.py
    `prepare_batch_tensors`, right after it advanced `position_offset` past the tokens
    of this forward, so it is the position of the token chosen now), then, on the same
    thread, the processors on those rows' logits; the row list is handed over between
    the two calls.
    """
    from transformers.generation.continuous_batching.cb_logits_processors import (
        ContinuousBatchingLogitsProcessor,
    )

    shared: dict[str, Any] = {"rows": [], "index": None}

    def apply(hook: RowHook, scores: torch.Tensor) -> torch.Tensor:
        rows = shared["rows"]
        if not rows:
            return scores
        index = shared["index"]
        if index is None or index.device != scores.device:
            index = shared["index"] = torch.tensor([r for r, _, _ in rows], device=scores.device)
        picked = hook([(c, pos) for _, c, pos in rows], scores.index_select(0, index))
        return scores.index_copy(0, index, picked)

    class Adjust(ContinuousBatchingLogitsProcessor):
        supported_kwargs: dict[str, type] = {"qms_sequence": int}
        ignored_kwargs: tuple[str, ...] = ()

        def fill_defaults(self, int32_tensor: torch.Tensor) -> None:
            int32_tensor.fill_(0)  # its row of the IO's argument tensor stays unused

        def prepare_tensor_args(self, requests_with_new_token: list[Any]) -> torch.Tensor:
            rows = []
            one_hot = True  # every row greedy (top-k 1) or picked by `pick`
            for row, request in enumerate(requests_with_new_token):
                kwargs = request.state.logit_processor_kwargs
                key = kwargs.get("qms_sequence")
                controls = lookup(key) if key is not None else None
                if controls is not None:
                    rows.append((row, controls, int(request.state.position_offset)))
                elif kwargs.get("top_k") != 1:
                    one_hot = False
            shared["rows"], shared["index"] = rows, None
            processors.qms_one_hot = one_hot  # read by the sampler (use_argmax_when_one_hot)
            # Every row greedy and none controlled: argmax of the raw logits is the token
            # (temperature 1, top-k 1 and top-p 1 keep the maximum), so skip the processors.
            processors.qms_skip = one_hot and not rows
            return torch.empty(0, dtype=torch.int32)  # nothing to send to the device

        def __call__(self, scores: torch.Tensor, tensor_arg: torch.Tensor) -> torch.Tensor:
            return apply(adjust, scores)

    class Pick(Adjust):
        supported_kwargs: dict[str, type] = {}

        def prepare_tensor_args(self, requests_with_new_token: list[Any]) -> torch.Tensor:
            return torch.empty(0, dtype=torch.int32)  # Adjust found the rows

        def __call__(self, scores: torch.Tensor, tensor_arg: torch.Tensor) -> torch.Tensor:
            return apply(pick, scores)

    processors = manager.logit_processor  # a ContinuousBatchingLogitsProcessorList

    class SkippableList(type(processors)):  # type: ignore[misc]
        def __call__(self, input_ids: Any, scores: torch.Tensor, args: torch.Tensor) -> Any:
            if self.qms_skip:
                return scores
            return super().__call__(input_ids, scores, args)

    processors.__class__ = SkippableList  # this instance only; same state
    processors.qms_one_hot = False
    processors.qms_skip = False
    processors.logits_processor.insert(0, Adjust())
    processors.logits_processor.append(Pick())
    processors.tensors_required += 2  # one int32 row per CB processor in the IO's bulk tensor
    processors.supported_keys.update(Adjust.supported_kwargs)  # check_kwargs accepts the key
    processors.do_processing = True


def use_gqa_sdpa_on_cpu() -> None:
    """Grouped-query attention without `repeat_kv` on CPU.

    transformers' sdpa path copies each key/value head `num_key_value_groups` times
    unless no attention mask is given (what CUDA's fused kernels need); the packed batch
    of continuous batching always has a mask. torch's CPU kernels take a mask with
    `enable_gqa` and give the same values, at about half the attention time of a decode
    step (bench/profile_decode.py; at 16 rows x 1,600 cached tokens: 2.1 ms instead of
    4.5). transformers' own switch, `TRANSFORMERS_SDPA_FORCE_GQA`, is read at each
    call; set only when the process runs its model on the CPU and nobody set it.
    """
    import os

    os.environ.setdefault("TRANSFORMERS_SDPA_FORCE_GQA", "1")


def use_argmax_when_one_hot() -> None:
    """Sample by argmax when every row of the batch is one-hot after the processors.

    The manager samples with `multinomial` over the whole vocabulary because its sampling
    mode is global; greedy rows (top-k 1) and rows QMS picked are one-hot by then, where
    argmax returns the same token for a fraction of the cost (at a 151,936-token
    vocabulary and 16 rows on CPU: ~16 ms instead of ~320 ms a step). Patches the
    ModelRunner class once; each runner reads the flag its own processor list carries
    (`qms_one_hot`, set by use_sequence_controls for the rows of the next forward).
    """
    from transformers.generation.continuous_batching import model_runner

    runner: Any = model_runner.ModelRunner
    if getattr(runner, "_qms_argmax", False):
        return
    original = runner._sample

    def _sample(self: Any, scores: torch.Tensor, output_ids: torch.Tensor) -> None:
        one_hot = getattr(self.logit_processor, "qms_one_hot", False)
        if not one_hot or self.return_logprobs:
            original(self, scores, output_ids)
            return
        next_tokens = scores[0].argmax(dim=-1)  # [num_logits]
        output_ids[0, : next_tokens.size(0)].copy_(next_tokens)

    runner._sample = _sample
    runner._qms_argmax = True
