"""Is a live object already as desired? A pure, semantic subset comparison.

The operator applies a child only when some field it sets differs from the live
object, so a reconcile with nothing changed sends no write. Fields the API server
or other managers add (defaults, status, HPA-owned replicas) are not compared:
only what the desired object says.
"""

from __future__ import annotations

from typing import Any

from .spec.quantity import parse_quantity


def _same_scalar(desired: Any, live: Any) -> bool:
    if desired == live and type(desired) is type(live):
        return True
    if isinstance(desired, str) and isinstance(live, str):
        a, b = parse_quantity(desired), parse_quantity(live)
        return a is not None and a == b
    return False


def _empty(value: Any) -> bool:
    return value in ({}, [], "", None)


def differences(desired: Any, live: Any, path: str = "") -> list[str]:
    """Paths where ``live`` does not hold what ``desired`` says (empty list: in sync).

    An empty desired map or list matches an absent live one, as the API server omits them.
    """
    if isinstance(desired, dict):
        if not isinstance(live, dict):
            return [] if not desired and _empty(live) else [path or "."]
        found: list[str] = []
        for key, value in desired.items():
            found += differences(value, live.get(key), f"{path}.{key}")
        return found
    if isinstance(desired, list):
        if not isinstance(live, list):
            return [] if not desired and _empty(live) else [path]
        if len(desired) != len(live):
            return [path]
        found = []
        for index, (want, have) in enumerate(zip(desired, live, strict=True)):
            found += differences(want, have, f"{path}[{index}]")
        return found
    return [] if _same_scalar(desired, live) else [path]
