"""The QwenModelServer spec: typed, frozen, the single source of the CRD schema."""

from .server import (
    API_VERSION,
    GROUP,
    KIND,
    MAX_NAME_LENGTH,
    PLURAL,
    SHORT_NAME,
    SINGULAR,
    VERSION,
    ChildStatus,
    Condition,
    EffectiveSpec,
    Phase,
    QwenModelServerSpec,
    QwenModelServerStatus,
    parse_spec,
)

__all__ = [
    "API_VERSION",
    "GROUP",
    "KIND",
    "MAX_NAME_LENGTH",
    "PLURAL",
    "SHORT_NAME",
    "SINGULAR",
    "VERSION",
    "ChildStatus",
    "Condition",
    "EffectiveSpec",
    "Phase",
    "QwenModelServerSpec",
    "QwenModelServerStatus",
    "parse_spec",
]
