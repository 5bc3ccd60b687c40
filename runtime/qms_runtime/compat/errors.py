"""The error compat raises when the installed transformers lacks a piece it uses."""

from __future__ import annotations

WRITTEN_FOR = "5.24"


class TransformersIncompatible(RuntimeError):
    """The installed transformers lacks a piece this runtime uses."""


def missing(what: str) -> TransformersIncompatible:
    import transformers

    return TransformersIncompatible(
        f"transformers {transformers.__version__} has no {what}; qms_runtime.compat "
        f"was written for transformers {WRITTEN_FOR} (install transformers>={WRITTEN_FOR},<5.25)"
    )
