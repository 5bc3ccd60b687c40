"""Prometheus metrics: the `vllm:` gauges gateways and autoscalers read, and `qms_*` own ones.

`qms_requests_total` counts inference requests only (`INFERENCE_ENDPOINTS`), so the
HPA's requests-per-second (`rate(qms_requests_total[1m])` through the Prometheus
Adapter) and the error-rate alert never see kubelet probes or Prometheus scrapes;
`qms_http_requests_total` counts every HTTP request, probes and scrapes included.
Each app owns its registry, so two apps in one process (tests) never share counters.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
)

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

_LATENCY_BUCKETS = (
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75,
    1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0,
)  # fmt: skip
_E2E_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 40.0, 60.0, 120.0, 300.0, 600.0)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)

# The endpoints that run the model: what `qms_requests_total` counts.
INFERENCE_ENDPOINTS = frozenset({"/v1/chat/completions", "/v1/completions", "/v1/predict"})


class RuntimeMetrics:
    """All metrics of one runtime process."""

    def __init__(self, model_name: str) -> None:
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)
        labels = ["model_name"]
        self._model = model_name
        self.model_name = model_name
        self.running = Gauge(
            "vllm:num_requests_running",
            "Sequences in the running batch.",
            labels,
            registry=self.registry,
        )
        self.waiting = Gauge(
            "vllm:num_requests_waiting",
            "Admitted sequences not yet in the running batch.",
            labels,
            registry=self.registry,
        )
        self.kv_cache_usage = Gauge(
            "vllm:kv_cache_usage_perc",
            "Fraction of the paged KV cache in use (0..1).",
            labels,
            registry=self.registry,
        )
        self.requests = Counter(
            "qms_requests",
            "Inference requests answered (chat, completions, predict), by endpoint and status"
            " code; probes, scrapes and other endpoints are not counted here.",
            ["endpoint", "status"],
            registry=self.registry,
        )
        self.http_requests = Counter(
            "qms_http_requests",
            "Every HTTP request answered (inference, probes, scrapes, the rest), by endpoint"
            " and status code.",
            ["endpoint", "status"],
            registry=self.registry,
        )
        self.prompt_tokens = Counter(
            "qms_prompt_tokens", "Prompt tokens processed.", registry=self.registry
        )
        self.generation_tokens = Counter(
            "qms_generation_tokens", "Tokens generated.", registry=self.registry
        )
        self.time_to_first_token = Histogram(
            "qms_time_to_first_token_seconds",
            "From request arrival to its first generated token.",
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.inter_token_latency = Histogram(
            "qms_inter_token_latency_seconds",
            "Time between consecutive generated tokens of one sequence.",
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.e2e_latency = Histogram(
            "qms_e2e_request_latency_seconds",
            "From request arrival to its last token.",
            buckets=_E2E_BUCKETS,
            registry=self.registry,
        )
        self.batch_size = Histogram(
            "qms_batch_size",
            "Sequences in each batched forward step.",
            buckets=_BATCH_BUCKETS,
            registry=self.registry,
        )
        self.prefix_caching = Gauge(
            "qms_prefix_caching",
            "1 when the engine shares the KV-cache pages of common prompt prefixes, else 0.",
            labels,
            registry=self.registry,
        )
        for gauge in (self.running, self.waiting, self.kv_cache_usage, self.prefix_caching):
            gauge.labels(model_name).set(0)

    def bind_engine_gauges(
        self,
        running: Callable[[], float],
        waiting: Callable[[], float],
        kv_usage: Callable[[], float],
    ) -> None:
        """Read the engine's state at scrape time rather than pushing it on every step."""
        self.running.labels(self._model).set_function(running)
        self.waiting.labels(self._model).set_function(waiting)
        self.kv_cache_usage.labels(self._model).set_function(kv_usage)

    def count_request(self, endpoint: str, status: int) -> None:
        """One answered HTTP request; an inference one is counted in both counters."""
        self.http_requests.labels(endpoint=endpoint, status=str(status)).inc()
        if endpoint in INFERENCE_ENDPOINTS:
            self.requests.labels(endpoint=endpoint, status=str(status)).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)


class SequenceObserver:
    """The metrics of one sequence, from its arrival on."""

    def __init__(self, metrics: RuntimeMetrics, arrival: float) -> None:
        self._metrics = metrics
        self._arrival = arrival
        self._last = arrival
        self._first = True

    def tokens(self, count: int) -> None:
        if not count:
            return
        now = time.perf_counter()
        if self._first:
            self._metrics.time_to_first_token.observe(now - self._arrival)
            self._first = False
        else:
            for _ in range(count):
                self._metrics.inter_token_latency.observe((now - self._last) / count)
        self._metrics.generation_tokens.inc(count)
        self._last = now

    def finished(self) -> None:
        self._metrics.e2e_latency.observe(time.perf_counter() - self._arrival)
