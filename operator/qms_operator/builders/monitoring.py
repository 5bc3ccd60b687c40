"""ServiceMonitor for the Prometheus Operator."""

from __future__ import annotations

from typing import Any

from ..spec import QwenModelServerSpec
from .names import LABEL_INSTANCE, LABEL_NAME, metadata, selector_labels


def service_monitor(
    server: str, namespace: str, uid: str, spec: QwenModelServerSpec
) -> dict[str, Any]:
    """monitoring.coreos.com/v1 ServiceMonitor scraping /metrics on the http port."""
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "ServiceMonitor",
        "metadata": metadata(server, namespace, uid),
        "spec": {
            # The same labels as deploy/monitoring's PodMonitor, so the alerts and the
            # dashboard see one job="qms-runtime" and the server's name either way.
            "jobLabel": LABEL_NAME,
            "podTargetLabels": [LABEL_INSTANCE],
            "selector": {"matchLabels": selector_labels(server)},
            "endpoints": [
                {"port": "http", "path": "/metrics", "interval": spec.monitoring.interval}
            ],
        },
    }
