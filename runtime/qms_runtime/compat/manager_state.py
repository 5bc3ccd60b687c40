"""Reading the continuous-batching manager's state (liveness, running requests, KV
cache use, failed results) and hooking its step; nothing here changes what it computes."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def on_each_step(manager: Any, callback: Callable[[int], None]) -> None:
    """Call `callback(sequences in the batch)` after every batch step (the manager has no
    per-step hook: its private step is wrapped, on this instance only)."""
    step = manager._generation_step

    def observed_step() -> None:
        step()
        io = getattr(manager.batch_processor, "inputs_and_outputs", None)
        callback(int(getattr(io, "num_request_in_batch", 0) or 0))

    manager._generation_step = observed_step


def is_alive(manager: Any) -> bool:
    return manager.background_thread_status.fatal_error is None and bool(manager.is_running())


def active_requests(manager: Any) -> int:
    processor = getattr(manager, "batch_processor", None)
    scheduler = getattr(processor, "scheduler", None)
    return len(scheduler.active_requests) if scheduler is not None else 0


def kv_cache_usage(manager: Any) -> float:
    processor = getattr(manager, "batch_processor", None)
    cache = getattr(processor, "cache", None)
    if cache is None:
        return 0.0
    return float(max(0.0, min(1.0, 1.0 - cache.compute_free_capacity())))


def drop_result_handler(manager: Any, request_id: str) -> None:
    """The manager only auto-removes handlers of finished requests."""
    router = manager.output_router
    with router._lock:
        router.result_handlers.pop(request_id, None)


def is_failed(output: Any) -> bool:
    from transformers.generation.continuous_batching.requests import RequestStatus

    return bool(output.status == RequestStatus.FAILED)
