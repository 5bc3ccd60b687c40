"""The corpus of bad requests (qms_testkit.bad_requests) against a real server: each gets
its exact status and an OpenAI error body."""

from __future__ import annotations

import json

import httpx
import pytest

from qms_testkit.bad_requests import CASES, CHAT, Case, chat
from qms_testkit.processes import RuntimeServer
from qms_testkit.serving import API_KEY, auth, metric_value

pytestmark = pytest.mark.runtime


def test_corpus_is_large_enough() -> None:
    assert len(CASES) >= 25
    assert len({case.name for case in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_bad_request(main_server: RuntimeServer, case: Case) -> None:
    headers = dict(case.headers)
    content: bytes | None
    if isinstance(case.body, bytes):
        content = case.body
        headers["Content-Type"] = "application/json"
    elif case.body is None:
        content = None
    else:
        content = json.dumps(case.body).encode()
        headers["Content-Type"] = "application/json"
    response = httpx.request(
        case.method, main_server.base_url + case.path, content=content, headers=headers, timeout=30
    )
    assert response.status_code == case.status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert isinstance(error["message"], str) and error["message"]
    assert (error["type"], error["param"], error["code"]) == (case.type, case.param, case.code)


def test_server_still_serves_after_the_corpus(main_server: RuntimeServer) -> None:
    url = main_server.base_url
    errors_400 = metric_value(url, "qms_requests_total", {"endpoint": CHAT, "status": "400"})
    assert errors_400 >= sum(1 for c in CASES if c.path == CHAT and c.status == 400)
    response = httpx.post(
        f"{url}{CHAT}", json=chat(max_tokens=3, ignore_eos=True), headers=auth(), timeout=30
    )
    assert response.status_code == 200
    assert response.json()["usage"]["completion_tokens"] == 3
    assert httpx.get(f"{url}/health").status_code == 200
    assert httpx.get(f"{url}/ready").status_code == 200
    assert metric_value(url, "vllm:num_requests_running") == 0
    assert API_KEY not in main_server.logs()
