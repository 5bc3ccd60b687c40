"""Names, labels, selectors and owner references: the one place they come from."""

from __future__ import annotations

from typing import Any

from ..spec import API_VERSION, KIND

RUNTIME_NAME = "qms-runtime"
MANAGER = "qms-operator"
HTTP_PORT = 8080
LABEL_NAME = "app.kubernetes.io/name"
LABEL_INSTANCE = "app.kubernetes.io/instance"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
LABEL_COMPONENT = "app.kubernetes.io/component"
LABEL_REVISION = "serving.qms.io/revision"
SPEC_HASH_ANNOTATION = "serving.qms.io/spec-hash"


def selector_labels(server: str) -> dict[str, str]:
    """The immutable selector of the Deployment, Service, PDB and NetworkPolicy."""
    return {LABEL_NAME: RUNTIME_NAME, LABEL_INSTANCE: server}


def selector_string(server: str) -> str:
    """The pods' selector as a label-selector string (status.selector, for /scale)."""
    return ",".join(f"{k}={v}" for k, v in selector_labels(server).items())


def child_labels(server: str) -> dict[str, str]:
    """Labels on every child object."""
    return {
        **selector_labels(server),
        LABEL_MANAGED_BY: MANAGER,
        LABEL_COMPONENT: "model-server",
    }


def owner_reference(server: str, uid: str) -> dict[str, Any]:
    """Controller reference to the QwenModelServer (children are garbage-collected with it).

    blockOwnerDeletion stays false so deleting a server never waits on the operator.
    """
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "name": server,
        "uid": uid,
        "controller": True,
        "blockOwnerDeletion": False,
    }


def metadata(server: str, namespace: str, uid: str, **extra: Any) -> dict[str, Any]:
    """metadata of a child: same name as the server, its labels, its owner."""
    meta: dict[str, Any] = {
        "name": server,
        "namespace": namespace,
        "labels": child_labels(server),
        "ownerReferences": [owner_reference(server, uid)],
    }
    meta.update({k: v for k, v in extra.items() if v})
    return meta


def service_url(server: str, namespace: str, port: int) -> str:
    """In-cluster OpenAI base URL of a server."""
    return f"http://{server}.{namespace}.svc.cluster.local:{port}/v1"


def quantity(value: int | str) -> str:
    """Quantities are emitted as strings, as the API server returns them."""
    return str(value)
