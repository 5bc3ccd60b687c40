"""Test data shared by the operator, repository and e2e tiers: the deploy examples, the
invalid-CR corpus (tests/invalid) and an offline validator for the generated CRD schema."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema
import yaml

ROOT = Path(__file__).resolve().parents[3]
EXAMPLES = sorted((ROOT / "deploy" / "examples").glob("*.yaml"))
CRD_FILE = ROOT / "crds" / "modelservers.serving.qms.io.yaml"


@dataclass(frozen=True)
class InvalidCase:
    """One file of tests/invalid: a CR and the error it must give."""

    path: Path
    layer: str  # "schema" (OpenAPI, checked offline too) or "cel" (API server only)
    field: str  # the field path the error must name
    message: str  # for CEL cases: the rule's message
    body: dict[str, Any]
    # For a transition rule (oldSelf): the object created first; ``body`` updates it.
    before: dict[str, Any] | None = None

    @property
    def id(self) -> str:
        return self.path.stem


def invalid_cases() -> list[InvalidCase]:
    cases = []
    for path in sorted((ROOT / "tests" / "invalid").glob("*.yaml")):
        text = path.read_text()
        head = dict(
            line[2:].split(": ", 1)
            for line in text.splitlines()
            if line.startswith(("# layer: ", "# field: ", "# message: "))
        )
        *before, body = [d for d in yaml.safe_load_all(text) if d]
        cases.append(
            InvalidCase(
                path,
                head["layer"],
                head["field"],
                head.get("message", ""),
                body,
                before[0] if before else None,
            )
        )
    return cases


def load_yaml(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text())
    assert isinstance(data, dict)
    return data


def _strict(node: Any) -> Any:
    """Emulate the API server's strict field validation: unknown fields are errors."""
    if isinstance(node, dict):
        out = {k: _strict(v) for k, v in node.items()}
        if "properties" in out and not out.get("x-kubernetes-preserve-unknown-fields"):
            out["additionalProperties"] = False
        if out.get("x-kubernetes-int-or-string"):
            out["type"] = ["integer", "string"]
        return out
    if isinstance(node, list):
        return [_strict(v) for v in node]
    return node


def strict_schema(openapi: dict[str, Any]) -> dict[str, Any]:
    """A CRD's openAPIV3Schema as a JSON Schema that refuses unknown fields, as the API
    server's strict field validation does."""
    strict: dict[str, Any] = _strict(copy.deepcopy(openapi))
    return strict


def crd_validator() -> jsonschema.protocols.Validator:
    """A JSON Schema validator for the committed CRD's openAPIV3Schema."""
    crd = load_yaml(CRD_FILE)
    return jsonschema.Draft7Validator(
        strict_schema(crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"])
    )


def error_field(error: jsonschema.ValidationError) -> str:
    """The error's location written as the API server writes it: spec.a.b[0].c."""
    out = ""
    for part in error.absolute_path:
        out += f"[{part}]" if isinstance(part, int) else f".{part}" if out else str(part)
    if error.validator == "required":
        missing = str(error.message).split("'")[1]
        out = f"{out}.{missing}" if out else missing
    if error.validator == "additionalProperties":
        extra = str(error.message).split("'")[1]
        out = f"{out}.{extra}"
    return out
