"""Model sources (issue 14) on the real control plane: weights from an OCI image as an
image volume (KEP-4639; the local API server runs with the ImageVolume gate on)."""

from __future__ import annotations

import time

from operator_helpers import (
    Operator,
    apply_yaml,
    get,
    is_ready,
    wait_for,
)

from qms_cluster import Cluster
from qms_operator.builders import desired_children
from qms_operator.diff import differences
from qms_operator.spec import parse_spec

NAMESPACE_PREFIX = "src-"  # the operator fixture watches these (conftest.py)

REFERENCE = "ghcr.io/acme/qwen3-weights@sha256:" + "b" * 64
SERVER = f"""
apiVersion: serving.qms.io/v1alpha1
kind: QwenModelServer
metadata: {{name: oci}}
spec:
  model:
    name: qwen3-small
    source: {{image: {{reference: "{REFERENCE}", subPath: Qwen3-0.6B}}}}
  resources: {{requests: {{cpu: "1", memory: 1Gi}}, limits: {{cpu: "1", memory: 1Gi}},
              gpu: {{count: 0}}}}
"""


def test_weights_from_an_oci_image_are_mounted_as_an_image_volume(
    cluster: Cluster, op: Operator, ns: str
) -> None:
    apply_yaml(cluster, ns, SERVER)
    server = wait_for("Ready", lambda: is_ready(cluster, "oci", ns), 60)
    meta = server["metadata"]
    [want] = [
        c
        for c in desired_children("oci", ns, meta["uid"], parse_spec(server["spec"]))
        if c["kind"] == "Deployment"
    ]
    live = get(cluster, "deployment", "oci", ns)
    assert live is not None
    assert differences(want, live) == []
    pod_spec = live["spec"]["template"]["spec"]
    [volume] = [v for v in pod_spec["volumes"] if v["name"] == "model"]
    assert volume == {
        "name": "model",
        "image": {"reference": REFERENCE, "pullPolicy": "IfNotPresent"},
    }
    [container] = pod_spec["containers"]
    assert {"name": "model", "mountPath": "/models", "readOnly": True} in container["volumeMounts"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["QMS_MODEL_DIR"] == "/models/Qwen3-0.6B"
    # The API server kept the image volume (the gate is on): nothing to re-apply, so
    # no Deployment write over several resyncs.
    time.sleep(3)
    before = op.writes("Deployment")
    time.sleep(12)
    assert op.writes("Deployment") - before == 0
    pods = cluster.kubectl(
        "get", "pods", "-n", ns, "-l", "app.kubernetes.io/instance=oci", "-o", "name"
    ).stdout.split()
    assert len(pods) == 1
