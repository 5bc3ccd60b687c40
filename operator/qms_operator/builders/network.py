"""Service, Ingress and NetworkPolicy."""

from __future__ import annotations

from typing import Any

from ..spec import QwenModelServerSpec
from .names import HTTP_PORT, metadata, selector_labels


def service(server: str, namespace: str, uid: str, spec: QwenModelServerSpec) -> dict[str, Any]:
    """The Service: ClusterIP by default, NodePort or LoadBalancer to expose it."""
    port: dict[str, Any] = {
        "name": "http",
        "port": spec.service.port,
        "targetPort": "http",
        "protocol": "TCP",
    }
    if spec.service.node_port is not None:
        port["nodePort"] = spec.service.node_port
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata(server, namespace, uid, annotations=dict(spec.service.annotations)),
        "spec": {
            "type": spec.service.type,
            "selector": selector_labels(server),
            "ports": [port],
        },
    }


def ingress(server: str, namespace: str, uid: str, spec: QwenModelServerSpec) -> dict[str, Any]:
    """networking.k8s.io/v1 Ingress routing host + paths to the Service."""
    cfg = spec.ingress
    backend = {"service": {"name": server, "port": {"number": spec.service.port}}}
    body: dict[str, Any] = {
        "rules": [
            {
                "host": cfg.host,
                "http": {
                    "paths": [
                        {"path": path, "pathType": cfg.path_type, "backend": backend}
                        for path in cfg.paths
                    ]
                },
            }
        ]
    }
    if cfg.class_name:
        body = {"ingressClassName": cfg.class_name, **body}
    if cfg.tls_secret_name:
        body["tls"] = [{"hosts": [cfg.host], "secretName": cfg.tls_secret_name}]
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": metadata(server, namespace, uid, annotations=dict(cfg.annotations)),
        "spec": body,
    }


def _namespace(name: str) -> dict[str, Any]:
    return {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": name}}}


def network_policy(
    server: str, namespace: str, uid: str, spec: QwenModelServerSpec
) -> dict[str, Any]:
    """Ingress only on port 8080, only from allowed peers, monitoring, the ingress
    controller and the namespaces of the Gateways the HTTPRoute attaches to."""
    cfg = spec.network_policy
    # An empty podSelector means every pod (of the namespace, or of the selected ones).
    selector = {"matchLabels": dict(cfg.allowed_pods)} if cfg.allowed_pods else {}
    pods: dict[str, Any] = {"podSelector": selector}
    peers: list[dict[str, Any]] = [pods]
    if cfg.allowed_namespaces:
        peers.append({"namespaceSelector": {"matchLabels": dict(cfg.allowed_namespaces)}, **pods})
    if cfg.monitoring_namespace:
        peers.append(_namespace(cfg.monitoring_namespace))
    if spec.ingress.enabled and cfg.ingress_namespace:
        peers.append(_namespace(cfg.ingress_namespace))
    if spec.gateway.enabled:
        # Gateways whose proxies run beside them (in another namespace) reach the pods.
        others = [
            r.namespace for r in spec.gateway.parent_refs if r.namespace not in ("", namespace)
        ]
        peers += [_namespace(n) for n in dict.fromkeys(others)]
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": metadata(server, namespace, uid),
        "spec": {
            "podSelector": {"matchLabels": selector_labels(server)},
            "policyTypes": ["Ingress"],
            "ingress": [{"from": peers, "ports": [{"protocol": "TCP", "port": HTTP_PORT}]}],
        },
    }
