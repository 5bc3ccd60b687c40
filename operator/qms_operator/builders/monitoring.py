"""ServiceMonitor for the Prometheus Operator."""

from __future__ import annotations

from typing import Any

from ..spec import QwenModelServerSpec
from .names import metadata, selector_labels


def service_monitor(
    server: str, namespace: str, uid: str, spec: QwenModelServerSpec
) -> dict[str, Any]:
    """monitoring.coreos.com/v1 ServiceMonitor scraping /metrics on the http port."""
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "ServiceMonitor",
        "metadata": metadata(server, namespace, uid),
        "spec": {
            "selector": {"matchLabels": selector_labels(server)},
            "endpoints": [
                {"port": "http", "path": "/metrics", "interval": spec.monitoring.interval}
            ],
        },
    }
