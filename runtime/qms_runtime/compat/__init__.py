"""Every private piece of transformers the runtime relies on, in one place.

Written for transformers 5.24 (pyproject pins >=5.24,<5.25). It sits in the bottom
layer (the engine and the model loader both use it) and imports nothing of the runtime.
`check_transformers()` runs at start-up, before the model loads, and `check_manager()`
right after the continuous-batching manager is made: each names what is missing and
the version this module was written for, instead of an AttributeError deep in a
request. An import-linter contract forbids `transformers.generation.continuous_batching` anywhere
else in the runtime.

Modules: `checks` (the start-up checks), `manager_state` (reading the manager's state
and hooking its step: changes nothing it computes), `sampling_patches` and
`omni_patches` (behaviour changes, each function named by what it changes), `memory`
(the continuous-batching sizing the fit check uses before loading), `errors`. This
package re-exports them all: callers write `compat.<name>`.

What is used, and why:
- the sdpa integration's `TRANSFORMERS_SDPA_FORCE_GQA` switch (on CPU: use_gqa_sdpa_on_cpu);
- the manager's `_generation_step` (wrapped: batch size and step count per step), and
  `ModelRunner._sample` (argmax when every row is one-hot: use_argmax_when_one_hot),
  `batch_processor.inputs_and_outputs.num_request_in_batch`, `.scheduler.active_requests`
  and `.cache.compute_free_capacity()` (the vllm: gauges);
- `output_router._lock` / `.result_handlers` (the manager removes the handler of a
  finished request only; a cancelled one is removed here);
- `RequestStatus.FAILED` of a result;
- the CB top-k / top-p warpers' classes (swapped for cheaper subclasses in place) and the
  logits-processor list's `logits_processor`, `tensors_required`, `supported_keys` and
  `do_processing` (QMS's per-sequence controls: a processor first, one last), and its
  class (swapped for a subclass that skips the processors when every row is greedy);
- on Qwen3-Omni: `thinker.model.rope_deltas` (made thread-local by a class swap), the
  thinker's `forward` (wrapped: media threads pause the batch), and the talker config's
  `audio_config` (5.24's talker rope index reads it);
- before loading, the continuous-batching memory sizing (`compat/memory.py`: the fit
  check counts what transformers will allocate).
"""

from __future__ import annotations

from qms_runtime.compat.checks import check_manager, check_transformers
from qms_runtime.compat.errors import WRITTEN_FOR, TransformersIncompatible
from qms_runtime.compat.manager_state import (
    active_requests,
    drop_result_handler,
    is_alive,
    is_failed,
    kv_cache_usage,
    on_each_step,
)
from qms_runtime.compat.memory import continuous_batching_footprint
from qms_runtime.compat.omni_patches import (
    fix_talker_config,
    isolate_rope_state,
    pause_batch_on_media_threads,
)
from qms_runtime.compat.sampling_patches import (
    use_argmax_when_one_hot,
    use_fast_warpers,
    use_gqa_sdpa_on_cpu,
    use_sequence_controls,
)

__all__ = [
    "WRITTEN_FOR",
    "TransformersIncompatible",
    "active_requests",
    "check_manager",
    "check_transformers",
    "continuous_batching_footprint",
    "drop_result_handler",
    "fix_talker_config",
    "is_alive",
    "is_failed",
    "isolate_rope_state",
    "kv_cache_usage",
    "on_each_step",
    "pause_batch_on_media_threads",
    "use_argmax_when_one_hot",
    "use_fast_warpers",
    "use_gqa_sdpa_on_cpu",
    "use_sequence_controls",
]
