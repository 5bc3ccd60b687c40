"""A real Prometheus (Debian's 2.42) scraping a real `qms-runtime serve` on a tiny model.

Everything on loopback. Prometheus scrapes every 500 ms and evaluates the project's
rules (extracted from the PrometheusRule) at the same interval. The runtime target
gets the labels the PodMonitor's Kubernetes relabelling would give it (job,
namespace, pod, app_kubernetes_io_instance) as static labels.

The known load, counted on the client:
- while the model loads, one completion (503 "loading"): the 503 series exists
  before Prometheus's first scrape, so later 503s show in rate();
- a prelude of one request of each kind, scraped before the measured load, so no
  series is born inside the measured window (Prometheus 2.42's rate() does not
  count a series' first value);
- the measured load (`LOAD`): 200s on the three inference endpoints, 400s and 404s,
  with probes and /v1/models in between (`PROBES`);
- SIGTERM with one long stream in flight, then `DRAIN` requests, still answered (200,
  `Connection: close`: a draining pod loses nothing), then the process exits.

Prometheus is then queried at fixed times (its own sample timestamps): counts are
exact; rates are within a stated tolerance of the requests sent.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from qms_testkit import prometheus_rules
from qms_testkit.processes import RuntimeServer
from qms_testkit.prometheus_server import (
    DASHBOARD,
    PrometheusServer,
    adapter_query,
    adapter_rule,
    values_by,
)

pytestmark = pytest.mark.runtime

NAMESPACE = "qms-test"
SERVER = "tiny"
POD = "tiny-5f7d9c8b6d-abcde"  # a Deployment pod's name: <server>-<hash>-<suffix>
MODEL = "tiny-qwen3"
RUNTIME = f'job="qms-runtime", namespace="{NAMESPACE}", app_kubernetes_io_instance="{SERVER}"'

COMPLETIONS, CHAT, PREDICT = "/v1/completions", "/v1/chat/completions", "/v1/predict"
LOAD = {
    (COMPLETIONS, "200"): 16,
    (CHAT, "200"): 4,
    (PREDICT, "200"): 2,
    (COMPLETIONS, "400"): 4,
    (CHAT, "404"): 2,
}
PROBES = {"/health": 10, "/ready": 10, "/v1/models": 2}
DRAIN = 3
GENERATED_PER_OK = 2  # max_tokens with ignore_eos: every 200 generates exactly this many
# rate() extrapolates past the first and last samples of a window by at most half a
# scrape interval at the start and 1.1 intervals at the end (0.8 s with 500 ms
# scrapes): over >= MIN_SPAN seconds of samples that adds under 6 %, and it never
# subtracts. Rates are asserted within [sent, sent * (1 + RATE_TOLERANCE)].
RATE_TOLERANCE = 0.10
MIN_SPAN = 15.0
SETTLE = 1.0  # two scrape and rule-evaluation intervals

# Stand-in for the two exporters the dashboard's GPU and container panels read
# (NVIDIA's DCGM exporter and the kubelet's cAdvisor), which need a GPU and a
# kubelet: fixed samples with the labels those exporters give a runtime pod.
_POD_LABELS = f'namespace="{NAMESPACE}",pod="{POD}",container="runtime"'
STAND_IN = f"""\
# TYPE DCGM_FI_DEV_GPU_UTIL gauge
DCGM_FI_DEV_GPU_UTIL{{gpu="0",UUID="GPU-0",modelName="NVIDIA H100 80GB HBM3",{_POD_LABELS}}} 87
# TYPE DCGM_FI_DEV_FB_USED gauge
DCGM_FI_DEV_FB_USED{{gpu="0",UUID="GPU-0",modelName="NVIDIA H100 80GB HBM3",{_POD_LABELS}}} 61234
# TYPE container_cpu_usage_seconds_total counter
container_cpu_usage_seconds_total{{cpu="total",{_POD_LABELS}}} 1234.5
# TYPE container_memory_working_set_bytes gauge
container_memory_working_set_bytes{{{_POD_LABELS}}} 3.2e+09
"""


@dataclass
class Run:
    prometheus: PrometheusServer
    loading_response: httpx.Response
    t_start: float = 0.0  # Prometheus's time of the first scrape of the prelude's counts
    t_loaded: float = 0.0  # ... of the load's final counts
    t_drained_seen: float = 0.0  # ... of the drain's 503s
    t_drained: float = 0.0  # SETTLE later: the rules have evaluated them
    t_down: float = 0.0  # ... of the first failed scrape after the exit
    load_seconds: float = 0.0
    probes_before: dict[str, float] = field(default_factory=dict)
    drain_responses: list[httpx.Response] = field(default_factory=list)
    stream_open_at_drain_scrape: bool = False
    exit_code: int | None = None


def _stand_in_exporter() -> ThreadingHTTPServer:
    body = STAND_IN.encode()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def _request_while_loading(server: RuntimeServer) -> httpx.Response:
    """One completion as soon as the listener answers /health, while /ready is still 503."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{server.base_url}/health", timeout=2).status_code == 200:
                break
        except httpx.TransportError:
            time.sleep(0.05)
    body = {"model": MODEL, "prompt": [5, 6, 7], "max_tokens": 2}
    return httpx.post(f"{server.base_url}{COMPLETIONS}", json=body, timeout=60)


def _send(url: str, endpoint: str, status: str) -> httpx.Response:
    ok = {"max_tokens": GENERATED_PER_OK, "ignore_eos": True}
    messages = [{"role": "user", "content": "hi"}]
    body: dict[str, Any] = {
        (COMPLETIONS, "200"): {"model": MODEL, "prompt": [5, 6, 7], **ok},
        (CHAT, "200"): {"model": MODEL, "messages": messages, **ok},
        (PREDICT, "200"): {"model": MODEL, "messages": messages, **ok},
        (COMPLETIONS, "400"): {"model": MODEL, "prompt": [5, 6, 7], "max_tokens": -1},
        (CHAT, "404"): {"model": "no-such-model", "messages": messages},
    }[(endpoint, status)]
    response = httpx.post(f"{url}{endpoint}", json=body, timeout=60)
    assert str(response.status_code) == status, (endpoint, response.text)
    return response


def _counts(prometheus: PrometheusServer, at: float | None = None) -> dict[tuple[str, ...], float]:
    return values_by(prometheus.query(f"qms_requests_total{{{RUNTIME}}}", at), "endpoint", "status")


def _sample_time(result: list[dict[str, Any]]) -> float:
    """The evaluation time of an instant query's answer (Prometheus's clock is ours)."""
    return float(result[0]["value"][0])


def _wait_until(wall_time: float) -> None:
    time.sleep(max(0.0, wall_time - time.time()))


def _stream(
    url: str, opened: threading.Event, close: threading.Event, state: dict[str, Any]
) -> None:
    body = {
        "model": MODEL,
        "prompt": [5, 6, 7],
        "max_tokens": 500,
        "ignore_eos": True,
        "stream": True,
    }
    with httpx.stream("POST", f"{url}{COMPLETIONS}", json=body, timeout=120) as response:
        state["status"] = response.status_code
        for _ in response.iter_lines():
            opened.set()
            if close.is_set():
                break
        else:
            state["finished"] = True


@pytest.fixture(scope="module")
def run(prometheus_bin: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    work = tmp_path_factory.mktemp("monitoring")
    model = work / "model"
    subprocess.run(
        [sys.executable, "-m", "qms_runtime.cli", "tiny-model", str(model), "--arch", "qwen3"],
        check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    exporter = _stand_in_exporter()
    server = RuntimeServer(
        model,
        work / "runtime.log",
        served_model_name=MODEL,
        drain_timeout_seconds=60,
        drain_idle_seconds=6,  # the product's default: the drain under test
    )
    prometheus: PrometheusServer | None = None
    try:
        loading = _request_while_loading(server)
        server.wait_ready()
        prometheus = PrometheusServer(
            prometheus_bin,
            work / "prometheus",
            {
                "qms-runtime": [
                    {
                        "targets": [f"127.0.0.1:{server.port}"],
                        "labels": {
                            "namespace": NAMESPACE,
                            "pod": POD,
                            "app_kubernetes_io_instance": SERVER,
                        },
                    }
                ],
                "exporter-stand-in": [{"targets": [f"127.0.0.1:{exporter.server_port}"]}],
            },
        )
        prometheus.wait_ready()
        result = Run(prometheus, loading)
        url = server.base_url
        prometheus.wait_for(f"up{{{RUNTIME}}} == 1", lambda r: len(r) == 1)

        # Prelude: every (endpoint, status) series exists before the measured load.
        for endpoint, status in LOAD:
            _send(url, endpoint, status)
        prelude = {key: 1.0 for key in LOAD} | {(COMPLETIONS, "503"): 1.0}
        seen = prometheus.wait_for(
            f"qms_requests_total{{{RUNTIME}}}",
            lambda r: values_by(r, "endpoint", "status") == prelude,
        )
        assert values_by(seen, "endpoint", "status") == prelude, prometheus.logs()
        result.t_start = _sample_time(seen)
        http = f'qms_http_requests_total{{{RUNTIME}, status="200"}}'
        result.probes_before = {
            key[0]: value for key, value in values_by(prometheus.query(http), "endpoint").items()
        }

        # The measured load, probes in between.
        began = time.monotonic()
        probes = [path for path, n in PROBES.items() for _ in range(n)]
        requests = [key for key, n in LOAD.items() for _ in range(n)]
        for i, (endpoint, status) in enumerate(requests):
            _send(url, endpoint, status)
            for path in probes[i :: len(requests)]:
                assert httpx.get(f"{url}{path}", timeout=10).status_code == 200
        result.load_seconds = time.monotonic() - began
        expected = {key: prelude[key] + LOAD.get(key, 0) for key in prelude}
        seen = prometheus.wait_for(
            f"qms_requests_total{{{RUNTIME}}}",
            lambda r: values_by(r, "endpoint", "status") == expected,
        )
        # Evaluated once the rules have run on the last scrape, and >= MIN_SPAN after
        # the prelude's scrape, so that rate()'s extrapolation stays within tolerance.
        result.t_loaded = max(_sample_time(seen) + SETTLE, result.t_start + MIN_SPAN)
        _wait_until(result.t_loaded + SETTLE)

        # SIGTERM with a stream in flight: new requests are still answered, with
        # Connection: close.
        opened, close, stream_state = threading.Event(), threading.Event(), {}
        streamer = threading.Thread(target=_stream, args=(url, opened, close, stream_state))
        streamer.start()
        assert opened.wait(60), stream_state
        server.terminate()
        deadline = time.monotonic() + 10
        while httpx.get(f"{url}/ready", timeout=5).status_code != 503:
            assert time.monotonic() < deadline, "readiness still true after SIGTERM"
            time.sleep(0.02)
        body = {"model": MODEL, "prompt": [5, 6, 7], "max_tokens": 2}
        result.drain_responses = [
            httpx.post(f"{url}{COMPLETIONS}", json=body, timeout=10) for _ in range(DRAIN)
        ]
        # The stream's 200 is counted when its headers go out.
        drained = expected | {(COMPLETIONS, "200"): expected[(COMPLETIONS, "200")] + 1 + DRAIN}
        seen = prometheus.wait_for(
            f"qms_requests_total{{{RUNTIME}}}",
            lambda r: values_by(r, "endpoint", "status") == drained,
            timeout=10,
        )
        result.stream_open_at_drain_scrape = not stream_state.get("finished", False)
        result.t_drained_seen = _sample_time(seen)
        close.set()
        streamer.join(60)
        # The stream's disconnect ends the drain: the process exits by itself. Rules
        # over range vectors still see the samples scraped before the exit.
        result.exit_code = server.process.wait(60)
        result.t_drained = result.t_drained_seen + SETTLE
        _wait_until(result.t_drained + SETTLE)
        down = prometheus.wait_for(f"up{{{RUNTIME}}} == 0", lambda r: len(r) == 1)
        result.t_down = _sample_time(down) if down else 0.0
        yield result
    finally:
        server.stop()
        if prometheus is not None:
            prometheus.stop()
        exporter.shutdown()


def test_a_completion_while_loading_is_a_503(run: Run) -> None:
    assert run.loading_response.status_code == 503, run.loading_response.text
    assert run.loading_response.json()["error"]["code"] == "loading"


def test_the_target_carries_the_pod_labels(run: Run) -> None:
    (up,) = run.prometheus.query('up{job="qms-runtime"}', run.t_loaded)
    labels = up["metric"]
    assert {k: labels[k] for k in ("job", "namespace", "pod", "app_kubernetes_io_instance")} == {
        "job": "qms-runtime",
        "namespace": NAMESPACE,
        "pod": POD,
        "app_kubernetes_io_instance": SERVER,
    }
    assert up["value"][1] == "1"


def test_the_inference_counter_in_prometheus_equals_the_requests_sent(run: Run) -> None:
    expected = {key: 1.0 + n for key, n in LOAD.items()} | {(COMPLETIONS, "503"): 1.0}
    assert _counts(run.prometheus, run.t_loaded) == expected
    # The stream in flight during the drain, and the requests answered while draining.
    drained = expected[(COMPLETIONS, "200")] + 1 + DRAIN
    assert _counts(run.prometheus, run.t_drained_seen) == expected | {(COMPLETIONS, "200"): drained}
    assert [(r.status_code, r.headers.get("connection")) for r in run.drain_responses] == [
        (200, "close")
    ] * DRAIN
    assert run.exit_code == 0


def test_probes_and_scrapes_are_counted_apart(run: Run) -> None:
    http = run.prometheus.query(f'qms_http_requests_total{{{RUNTIME}, status="200"}}', run.t_loaded)
    after = {key[0]: value for key, value in values_by(http, "endpoint").items()}
    assert {path: after[path] - run.probes_before.get(path, 0.0) for path in PROBES} == PROBES
    # Every scrape of the runtime is counted there, and in no inference series.
    assert after["/metrics"] > 0
    assert not run.prometheus.query(
        f'qms_requests_total{{{RUNTIME}, endpoint!~"/v1/(chat/completions|completions|predict)"}}',
        run.t_loaded,
    )


def test_recording_rules_have_series_with_the_labels_alerts_and_dashboard_use(run: Run) -> None:
    health = run.prometheus.rule_health()
    assert set(health.values()) == {"ok"}, health
    requests = run.prometheus.query("qms:requests:rate5m", run.t_loaded)
    assert {frozenset(s["metric"]) for s in requests} == {
        frozenset({"__name__", "namespace", "app_kubernetes_io_instance", "status"})
    }
    rates = values_by(requests, "namespace", "app_kubernetes_io_instance", "status")
    assert set(rates) == {(NAMESPACE, SERVER, s) for s in ("200", "400", "404", "503")}
    sent_ok = sum(n for (_, status), n in LOAD.items() if status == "200")
    _assert_rate(rates[(NAMESPACE, SERVER, "200")], sent_ok / 300)
    _assert_rate(rates[(NAMESPACE, SERVER, "400")], LOAD[(COMPLETIONS, "400")] / 300)
    assert rates[(NAMESPACE, SERVER, "503")] == 0.0  # no 503 during the load

    (tokens,) = run.prometheus.query("qms:generation_tokens:rate5m", run.t_loaded)
    assert set(tokens["metric"]) == {"__name__", "namespace", "app_kubernetes_io_instance"}
    # The token counter exists from the first scrape: the prelude's tokens count too.
    prelude_ok = sum(1 for _, status in LOAD if status == "200")
    _assert_rate(float(tokens["value"][1]), (prelude_ok + sent_ok) * GENERATED_PER_OK / 300)


def test_the_adapter_query_gives_the_pods_inference_rate(run: Run) -> None:
    # The adapter discovers the series with its seriesQuery ...
    series = run.prometheus._get("/api/v1/series", **{"match[]": adapter_rule()["seriesQuery"]})
    assert {s["pod"] for s in series} == {POD}
    assert {s["endpoint"] for s in series} == {COMPLETIONS, CHAT, PREDICT}
    # ... and asks for one pod's value with the expanded metricsQuery ([1m] window,
    # which at t_loaded covers the whole measured load and its prelude's scrape).
    assert run.t_loaded - run.t_start < 55, "the load outlasted the adapter's 1m window"
    sent = sum(LOAD.values())
    (sample,) = run.prometheus.query(adapter_query(NAMESPACE, [POD]), run.t_loaded)
    assert sample["metric"] == {"pod": POD}
    _assert_rate(float(sample["value"][1]), sent / 60)
    # Several pods: one value per pod that has series.
    several = run.prometheus.query(
        adapter_query(NAMESPACE, [POD, "tiny-5f7d9c8b6d-zzzzz"]), run.t_loaded
    )
    assert [s["metric"] for s in several] == [{"pod": POD}]
    print(
        f"\nadapter requests_per_second for {POD}: {float(sample['value'][1]):.4f}/s through "
        f"Prometheus; sent {sent} inference requests in {run.load_seconds:.1f}s -> "
        f"{sent / 60:.4f}/s over the 1m window; probes and scrapes in the same time: "
        f"{sum(PROBES.values())} + the scrapes, none of them counted"
    )


def _dashboard_exprs() -> list[tuple[str, str]]:
    import json

    board = json.loads(DASHBOARD.read_text())
    return [
        (panel["title"], target["expr"])
        for panel in board["panels"]
        for target in panel.get("targets", [])
    ]


def _grafana(expr: str) -> str:
    # One 500 ms-scraped server: $__rate_interval as Grafana gives it for a 1h view.
    return (
        expr.replace("$namespace", NAMESPACE)
        .replace("$server", SERVER)
        .replace("$__rate_interval", "1m")
    )


@pytest.mark.parametrize(("title", "expr"), _dashboard_exprs(), ids=lambda v: v[:60])
def test_every_dashboard_panel_returns_data(run: Run, title: str, expr: str) -> None:
    result = run.prometheus.query(_grafana(expr), run.t_loaded)
    assert result, f"panel {title!r}: no data for {_grafana(expr)}"


def test_the_dashboard_variables_list_the_server() -> None:
    import json

    board = json.loads(DASHBOARD.read_text())
    queries = {v["name"]: v["definition"] for v in board["templating"]["list"] if "definition" in v}
    assert queries == {
        "namespace": 'label_values(qms_requests_total{job="qms-runtime"}, namespace)',
        "server": 'label_values(qms_requests_total{job="qms-runtime", namespace="$namespace"}, '
        "app_kubernetes_io_instance)",
    }


def test_the_dashboard_variable_queries_find_the_server(run: Run) -> None:
    assert run.prometheus.label_values("namespace", 'qms_requests_total{job="qms-runtime"}') == [
        NAMESPACE
    ]
    match = f'qms_requests_total{{job="qms-runtime", namespace="{NAMESPACE}"}}'
    assert run.prometheus.label_values("app_kubernetes_io_instance", match) == [SERVER]


def test_the_error_rate_alert_stays_quiet_through_a_drain(run: Run) -> None:
    """A drain answers what arrives (issue 27): no 5xx, so the alert's expression has no
    series while the stream and the drain's requests were scraped (its firing on 5xx
    is promtool's unit test, tests/monitoring/*.test.yaml)."""
    assert run.stream_open_at_drain_scrape, "the stream ended before the drain was scraped"
    (expr,) = [r["expr"] for r in prometheus_rules.rules() if r.get("alert") == "QMSHighErrorRate"]
    assert run.prometheus.query(expr, run.t_drained) == []


def test_a_runtime_gone_is_up_0_and_absent_fires(run: Run) -> None:
    assert run.t_down > 0, "Prometheus never saw the stopped runtime as down"
    (expr,) = [
        r["expr"] for r in prometheus_rules.rules() if r.get("alert") == "QMSRuntimeTargetsAbsent"
    ]
    assert run.prometheus.query(expr, run.t_loaded) == []
    (absent,) = run.prometheus.query(expr, run.t_down)
    assert absent["metric"] == {} and absent["value"][1] == "1"


def _assert_rate(measured: float, sent_per_second: float) -> None:
    """Prometheus's rate vs the client's count: never below, at most RATE_TOLERANCE above."""
    low, high = sent_per_second * (1 - 1e-9), sent_per_second * (1 + RATE_TOLERANCE)
    assert low <= measured <= high, (measured, sent_per_second)
