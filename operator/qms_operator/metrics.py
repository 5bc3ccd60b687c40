"""The operator's own Prometheus metrics (GET /metrics on --metrics-port)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

API_REQUESTS = Counter(
    "qms_operator_api_requests",
    "Requests the operator sent to the API server (watches excluded), by verb and kind.",
    ["verb", "kind"],
)
RECONCILES = Counter(
    "qms_operator_reconciles", "Reconciles of a QwenModelServer, by result.", ["result"]
)
RECONCILE_SECONDS = Histogram(
    "qms_operator_reconcile_duration_seconds",
    "Time of one reconcile.",
    buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
SERVERS = Gauge("qms_operator_modelservers", "QwenModelServers known to the operator.")
QUEUE_DEPTH = Gauge("qms_operator_queue_depth", "Servers waiting to be reconciled.")
