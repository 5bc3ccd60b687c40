"""Behaviour patches of Qwen3-Omni in transformers 5.24: thread-local rope state, media
threads pausing the batch, and the talker config's missing audio_config."""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any


def isolate_rope_state(thinker: Any) -> None:
    """Give each thread its own `thinker.model.rope_deltas`.

    generate() stores the m-RoPE offsets of its media prompt on the module and reads them
    at every decoding step; the batching thread's text forwards overwrite them. With a
    per-thread value, media requests and the batch share the weights but not that state.
    """
    inner = thinker.model
    if getattr(type(inner), "_qms_thread_local_rope", False):
        return
    local = threading.local()

    class ThreadLocalRope(type(inner)):  # type: ignore[misc]
        _qms_thread_local_rope = True

        @property
        def rope_deltas(self) -> Any:
            return getattr(local, "rope_deltas", None)

        @rope_deltas.setter
        def rope_deltas(self, value: Any) -> None:
            local.rope_deltas = value

    inner.__class__ = ThreadLocalRope


def pause_batch_on_media_threads(
    thinker: Any, pause: Callable[[], AbstractContextManager[None]]
) -> Any:
    """Make the thinker's forward pause the batching loop when called from a media thread.

    Returns the marker to set (`marker.media = True`) on threads that run media requests;
    the batching thread's own forward calls pass straight through.
    """
    marker = threading.local()
    forward = thinker.forward

    @functools.wraps(forward)  # generate() checks its kwargs against forward's signature
    def paused_forward(*args: Any, **kwargs: Any) -> Any:
        if not getattr(marker, "media", False):
            return forward(*args, **kwargs)
        with pause():
            return forward(*args, **kwargs)

    thinker.forward = paused_forward
    return marker


def fix_talker_config(owner: Any) -> None:
    """5.24: the talker's rope index reads `audio_config`, which its config lacks."""
    thinker_config: Any = owner.config.thinker_config
    talker_config: Any = owner.talker.config
    if not hasattr(talker_config, "audio_config"):
        talker_config.audio_config = thinker_config.audio_config
