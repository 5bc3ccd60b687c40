"""Kubernetes quantities as numbers (spec layer): what the diff compares and the builders add."""

from __future__ import annotations

from decimal import Decimal

import pytest

from qms_operator.spec.quantity import parse_quantity


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("4", Decimal(4)),
        ("500m", Decimal("0.5")),
        ("0.5", Decimal("0.5")),
        ("32Gi", Decimal(32 * 2**30)),
        ("1k", Decimal(1000)),
        ("1Ki", Decimal(1024)),
        ("100n", Decimal("1e-7")),
        ("1e3", Decimal(1000)),
        ("-2M", Decimal(-2_000_000)),
    ],
)
def test_a_quantity_is_its_value(text: str, value: Decimal) -> None:
    assert parse_quantity(text) == value


@pytest.mark.parametrize("text", ["hello", "", "1Gb", "1.2.3", "Gi", "1 Gi"])
def test_not_a_quantity_is_none(text: str) -> None:
    assert parse_quantity(text) is None
