"""Acceptance of the local control plane (issue 3): garbage collection and CEL."""

from __future__ import annotations

import json
import secrets
import subprocess

from cluster_helpers import TIMEOUT, apply, condition, get_json

from qms_cluster import Cluster
from qms_testkit.polling import wait_for


def test_deleting_owner_deletes_owned_objects(cluster: Cluster, namespace: str) -> None:
    cluster.kubectl("create", "configmap", "owner", "-n", namespace)
    uid = get_json(cluster, "configmap", "owner", "-n", namespace)["metadata"]["uid"]
    ref = {"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": uid}
    meta = {"ownerReferences": [ref]}
    apply(
        cluster,
        namespace,
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "child", **meta}},
    )
    apply(
        cluster,
        namespace,
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "child", **meta}},
    )
    apply(
        cluster, namespace, {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "free"}}
    )

    cluster.kubectl("delete", "configmap", "owner", "-n", namespace)

    def children_gone() -> bool:
        r = cluster.kubectl("get", "configmap/child", "secret/child", "-n", namespace, check=False)
        return r.stderr.count("NotFound") == 2

    wait_for("the garbage collector to delete the owned objects", children_gone, TIMEOUT)
    names = cluster.kubectl("get", "configmaps", "-n", namespace, "-o", "name").stdout.split()
    # kube-root-ca.crt is published into every namespace by the controller-manager, async.
    assert sorted(set(names) - {"configmap/kube-root-ca.crt"}) == ["configmap/free"]


def test_crd_cel_rule_rejects_breaking_object(cluster: Cluster, namespace: str) -> None:
    group = f"e2e-{secrets.token_hex(3)}.qms.io"  # fresh per run: CRD deletion is async
    spec_schema = {
        "type": "object",
        "required": ["minReplicas", "maxReplicas"],
        "properties": {"minReplicas": {"type": "integer"}, "maxReplicas": {"type": "integer"}},
        "x-kubernetes-validations": [
            {
                "rule": "self.minReplicas <= self.maxReplicas",
                "message": "minReplicas must not exceed maxReplicas",
            }
        ],
    }
    crd = {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"widgets.{group}"},
        "spec": {
            "group": group,
            "names": {"kind": "Widget", "plural": "widgets", "singular": "widget"},
            "scope": "Namespaced",
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "properties": {"spec": spec_schema},
                        }
                    },
                }
            ],
        },
    }
    cluster.kubectl("apply", "-f", "-", input=json.dumps(crd))
    try:
        # (kubectl wait errors out while the new CRD has no conditions yet)
        def established() -> bool:
            c = condition(get_json(cluster, "crd", f"widgets.{group}"), "Established")
            return c.get("status") == "True"

        wait_for("the CRD to be Established", established, TIMEOUT)

        def widget(name: str, lo: int, hi: int) -> subprocess.CompletedProcess[str]:
            obj = {
                "apiVersion": f"{group}/v1",
                "kind": "Widget",
                "metadata": {"name": name},
                "spec": {"minReplicas": lo, "maxReplicas": hi},
            }
            return cluster.kubectl(
                "create", "-n", namespace, "-f", "-", input=json.dumps(obj), check=False
            )

        def created() -> subprocess.CompletedProcess[str] | None:
            r = widget("good", 1, 3)
            return r if r.returncode == 0 else None

        # Discovery may lag the Established condition by a moment.
        good = wait_for("the Widget kind to be served", created, TIMEOUT)
        assert good.stdout.strip() == f"widget.{group}/good created"
        bad = widget("bad", 3, 2)
        assert bad.returncode == 1
        assert bad.stderr.strip() == (
            'The Widget "bad" is invalid: spec: Invalid value: "object": '
            "minReplicas must not exceed maxReplicas"
        )
        assert cluster.kubectl(
            "get", f"widgets.{group}", "-n", namespace, "-o", "name"
        ).stdout.split() == [f"widget.{group}/good"]
    finally:
        cluster.kubectl("delete", "crd", f"widgets.{group}", "--wait=false")
