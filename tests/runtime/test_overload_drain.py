"""Overload (429 + Retry-After, nothing dropped) and SIGTERM drain (all finish, exit 0)."""

from __future__ import annotations

import contextlib
import json
import re
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from openai import OpenAI

from qms_testkit.processes import start_server
from qms_testkit.serving import metric_value

pytestmark = pytest.mark.runtime


def _completion(model: str, max_tokens: int, stream: bool = False) -> dict[str, Any]:
    return {
        "model": model,
        "prompt": "busy",
        "max_tokens": max_tokens,
        "ignore_eos": True,
        "stream": stream,
        "return_token_ids": True,
    }


def test_overload_answers_429_and_completes_the_rest(qwen3_dir: Path, tmp_path: Path) -> None:
    server = start_server(qwen3_dir, tmp_path, max_batch_size=2, max_queued_requests=2)
    try:
        url, total = server.base_url, 12
        barrier = threading.Barrier(total)
        results: list[httpx.Response] = []
        lock = threading.Lock()

        def send() -> None:
            barrier.wait()
            response = httpx.post(
                f"{url}/v1/completions", json=_completion(qwen3_dir.name, 150), timeout=120
            )
            with lock:
                results.append(response)

        threads = [threading.Thread(target=send) for _ in range(total)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

        ok = [r for r in results if r.status_code == 200]
        rejected = [r for r in results if r.status_code == 429]
        assert (len(ok), len(rejected), len(results)) == (4, 8, total)
        for response in ok:
            assert response.json()["usage"]["completion_tokens"] == 150
            assert len(response.json()["choices"][0]["token_ids"]) == 150
        for response in rejected:
            assert response.headers["retry-after"] == "1"
            assert response.json()["error"]["code"] == "server_overloaded"
            assert response.json()["error"]["type"] == "rate_limit_error"
        counted = {
            status: metric_value(
                url, "qms_requests_total", {"endpoint": "/v1/completions", "status": status}
            )
            for status in ("200", "429")
        }
        assert counted == {"200": 4.0, "429": 8.0}
        # Capacity is back once the batch drained.
        after = httpx.post(f"{url}/v1/completions", json=_completion(qwen3_dir.name, 2), timeout=60)
        assert after.status_code == 200
    finally:
        assert server.stop() == 0


def _stream_tokens(url: str, model: str, started: threading.Event, out: list[Any]) -> None:
    tokens: list[int] = []
    finish = None
    done = False
    with httpx.stream(
        "POST", f"{url}/v1/completions", json=_completion(model, 120, stream=True), timeout=120
    ) as response:
        for line in response.iter_lines():
            if not line.startswith("data: "):
                continue
            started.set()
            if line == "data: [DONE]":
                done = True
                continue
            choice = json.loads(line[6:])["choices"][0]
            tokens.extend(choice["token_ids"])
            finish = choice["finish_reason"] or finish
    out.append((response.status_code, len(tokens), finish, done))


def test_sigterm_drains_in_flight_streams_and_exits_0(qwen3_dir: Path, tmp_path: Path) -> None:
    """In-flight streams finish; a keep-alive client (the openai client's own pool, no
    retries) is still answered on its connection, told to reconnect (Connection: close);
    /ready says draining; the termination message counts what was drained; exit 0."""
    last_words = tmp_path / "termination-log"
    server = start_server(
        qwen3_dir,
        tmp_path,
        drain_timeout_seconds=60,
        drain_idle_seconds=6,  # the product's default: what a keep-alive client meets
        termination_log_path=last_words,
    )
    url = server.base_url
    client = OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
    before = client.completions.with_raw_response.create(
        model=qwen3_dir.name, prompt="busy", max_tokens=2
    )
    assert before.headers.get("connection") != "close"  # kept alive in the pool
    outcomes: list[Any] = []
    events = [threading.Event() for _ in range(8)]
    threads = [
        threading.Thread(target=_stream_tokens, args=(url, qwen3_dir.name, event, outcomes))
        for event in events
    ]
    for thread in threads:
        thread.start()
    for event in events:
        assert event.wait(60)
    assert metric_value(url, "vllm:num_requests_running") == 8
    server.terminate()
    for _ in range(100):  # the signal is handled asynchronously; readiness flips at once after
        ready = httpx.get(f"{url}/ready", timeout=10)
        if ready.status_code == 503:
            break
    assert ready.json()["error"]["code"] == "draining"
    late = [
        # ignore_eos: random weights sample an end-of-text within 2 tokens now and then,
        # which answered "stop" (a clean-clone run saw it); "length" is then certain.
        client.completions.with_raw_response.create(
            model=qwen3_dir.name, prompt="late", max_tokens=2, extra_body={"ignore_eos": True}
        )
        for _ in range(3)
    ]
    assert [(r.http_response.status_code, r.headers.get("connection")) for r in late] == [
        (200, "close")
    ] * 3
    assert [r.parse().choices[0].finish_reason for r in late] == ["length"] * 3
    for thread in threads:
        thread.join(120)
    assert outcomes == [(200, 120, "length", True)] * 8

    def probe_like_a_kubelet() -> None:  # every 0.5 s until the process is gone
        while server.process.poll() is None:
            with contextlib.suppress(httpx.TransportError):
                httpx.get(f"{url}/ready", timeout=2)
            time.sleep(0.5)

    prober = threading.Thread(target=probe_like_a_kubelet)
    prober.start()
    assert server.process.wait(60) == 0
    prober.join(10)
    assert server.stop() == 0
    said = re.fullmatch(
        r"qms-runtime: drained (\d+) requests in (\d+\.\d)s after SIGTERM, exit 0",
        last_words.read_text().rstrip("\n"),
    )
    assert said is not None, last_words.read_text()
    # The 8 streams and the 3 late answers; probes (/ready, /health, /metrics) come every
    # few seconds whatever the state and count neither here nor in the wait.
    assert int(said.group(1)) == 11
