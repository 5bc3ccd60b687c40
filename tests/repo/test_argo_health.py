"""The Argo CD health check (deploy/argocd/.../health.lua) against its health_test.yaml.

Argo CD runs health scripts in gopher-lua (Lua 5.1) with the object as the global
`obj`; lupa's Lua 5.1 runtime does the same here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from qms_operator.builders import desired_children
from qms_operator.spec import parse_spec
from qms_operator.status import Observed, compute_status

lua51 = pytest.importorskip("lupa.lua51", reason="lupa (dev extra) ships Lua 5.1")

ROOT = Path(__file__).resolve().parents[2]
CHECK = ROOT / "deploy/argocd/serving.qms.io/QwenModelServer"
CASES = yaml.safe_load((CHECK / "health_test.yaml").read_text())["tests"]


def health(obj: dict[str, Any]) -> dict[str, str]:
    lua = lua51.LuaRuntime(unpack_returned_tuples=True)
    lua.globals()["obj"] = lua.table_from(obj, recursive=True)
    result = lua.execute((CHECK / "health.lua").read_text())
    return {"status": result["status"], "message": result["message"]}


@pytest.mark.parametrize("case", CASES, ids=[Path(c["inputPath"]).stem for c in CASES])
def test_health_case(case: dict[str, Any]) -> None:
    obj = yaml.safe_load((CHECK / case["inputPath"]).read_text())
    assert health(obj) == case["healthStatus"]


def test_cases_cover_the_required_situations() -> None:
    assert sorted(Path(c["inputPath"]).stem for c in CASES) == [
        "crash-termination-message",
        "degraded-after-progress",
        "healthy",
        "kserve-trap",
        "monitoring-not-served",
        "no-status",
        "ready-unknown",
        "reconciling",
        "stale-generation",
        "stale-ready-condition",
        "stalled",
    ]
    assert sorted(p.name for p in (CHECK / "testdata").iterdir()) == sorted(
        Path(c["inputPath"]).name for c in CASES
    )


def test_condition_order_does_not_matter() -> None:
    """One authoritative Ready: reversing the conditions changes nothing."""
    for case in CASES:
        obj = yaml.safe_load((CHECK / case["inputPath"]).read_text())
        if obj.get("status", {}).get("conditions"):
            obj["status"]["conditions"].reverse()
        assert health(obj) == case["healthStatus"], case["inputPath"]


def test_argocd_cm_patch_embeds_the_same_lua() -> None:
    patch = yaml.safe_load((ROOT / "deploy/argocd/argocd-cm-patch.yaml").read_text())
    assert patch["metadata"] == {"name": "argocd-cm", "namespace": "argocd"}
    key = "resource.customizations.health.serving.qms.io_QwenModelServer"
    assert list(patch["data"]) == [key]
    assert patch["data"][key] == (CHECK / "health.lua").read_text()


def test_the_operator_status_without_the_service_monitor_crd_is_healthy() -> None:
    """The status the operator computes for a ready server whose ServiceMonitor kind is
    not served: kstatus Current (Reconciling and Stalled False), Argo CD Healthy."""
    spec = parse_spec(
        {
            "model": {"name": "m", "source": {"imagePath": "/models/m"}},
            "monitoring": {"serviceMonitor": True},
        }
    )
    desired = desired_children("s", "ns", "uid-1", spec)
    live = {c["kind"]: c for c in desired if c["kind"] != "ServiceMonitor"}
    deployment = {**live["Deployment"], "metadata": {**live["Deployment"]["metadata"]}}
    deployment["metadata"]["generation"] = 1
    deployment["status"] = {
        "observedGeneration": 1,
        "replicas": 1,
        "updatedReplicas": 1,
        "readyReplicas": 1,
        "availableReplicas": 1,
    }
    live["Deployment"] = deployment
    seen = Observed(generation=3, children=live, unavailable=["ServiceMonitor"])
    status = compute_status("s", "ns", spec, desired, seen, "2026-11-29T12:00:00Z")
    body = status.model_dump(by_alias=True, mode="json")
    conditions = {c["type"]: (c["status"], c["reason"]) for c in body["conditions"]}
    assert conditions == {
        "Ready": ("True", "Ready"),
        "Reconciling": ("False", "Ready"),
        "Stalled": ("False", "NotStalled"),
        "MonitoringReady": ("False", "ServiceMonitorNotServed"),
    }
    obj = {"metadata": {"name": "s", "generation": 3}, "status": body}
    assert health(obj) == {"status": "Healthy", "message": "1/1 replicas ready"}


def test_a_crashed_runtimes_termination_message_is_the_degraded_message() -> None:
    """issue 20: the status the operator computes for pods whose runtime exits with a
    checksum mismatch; Argo CD says Degraded with that message (as do status.reason
    and the Stalled condition)."""
    spec = parse_spec({"model": {"name": "m", "source": {"imagePath": "/models/m"}}})
    desired = desired_children("s", "ns", "uid-1", spec)
    live = {c["kind"]: c for c in desired}
    template = live["Deployment"]["spec"]["template"]["metadata"]
    words = "checksum mismatch: model-00001-of-00002.safetensors (sha256 3b1f... != 7d42...)"
    pod = {
        "metadata": {"name": "s-7d9f8-x2k4p", "annotations": template["annotations"]},
        "status": {
            "containerStatuses": [
                {
                    "name": "runtime",
                    "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                    "lastState": {
                        "terminated": {"exitCode": 1, "reason": "Error", "message": words + "\n"}
                    },
                    "restartCount": 5,
                }
            ]
        },
    }
    seen = Observed(generation=2, children=live, pods=[pod])
    body = compute_status("s", "ns", spec, desired, seen, "2026-11-29T12:00:00Z").model_dump(
        by_alias=True, mode="json"
    )
    said = f"pod s-7d9f8-x2k4p keeps crashing (exit 1 Error): {words}"
    assert body["reason"] == said
    obj = {"metadata": {"name": "s", "generation": 2}, "status": body}
    assert health(obj) == {"status": "Degraded", "message": said}
