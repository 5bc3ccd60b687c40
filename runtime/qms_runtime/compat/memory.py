"""transformers' continuous-batching memory sizing, mirrored before the model loads (the
fit check, models/fit.py). Part of `qms_runtime.compat`: the private pieces used are
`PagedAttentionCache.__init__`'s allocators and sector geometry,
`PagedAttentionMemoryHandler`, `resolve_continuous_batching_config` and the
flash-attention availability checks."""

from __future__ import annotations

from typing import Any

import torch

from qms_runtime.compat.errors import missing as _missing


def continuous_batching_footprint(
    text_config: Any,
    cb_config: Any,
    dtype: torch.dtype,
    max_context: int,
    model_class: type,
    device: torch.device,
) -> tuple[int, int, int, float]:
    """What transformers' continuous batching will allocate besides the weights, before
    the model loads: (footprint, of which the KV cache, tokens the cache holds,
    max_memory_percent). Nothing is allocated.

    `text_config` is the batched model's text config (`get_text_config()`), `cb_config`
    the `transformers.ContinuousBatchingConfig` the engine passes, `model_class` the class
    that runs the batch (the thinker for Qwen3-Omni) and `device` where it will run.
    What the manager does is mirrored: its attention switch (the model loads with sdpa;
    `switch_to_cb_friendly_attn` moves to flash attention when allowed and installed), its
    config resolution (`resolve_continuous_batching_config`; the engine's generation config
    always has logits processors), and `PagedAttentionCache.__init__`'s allocators and
    sector geometry; then `PagedAttentionMemoryHandler.compute_memory_footprint`, the
    figure its `_check_footprint` compares with `max_memory_percent` of the memory left
    after loading: the cache with its two trash sectors, the attention masks [M, N + M],
    the per-cache-token read buffers, the IO tensors and the activation peak.

    The number of sectors is the manager's own where `num_blocks` fixes it (CPU); where
    transformers fills free memory (GPU, no `num_blocks`) it is what one sequence of
    `max_context` tokens needs, the least the server can run with. M is
    `max_batch_tokens`, or transformers' default when None.
    """
    import copy
    import math

    from transformers.generation.continuous_batching.cache import (
        ATTN_TYPE_TO_ALLOCATOR,
        PagedAttentionMemoryHandler,
        group_layers_by_attn_type,
    )
    from transformers.generation.continuous_batching.cache_allocators import (
        FullAttentionCacheAllocator,
    )
    from transformers.generation.continuous_batching.initialization import (
        resolve_continuous_batching_config,
    )
    from transformers.generation.continuous_batching.utils import (
        find_head_dim,
        find_num_key_value_heads,
    )
    from transformers.utils.import_utils import (
        is_flash_attn_2_available,
        is_flash_attn_3_available,
    )

    config = copy.deepcopy(text_config)
    attn = "sdpa"  # what models/loading.py asks for
    if cb_config.auto_switch_to_flash and getattr(model_class, "_supports_flash_attn", False):
        if is_flash_attn_3_available(kernels_fallback_ok=True):
            attn = "flash_attention_3"
        elif is_flash_attn_2_available(kernels_fallback_ok=True):
            attn = "flash_attention_2"
    config._attn_implementation = attn
    resolved = resolve_continuous_batching_config(
        config=config,
        cb_config=cb_config,
        workload_hints=None,
        has_logit_processors=True,
        device=device,
    )

    # PagedAttentionCache.__init__, without TP (kv_tp_size 1) and without the cache tensor
    num_key_value_heads = find_num_key_value_heads(config)
    ca_kwargs = {
        "num_key_value_heads": num_key_value_heads,
        "config": config,
        "cache_dtype": dtype,
        "page_size": resolved.page_size,
        "allow_block_sharing": resolved.allow_block_sharing,
    }
    allocators = {
        attn_type: ATTN_TYPE_TO_ALLOCATOR[attn_type](
            index=index, layer_indices=layer_indices, **ca_kwargs
        )
        for index, (attn_type, layer_indices) in enumerate(
            group_layers_by_attn_type(config).items()
        )
    }
    bytes_per_sector = math.lcm(*(ca.bytes_per_block for ca in allocators.values()), 128)
    tokens_per_sector = max(
        (bytes_per_sector // ca.bytes_per_block) * ca.tokens_per_page for ca in allocators.values()
    )
    bytes_per_block = config.num_hidden_layers * FullAttentionCacheAllocator.get_bytes_per_page(
        num_key_value_heads, find_head_dim(config), dtype, resolved.page_size
    )

    class Sizing(PagedAttentionMemoryHandler):
        def get_available_memory(self) -> int:
            return 0  # the manager measures the device after loading; not needed here

    # ModelRunner / ContinuousBatchingManager: `model._supports_logits_to_keep()`, which
    # only inspects the signature of `forward`: asked of the class here.
    supports_logits_to_keep = getattr(model_class, "_supports_logits_to_keep", None)
    handler = Sizing(
        config=config,
        cb_config=resolved,
        dtype=dtype,
        bytes_per_sector=bytes_per_sector,
        tokens_per_sector=tokens_per_sector,
        bytes_per_block=bytes_per_block,
        attn_types=list(allocators),
        model_supports_logits_to_keep=callable(supports_logits_to_keep)
        and bool(supports_logits_to_keep(model_class)),
        kv_tp_size=1,
    )
    max_batch_tokens = resolved.max_batch_tokens
    if max_batch_tokens is None:
        max_batch_tokens = handler._default_max_batch_tokens
    num_sectors = handler.num_sectors_from_config()
    if num_sectors is None:  # one full-length sequence
        num_sectors = sum(
            math.ceil(
                ca._compute_blocks_needed(0, 0, max_context)
                / (bytes_per_sector // ca.bytes_per_block)
            )
            for ca in allocators.values()
        )
    footprint = int(handler.compute_memory_footprint(max_batch_tokens, num_sectors))
    cache_bytes = (num_sectors + 2) * bytes_per_sector  # with the two trash sectors
    cache_tokens = num_sectors * bytes_per_sector // bytes_per_block * resolved.page_size
    percent = resolved.max_memory_percent
    if percent is None:
        raise _missing("max_memory_percent in its resolved ContinuousBatchingConfig")
    return footprint, cache_bytes, cache_tokens, float(percent)
