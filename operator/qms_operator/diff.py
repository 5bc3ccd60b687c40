"""Is a live object already as desired? A pure, semantic subset comparison.

The operator applies a child only when some field it sets differs from the live
object, so a reconcile with nothing changed sends no write. Fields the API server
or other managers add (defaults, status, HPA-owned replicas) are not compared:
only what the desired object says.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from typing import Any

_QUANTITY = re.compile(r"^([+-]?[0-9.]+)([eE][+-]?[0-9]+|[KMGTPE]i|[numkMGTPE])?$")
_SUFFIX = {
    "": Decimal(1),
    "n": Decimal("1e-9"),
    "u": Decimal("1e-6"),
    "m": Decimal("1e-3"),
    "k": Decimal(10) ** 3,
    "M": Decimal(10) ** 6,
    "G": Decimal(10) ** 9,
    "T": Decimal(10) ** 12,
    "P": Decimal(10) ** 15,
    "E": Decimal(10) ** 18,
    "Ki": Decimal(2) ** 10,
    "Mi": Decimal(2) ** 20,
    "Gi": Decimal(2) ** 30,
    "Ti": Decimal(2) ** 40,
    "Pi": Decimal(2) ** 50,
    "Ei": Decimal(2) ** 60,
}


def parse_quantity(value: str) -> Decimal | None:
    """A Kubernetes quantity as a number ("500m" -> 0.5, "32Gi" -> 34359738368)."""
    match = _QUANTITY.match(value)
    if not match:
        return None
    number, suffix = match.groups()
    try:
        if suffix and suffix[0] in "eE":
            return Decimal(number + suffix)
        return Decimal(number) * _SUFFIX[suffix or ""]
    except InvalidOperation:
        return None


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
