"""Generate the QwenModelServer CRD from the pydantic spec model.

Pydantic's JSON Schema is turned into a Kubernetes *structural* OpenAPI v3
schema: references inlined, titles dropped, optionals unwrapped, nested objects
defaulted whole (the API server checks CEL rules against defaults as written),
CEL rules kept as ``x-kubernetes-validations``.
"""

from __future__ import annotations

import copy
import typing
from typing import Any

import yaml
from pydantic import BaseModel, TypeAdapter

from .spec import (
    GROUP,
    KIND,
    MAX_NAME_LENGTH,
    PLURAL,
    SHORT_NAME,
    SINGULAR,
    VERSION,
    QwenModelServerSpec,
    QwenModelServerStatus,
)
from .spec.base import PRESET_KEY

Schema = dict[str, Any]
_DROP = {"title", "additionalProperties", "$defs"}


def _resolve(node: Schema, defs: dict[str, Schema]) -> Schema:
    if "$ref" in node:
        target = defs[node["$ref"].rsplit("/", 1)[1]]
        # One description (kubectl explain shows it): the field's own where it has one
        # (what this use of the object means), else the object's.
        merged = {**target, **{k: v for k, v in node.items() if k != "$ref"}}
        return _resolve(merged, defs)
    return node


def _unwrap_optional(node: Schema) -> Schema:
    """``X | None`` -> X, keeping the field's own description and default."""
    options = node.get("anyOf")
    if not options:
        return node
    rest = [o for o in options if o.get("type") != "null"]
    if len(rest) == len(options) or len(rest) != 1:
        return node
    merged = {**rest[0], **{k: v for k, v in node.items() if k != "anyOf"}}
    if merged.get("default", 0) is None:
        del merged["default"]
    return merged


def _convert(node: Schema, defs: dict[str, Schema]) -> Schema:
    node = _resolve(_unwrap_optional(_resolve(node, defs)), defs)
    out: Schema = {}
    for key, value in node.items():
        if key in _DROP:
            continue
        if key == "properties":
            out[key] = {name: _convert(sub, defs) for name, sub in value.items()}
        elif key == "items":
            out[key] = _convert(value, defs)
        elif key == "anyOf":
            out[key] = [{k: v for k, v in _convert(o, defs).items()} for o in value]
        else:
            out[key] = copy.deepcopy(value)
    extra = node.get("additionalProperties")
    if isinstance(extra, dict):
        out["additionalProperties"] = _convert(extra, defs)
    if out.get("x-kubernetes-int-or-string") and "anyOf" in out:
        # The API server wants int-or-string without typed branches: keep the
        # string branch's value checks (they apply to strings only).
        for option in out.pop("anyOf"):
            out.update({k: v for k, v in option.items() if k != "type"})
    if out.get("x-kubernetes-preserve-unknown-fields"):
        out["type"] = "object"
    if "properties" in out:
        out["type"] = "object"
    return out


def _submodel(annotation: Any) -> type[BaseModel] | None:
    for candidate in (annotation, *typing.get_args(annotation)):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None


def _factory_defaults(node: Schema, model: type[BaseModel]) -> None:
    """Pydantic leaves default_factory values out of its JSON Schema: put them in."""
    for name, field in model.model_fields.items():
        prop = node["properties"][field.alias or name]
        if field.default_factory is not None and field.annotation is not None:
            value = TypeAdapter(field.annotation).dump_python(
                field.default_factory(),  # type: ignore[call-arg]
                mode="json",
                by_alias=True,
                exclude_none=True,
            )
            # The whole default object: the API server checks CEL rules on defaults as given.
            prop["default"] = value
        sub = _submodel(field.annotation)
        if sub is not None:
            _factory_defaults(prop.get("items", prop), sub)


def _strip_default(node: Schema, value: Any) -> None:
    """Take the fields a preset may fill out of a default object, at any depth."""
    if not isinstance(value, dict):
        return
    for name, prop in node.get("properties", {}).items():
        if prop.get(PRESET_KEY):
            value.pop(name, None)
        elif name in value:
            _strip_default(prop, value[name])


def _no_preset_defaults(node: Schema) -> None:
    """Fields a preset may fill get no default from the API server (spec/base.py
    PRESET_KEY): neither their own nor inside their parents' default objects."""
    if "default" in node:
        _strip_default(node, node["default"])
    for prop in node.get("properties", {}).values():
        if prop.pop(PRESET_KEY, False):
            prop.pop("default", None)
        _no_preset_defaults(prop)
    if isinstance(node.get("items"), dict):
        _no_preset_defaults(node["items"])


def object_schema(model: type[BaseModel]) -> Schema:
    """The structural OpenAPI schema of a pydantic model (aliases as keys)."""
    raw = model.model_json_schema(by_alias=True, mode="validation")
    schema = _convert(raw, raw.get("$defs", {}))
    _factory_defaults(schema, model)
    _no_preset_defaults(schema)
    return schema


def _without_defaults(node: Schema) -> Schema:
    """Status is written only by the operator: the API server must not default it."""
    out = {k: v for k, v in node.items() if k != "default"}
    if "properties" in out:
        out["properties"] = {k: _without_defaults(v) for k, v in out["properties"].items()}
    if "items" in out:
        out["items"] = _without_defaults(out["items"])
    return out


def openapi_schema() -> Schema:
    """The CRD's openAPIV3Schema."""
    return {
        "type": "object",
        "description": "QwenModelServer serves one Qwen model (e.g. Qwen3-Omni-30B-A3B-"
        "Instruct) behind an OpenAI-compatible API: the operator keeps its Deployment, "
        "Service, HPA, NetworkPolicy, Ingress and PodDisruptionBudget as the spec says.",
        "required": ["spec"],
        "properties": {
            "apiVersion": {"type": "string", "description": "API version."},
            "kind": {"type": "string", "description": "Kind."},
            "metadata": {"type": "object"},
            "spec": object_schema(QwenModelServerSpec),
            "status": _without_defaults(object_schema(QwenModelServerStatus)),
        },
        "x-kubernetes-validations": [
            {
                "rule": f"size(self.metadata.name) <= {MAX_NAME_LENGTH}",
                "message": f"metadata.name must be at most {MAX_NAME_LENGTH} characters so "
                "every child and pod name stays within Kubernetes limits",
            },
            {
                "rule": "self.metadata.name.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$')",
                "message": "metadata.name must start with a letter and hold only lowercase "
                "letters, digits and '-' (it names the Service)",
            },
        ],
    }


PRINTER_COLUMNS = [
    {"name": "Model", "type": "string", "jsonPath": ".spec.model.name"},
    {"name": "Ready", "type": "string", "jsonPath": ".status.ready"},
    {"name": "Status", "type": "string", "jsonPath": ".status.phase"},
    {"name": "URL", "type": "string", "jsonPath": ".status.url"},
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    {"name": "GPU", "type": "integer", "jsonPath": ".status.effective.gpuCount", "priority": 1},
    {"name": "Reason", "type": "string", "jsonPath": ".status.reason", "priority": 1},
]


# kubectl scale, an HPA or KEDA aimed at the server: spec.replicas is the count,
# status.replicas every pod of the Deployment, status.selector the pods' selector.
SCALE = {
    "specReplicasPath": ".spec.replicas",
    "statusReplicasPath": ".status.replicas",
    "labelSelectorPath": ".status.selector",
}


def crd() -> dict[str, Any]:
    """The whole CustomResourceDefinition object."""
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{PLURAL}.{GROUP}",
            "labels": {"app.kubernetes.io/part-of": "qms"},
        },
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": KIND,
                "listKind": f"{KIND}List",
                "plural": PLURAL,
                "singular": SINGULAR,
                "shortNames": [SHORT_NAME],
                "categories": ["qms", "all"],
            },
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}, "scale": SCALE},
                    "additionalPrinterColumns": PRINTER_COLUMNS,
                    "schema": {"openAPIV3Schema": openapi_schema()},
                }
            ],
        },
    }


HEADER = "# Generated by `qms-operator crd` from qms_operator.spec. Do not edit.\n"


def crd_yaml() -> str:
    """The CRD as the YAML committed in crds/."""
    return HEADER + yaml.safe_dump(crd(), sort_keys=False, width=100)
