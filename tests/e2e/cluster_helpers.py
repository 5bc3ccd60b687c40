"""Helpers shared by the control-plane acceptance tests (test_cluster_*.py)."""

from __future__ import annotations

import json
from typing import Any

from qms_cluster import Cluster

# Seconds for polls: generous, as these tests assert no timing.
TIMEOUT = 120


def get_json(cluster: Cluster, *args: str) -> Any:
    return json.loads(cluster.kubectl("get", "-o", "json", *args).stdout)


def apply(cluster: Cluster, namespace: str, obj: dict[str, Any]) -> None:
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(obj))


def condition(obj: dict[str, Any], type_: str) -> dict[str, Any] | None:
    for c in obj.get("status", {}).get("conditions", []):
        if c["type"] == type_:
            return dict(c)
    return None
