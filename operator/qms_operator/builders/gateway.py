"""Gateway API children: the HTTPRoute and the Inference Extension's InferencePool.

Both are written whole, with the values the API server would default spelled out
(group, kind, weight), so the live object holds exactly what was built.
"""

from __future__ import annotations

from typing import Any

from ..spec import QwenModelServerSpec
from .names import HTTP_PORT, child_labels, metadata

GATEWAY_GROUP = "gateway.networking.k8s.io"
INFERENCE_GROUP = "inference.networking.k8s.io"


def endpoint_picker_name(server: str, spec: QwenModelServerSpec) -> str:
    """The endpoint picker's Service: as given, else ``<server>-epp``."""
    return spec.inference_pool.endpoint_picker.name or f"{server}-epp"


def pool_selector(server: str) -> dict[str, str]:
    """The InferencePool's pods: the labels of the pod template, less the revision, so
    that pods of the previous revision stay in the pool until a rollout removes them
    (as they stay behind the Service)."""
    return child_labels(server)


def inference_pool(
    server: str, namespace: str, uid: str, spec: QwenModelServerSpec
) -> dict[str, Any]:
    """inference.networking.k8s.io/v1 InferencePool of the server's pods on port 8080."""
    picker = spec.inference_pool.endpoint_picker
    return {
        "apiVersion": f"{INFERENCE_GROUP}/v1",
        "kind": "InferencePool",
        "metadata": metadata(server, namespace, uid),
        "spec": {
            "selector": {"matchLabels": pool_selector(server)},
            "targetPorts": [{"number": HTTP_PORT}],
            "endpointPickerRef": {
                "group": "",
                "kind": "Service",
                "name": endpoint_picker_name(server, spec),
                "port": {"number": picker.port},
                "failureMode": picker.failure_mode,
            },
        },
    }


def http_route(server: str, namespace: str, uid: str, spec: QwenModelServerSpec) -> dict[str, Any]:
    """gateway.networking.k8s.io/v1 HTTPRoute: hostnames and paths to the Service, or to
    the InferencePool when it is on."""
    cfg = spec.gateway
    parents = []
    for ref in cfg.parent_refs:
        parent: dict[str, Any] = {"group": GATEWAY_GROUP, "kind": "Gateway", "name": ref.name}
        if ref.namespace:
            parent["namespace"] = ref.namespace
        if ref.section_name:
            parent["sectionName"] = ref.section_name
        parents.append(parent)
    backend: dict[str, Any]
    if spec.inference_pool.enabled:
        backend = {"group": INFERENCE_GROUP, "kind": "InferencePool", "name": server, "weight": 1}
    else:
        backend = {
            "group": "",
            "kind": "Service",
            "name": server,
            "port": spec.service.port,
            "weight": 1,
        }
    body: dict[str, Any] = {
        "parentRefs": parents,
        "rules": [
            {
                "matches": [{"path": {"type": cfg.path_type, "value": p}} for p in cfg.paths],
                "backendRefs": [backend],
            }
        ],
    }
    if cfg.hostnames:
        body = {"hostnames": list(cfg.hostnames), **body}
    return {
        "apiVersion": f"{GATEWAY_GROUP}/v1",
        "kind": "HTTPRoute",
        "metadata": metadata(server, namespace, uid, annotations=dict(cfg.annotations)),
        "spec": body,
    }
