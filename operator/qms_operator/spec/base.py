"""Shared base for the spec models: frozen, camelCase aliases, unknown fields refused.

CEL rules are attached to a model class with :func:`cel` and end up as the
``x-kubernetes-validations`` of that object in the generated CRD.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

CEL_KEY = "x-kubernetes-validations"


class SpecModel(BaseModel):
    """Base of every spec object: immutable once parsed, YAML keys in camelCase."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        frozen=True,
        extra="forbid",
    )


# A field a preset (spec.model.preset) may fill: the CRD gives it no default (nor does
# the default of the object around it), so a value present in the object is one the
# user wrote; the operator applies the pydantic default, or the preset's value.
PRESET_KEY = "x-qms-preset"
PRESET_FILLS: dict[str, Any] = {PRESET_KEY: True}


def cel(*rules: tuple[str, str, str]) -> dict[str, Any]:
    """Build ``json_schema_extra`` holding CEL rules as (rule, message, field path)."""
    return {
        CEL_KEY: [
            {"rule": rule, "message": message, **({"fieldPath": path} if path else {})}
            for rule, message, path in rules
        ]
    }


# A Kubernetes resource quantity ("4", 4, "500m", "32Gi"): int-or-string in the CRD.
QUANTITY_PATTERN = (
    r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))"
    r"(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"
)
Quantity = Annotated[
    int | Annotated[str, Field(pattern=QUANTITY_PATTERN, max_length=64)],
    Field(json_schema_extra={"x-kubernetes-int-or-string": True}),
]

# DNS-1123 label: names of Secrets, PVCs, classes and the like.
DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
# DNS-1123 subdomain: hostnames, label keys' prefix.
DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
