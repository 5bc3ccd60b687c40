"""The CRD is generated from the spec model, committed, fresh and complete."""

from __future__ import annotations

from typing import Any

import pytest

from qms_operator.crd import crd, crd_yaml
from qms_operator.spec import QwenModelServerSpec
from qms_testkit.examples import (
    CRD_FILE,
    EXAMPLES,
    crd_validator,
    error_field,
    invalid_cases,
    load_yaml,
)

SCHEMA = crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


def test_committed_crd_is_fresh() -> None:
    assert CRD_FILE.read_text() == crd_yaml(), (
        "crds/ is stale: run `qms-operator crd > crds/modelservers.serving.qms.io.yaml`"
    )


def test_names_and_scope() -> None:
    spec = crd()["spec"]
    assert crd()["metadata"]["name"] == "modelservers.serving.qms.io"
    assert spec["group"] == "serving.qms.io"
    assert spec["scope"] == "Namespaced"
    assert spec["names"]["kind"] == "QwenModelServer"
    assert spec["names"]["plural"] == "modelservers"
    assert spec["names"]["singular"] == "modelserver"
    assert spec["names"]["shortNames"] == ["qms"]
    version = spec["versions"][0]
    assert version["name"] == "v1alpha1"
    assert version["subresources"] == {
        "status": {},
        "scale": {
            "specReplicasPath": ".spec.replicas",
            "statusReplicasPath": ".status.replicas",
            "labelSelectorPath": ".status.selector",
        },
    }


def test_printer_columns() -> None:
    columns = crd()["spec"]["versions"][0]["additionalPrinterColumns"]
    assert [(c["name"], c["jsonPath"]) for c in columns if "priority" not in c] == [
        ("Model", ".spec.model.name"),
        ("Ready", ".status.ready"),
        ("Status", ".status.phase"),
        ("URL", ".status.url"),
        ("Age", ".metadata.creationTimestamp"),
    ]


def _walk(node: dict[str, Any], path: str) -> list[tuple[str, dict[str, Any]]]:
    found = [(path, node)]
    for name, sub in node.get("properties", {}).items():
        found += _walk(sub, f"{path}.{name}")
    if "items" in node:
        found += _walk(node["items"], f"{path}[]")
    return found


def test_every_spec_and_status_field_has_a_description() -> None:
    fields = _walk(SCHEMA["properties"]["spec"], "spec")
    fields += _walk(SCHEMA["properties"]["status"], "status")
    missing = [p for p, node in fields if not p.endswith("[]") and not node.get("description")]
    assert missing == []
    assert len(fields) > 120


def test_schema_is_structural() -> None:
    """Every node has a type (or is int-or-string); no refs or titles survive."""
    for path, node in _walk(SCHEMA, ""):
        assert "$ref" not in node and "title" not in node, path
        assert node.get("type") or node.get("x-kubernetes-int-or-string"), path
        if node.get("x-kubernetes-int-or-string"):
            assert "type" not in node, path


def test_defaults_come_from_the_seed() -> None:
    spec = SCHEMA["properties"]["spec"]["properties"]
    res = spec["resources"]["properties"]
    assert res["requests"]["default"] == {"cpu": "4", "memory": "32Gi"}
    assert res["limits"]["default"] == {"cpu": "8", "memory": "64Gi"}
    gpu = res["gpu"]["properties"]
    # What a preset may fill has no default from the API server (the operator applies
    # 1, or the preset's count), not even inside the default of the object around it.
    assert "default" not in gpu["count"]
    assert "count" not in res["gpu"]["default"]
    assert "gpu" not in res["requests"]
    assert gpu["resourceName"]["default"] == "nvidia.com/gpu"
    assert gpu["resourceName"]["enum"] == ["nvidia.com/gpu", "amd.com/gpu", "gpu.intel.com/i915"]
    auto = spec["autoscaling"]["properties"]
    assert [auto[k]["default"] for k in ("minReplicas", "maxReplicas", "targetCPUUtilization")] == [
        2,
        10,
        70,
    ]
    assert auto["targetRequestsPerSecond"]["default"] == "100"
    assert spec["service"]["properties"]["port"]["default"] == 8080
    assert spec["networkPolicy"]["properties"]["enabled"]["default"] is True
    startup = spec["probes"]["properties"]["startup"]
    assert "default" not in startup["properties"]["budgetSeconds"]
    assert startup["default"] == {"periodSeconds": 10}
    batching = spec["runtime"]["properties"]["batching"]
    assert "default" not in batching["properties"]["maxModelLen"]
    assert "maxModelLen" not in batching["default"]
    assert "maxModelLen" not in spec["runtime"]["default"]["batching"]
    assert "x-qms-preset" not in CRD_FILE.read_text()
    # Nested objects default whole, so CEL rules see every field.
    assert spec["autoscaling"]["default"] == {
        "enabled": False,
        "minReplicas": 2,
        "maxReplicas": 10,
        "targetCPUUtilization": 70,
        "targetRequestsPerSecond": "100",
        "behavior": {},
    }
    assert "default" not in SCHEMA["properties"]["status"]["properties"]["phase"]


def test_cel_rules() -> None:
    rules = [
        rule for _, node in _walk(SCHEMA, "") for rule in node.get("x-kubernetes-validations", [])
    ]
    assert len(rules) >= 8
    assert all(r["rule"] and r["message"] for r in rules)
    messages = {r["message"] for r in rules}
    assert "autoscaling.minReplicas must not exceed autoscaling.maxReplicas" in messages
    assert "ingress.host is required when ingress.enabled is true" in messages
    assert "gpu.count must be 0 or more" in messages
    assert any(m.startswith("metadata.name must be at most 47 characters") for m in messages)


def test_remote_media_sits_next_to_the_runtime_switches() -> None:
    runtime = SCHEMA["properties"]["spec"]["properties"]["runtime"]["properties"]
    remote = runtime["remoteMedia"]
    assert "audioOutput" in runtime
    assert remote["default"] == {"enabled": False, "allowedDomains": []}
    assert remote["x-kubernetes-validations"] == [
        {
            "rule": "!self.enabled || size(self.allowedDomains) > 0",
            "message": "remoteMedia.enabled needs at least one allowedDomains entry",
            "fieldPath": ".allowedDomains",
        }
    ]
    assert "ingress only" in remote["properties"]["enabled"]["description"]


def _with_remote(remote: Any) -> dict[str, Any]:
    return {
        "apiVersion": "serving.qms.io/v1alpha1",
        "kind": "QwenModelServer",
        "metadata": {"name": "m"},
        "spec": {
            "model": {"name": "qwen3", "source": {"imagePath": "/models/q"}},
            "runtime": {"remoteMedia": remote},
        },
    }


@pytest.mark.parametrize(
    "entry", ["images.example.com", "*.cdn.example.com", "203.0.113.7", "fd00:ec2::254"]
)
def test_allowed_domain_entries_the_schema_accepts(entry: str) -> None:
    body = _with_remote({"enabled": True, "allowedDomains": [entry]})
    assert list(crd_validator().iter_errors(body)) == []


@pytest.mark.parametrize(
    "entry", ["http://images.example.com", "*", "Images.Example.com", "a..b", "x/y", "*.*.a"]
)
def test_allowed_domain_entries_the_schema_refuses(entry: str) -> None:
    body = _with_remote({"enabled": True, "allowedDomains": [entry]})
    errors = list(crd_validator().iter_errors(body))
    assert {error_field(e) for e in errors} == {"spec.runtime.remoteMedia.allowedDomains[0]"}


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_examples_validate_against_the_crd(path: Any) -> None:
    errors = list(crd_validator().iter_errors(load_yaml(path)))
    assert errors == []


SCHEMA_CASES = [c for c in invalid_cases() if c.layer == "schema"]


def test_invalid_corpus_size() -> None:
    assert len(SCHEMA_CASES) >= 20
    assert len(invalid_cases()) >= 40


@pytest.mark.parametrize("case", SCHEMA_CASES, ids=lambda c: c.id)
def test_invalid_corpus_is_refused_by_the_schema(case: Any) -> None:
    errors = list(crd_validator().iter_errors(case.body))
    assert errors, f"{case.id} was accepted"
    assert case.field in {error_field(e) for e in errors}


@pytest.mark.parametrize(
    "case", [c for c in invalid_cases() if c.layer == "cel"], ids=lambda c: c.id
)
def test_cel_cases_pass_the_openapi_part(case: Any) -> None:
    """CEL cases must be refused by a CEL rule, not earlier by the schema (see e2e)."""
    assert list(crd_validator().iter_errors(case.body)) == []


def _pydantic_fields(node: dict[str, Any], defs: dict[str, Any], path: str) -> list[Any]:
    """(CRD path, the field's own description, its object's description) of every
    property whose type is a model: where kubectl explain could show two."""
    found = []
    for name, prop in node.get("properties", {}).items():
        ref = prop.get("$ref") or next(
            (o["$ref"] for o in prop.get("anyOf", []) if "$ref" in o), None
        )
        if ref is None:
            continue
        target = defs[ref.rsplit("/", 1)[1]]
        found.append((f"{path}.{name}", prop.get("description"), target.get("description")))
        found += _pydantic_fields(target, defs, f"{path}.{name}")
    return found


def test_kubectl_explain_shows_one_description_per_field() -> None:
    """The field's own description where it has one, else its object's: never both."""
    raw = QwenModelServerSpec.model_json_schema(by_alias=True, mode="validation")
    fields = _pydantic_fields(raw, raw["$defs"], "spec")
    nodes = dict(_walk(SCHEMA["properties"]["spec"], "spec"))
    assert len(fields) > 20
    for path, own, its in fields:
        assert nodes[path]["description"] == (own or its), path
    spec = SCHEMA["properties"]["spec"]["properties"]
    assert spec["autoscaling"]["description"] == (
        "A HorizontalPodAutoscaler (autoscaling/v2). When on, it owns the replica count."
    )
    assert spec["probes"]["properties"]["liveness"]["description"] == (
        "Liveness probe on GET /health."
    )
    assert spec["probes"]["properties"]["startup"]["description"] == (
        "Budget for loading the model, replacing a fragile initialDelaySeconds."
    )
