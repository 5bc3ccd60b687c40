"""The request counters through a real server: `qms_requests_total` counts inference only.

Kubelet probes (`/health`, `/ready`), Prometheus scrapes (`/metrics`) and the other
endpoints go to `qms_http_requests_total`, which counts every HTTP request; the HPA's
requests-per-second and the error-rate alert read `qms_requests_total`.
"""

from __future__ import annotations

from collections import Counter

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from qms_testkit.processes import RuntimeServer
from qms_testkit.serving import auth

pytestmark = pytest.mark.runtime

MODEL = "tiny-qwen3"


def _counts(text: str, name: str) -> Counter[tuple[str, str]]:
    out: Counter[tuple[str, str]] = Counter()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                out[(sample.labels["endpoint"], sample.labels["status"])] = int(sample.value)
    return out


def test_probes_and_scrapes_are_not_inference_requests(main_server: RuntimeServer) -> None:
    url = main_server.base_url
    before = httpx.get(f"{url}/metrics").text
    for _ in range(3):
        assert httpx.get(f"{url}/health").status_code == 200
    for _ in range(2):
        assert httpx.get(f"{url}/ready").status_code == 200
    assert httpx.get(f"{url}/v1/models", headers=auth()).status_code == 200
    assert httpx.get(f"{url}/nowhere").status_code == 404
    ok = {"model": MODEL, "prompt": [5, 6, 7], "max_tokens": 2}
    answer = httpx.post(f"{url}/v1/completions", json=ok, headers=auth(), timeout=60)
    assert answer.status_code == 200
    bad = {**ok, "max_tokens": -1}
    assert httpx.post(f"{url}/v1/completions", json=bad, headers=auth()).status_code == 400
    assert httpx.post(f"{url}/v1/completions", json=ok).status_code == 401
    unknown = {"model": "no-such-model", "messages": [{"role": "user", "content": "hi"}]}
    assert httpx.post(f"{url}/v1/chat/completions", json=unknown, headers=auth()).status_code == 404
    after = httpx.get(f"{url}/metrics").text

    inference = _counts(after, "qms_requests_total")
    inference.subtract(_counts(before, "qms_requests_total"))
    assert +inference == {
        ("/v1/completions", "200"): 1,
        ("/v1/completions", "400"): 1,
        ("/v1/completions", "401"): 1,
        ("/v1/chat/completions", "404"): 1,
    }
    endpoints = {endpoint for endpoint, _ in _counts(after, "qms_requests_total")}
    assert endpoints <= {"/v1/chat/completions", "/v1/completions", "/v1/predict"}

    http = _counts(after, "qms_http_requests_total")
    http.subtract(_counts(before, "qms_http_requests_total"))
    assert +http == {
        ("/health", "200"): 3,
        ("/ready", "200"): 2,
        ("/metrics", "200"): 1,  # the scrape that read `before` (counted after it rendered)
        ("/v1/models", "200"): 1,
        ("other", "404"): 1,
        ("/v1/completions", "200"): 1,
        ("/v1/completions", "400"): 1,
        ("/v1/completions", "401"): 1,
        ("/v1/chat/completions", "404"): 1,
    }
