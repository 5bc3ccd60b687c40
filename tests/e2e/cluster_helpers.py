"""Helpers every e2e module may use: kubectl JSON, apply, conditions, namespace names."""

from __future__ import annotations

import json
import re
import secrets
from typing import Any

from qms_cluster import Cluster

# Seconds for polls: generous, as these tests assert no timing.
TIMEOUT = 120


def get_json(cluster: Cluster, *args: str) -> Any:
    return json.loads(cluster.kubectl("get", "-o", "json", *args).stdout)


def apply(cluster: Cluster, namespace: str, obj: dict[str, Any]) -> None:
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(obj))


def condition(obj: dict[str, Any] | None, kind: str) -> dict[str, Any]:
    """The condition of that type in an object's status; {} when it has none (or there
    is no object): the one helper every e2e module uses."""
    for c in ((obj or {}).get("status") or {}).get("conditions") or []:
        if c["type"] == kind:
            return dict(c)
    return {}


def namespace_name(test_name: str) -> str:
    """A DNS-1123 label from a test name, unique per call, at most 63 chars."""
    slug = re.sub(r"[^a-z0-9]+", "-", test_name.lower()).strip("-") or "test"
    suffix = secrets.token_hex(3)
    return f"{slug[: 63 - len(suffix) - 1].rstrip('-')}-{suffix}"
