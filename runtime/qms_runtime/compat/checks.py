"""Start-up checks that the installed transformers has every piece compat uses."""

from __future__ import annotations

from typing import Any

from qms_runtime.compat.errors import missing as _missing


def check_transformers() -> None:
    """Fail at start-up, naming the piece, when this transformers lacks what we use."""
    import transformers
    from transformers.generation.continuous_batching import cb_logits_processors, requests
    from transformers.generation.continuous_batching.continuous_api import (
        ContinuousBatchingManager,
    )

    for module, name in (
        (cb_logits_processors, "ContinuousBatchingTopKLogitsWarper"),
        (cb_logits_processors, "ContinuousBatchingTopPLogitsWarper"),
        (cb_logits_processors, "ContinuousBatchingLogitsProcessor"),
        (requests, "RequestStatus"),
        (transformers, "ContinuousBatchingConfig"),
    ):
        if not hasattr(module, name):
            raise _missing(f"{module.__name__}.{name}")
    for method in ("_generation_step", "pause", "register_result_handler", "cancel_request"):
        if not callable(getattr(ContinuousBatchingManager, method, None)):
            raise _missing(f"ContinuousBatchingManager.{method}")
    from transformers.generation.continuous_batching.model_runner import ModelRunner

    if not callable(getattr(ModelRunner, "_sample", None)):
        raise _missing("continuous_batching.model_runner.ModelRunner._sample")


def check_manager(manager: Any) -> None:
    """The manager's private state we touch exists (call before start())."""
    router = getattr(manager, "output_router", None)
    for owner, name, attr in (
        (manager, "manager", "background_thread_status"),
        (router, "output_router", "_lock"),
        (router, "output_router", "result_handlers"),
        (getattr(manager, "logit_processor", None), "logit_processor", "logits_processor"),
        (getattr(manager, "logit_processor", None), "logit_processor", "supported_keys"),
        (getattr(manager, "logit_processor", None), "logit_processor", "tensors_required"),
    ):
        if owner is None or not hasattr(owner, attr):
            raise _missing(f"{name}.{attr} on the continuous-batching manager")
