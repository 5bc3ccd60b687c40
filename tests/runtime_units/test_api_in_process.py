"""The API layer in process, over a FAKE backend (qms_testkit.fake_backend): no model, no
subprocess. The real app, routes, boundary, protocol, serving, the tiny model's own
tokenizer and chat template, and the one event path (api/serve/events.py) run; the
backend answers a scripted token sequence. The real-model tests stay as they are.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from qms_runtime.finish import after_parsing, after_tokens
from qms_runtime.metrics import RuntimeMetrics
from qms_testkit.bad_requests import CASES, Case
from qms_testkit.fake_backend import FakeBackend, fake_app
from qms_testkit.prom import sample_value
from qms_testkit.serving import API_KEY, auth

pytestmark = pytest.mark.runtime

MODEL = "tiny-qwen3"
EOS = 2  # the tiny tokenizer's <|im_end|>, the model's end of sequence
WORDS = " the reconcile loop applies every child"


@pytest.fixture(scope="module")
def model_facts(qwen3_dir: Path) -> tuple[Path, int, list[int]]:
    from transformers import AutoTokenizer

    config = json.loads((qwen3_dir / "config.json").read_text())
    script = list(AutoTokenizer.from_pretrained(str(qwen3_dir)).encode(WORDS))
    return qwen3_dir, int(config["max_position_embeddings"]), script


@pytest.fixture
def backend(model_facts: tuple[Path, int, list[int]]) -> FakeBackend:
    return FakeBackend(model_facts[2], (EOS,), capacity=4)


@pytest.fixture
def app(
    model_facts: tuple[Path, int, list[int]], backend: FakeBackend, tmp_path: Path
) -> Iterator[tuple[TestClient, RuntimeMetrics]]:
    key_file = tmp_path / "key"
    key_file.write_text(API_KEY)
    model_dir, max_len, _ = model_facts
    with fake_app(
        model_dir, backend, max_len, served_model_name=MODEL, api_key_file=key_file
    ) as made:
        yield made


def _chat(**fields: Any) -> dict[str, Any]:
    return {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], **fields}


# ------------------------------------------------------------------- the corpus
@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_bad_request_in_process(app: tuple[TestClient, RuntimeMetrics], case: Case) -> None:
    """The same corpus, statuses and bodies as test_bad_requests' real server."""
    client, _ = app
    headers = dict(case.headers)
    content: bytes | None = None
    if isinstance(case.body, bytes):
        content = case.body
        headers["Content-Type"] = "application/json"
    elif case.body is not None:
        content = json.dumps(case.body).encode()
        headers["Content-Type"] = "application/json"
    response = client.request(case.method, case.path, content=content, headers=headers)
    assert response.status_code == case.status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert isinstance(error["message"], str) and error["message"]
    assert (error["type"], error["param"], error["code"]) == (case.type, case.param, case.code)


# ------------------------------------------------------------------ generation
def test_chat_answers_the_backends_tokens(
    app: tuple[TestClient, RuntimeMetrics],
    backend: FakeBackend,
    model_facts: tuple[Path, int, list[int]],
) -> None:
    from transformers import AutoTokenizer

    client, _ = app
    script = model_facts[2]
    response = client.post("/v1/chat/completions", json=_chat(), headers=auth())
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["choices"][0]["message"] == {"role": "assistant", "content": WORDS}
    assert body["choices"][0]["finish_reason"] == "length"  # the script has no EOS
    tokenizer = AutoTokenizer.from_pretrained(str(model_facts[0]))
    expected_prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "hi"}], add_generation_prompt=True, tokenize=False
    )
    assert backend.prompts[0].token_ids == tokenizer.encode(expected_prompt)
    assert backend.prompts[0].media_inputs is None
    assert body["usage"] == {
        "prompt_tokens": len(backend.prompts[0].token_ids),
        "completion_tokens": len(script),
        "total_tokens": len(backend.prompts[0].token_ids) + len(script),
    }


def test_eos_ends_with_stop_and_max_tokens_with_length(
    app: tuple[TestClient, RuntimeMetrics], backend: FakeBackend
) -> None:
    client, _ = app
    backend.script = [*backend.script[:3], EOS, *backend.script[3:]]
    stopped = client.post("/v1/chat/completions", json=_chat(), headers=auth()).json()
    assert stopped["choices"][0]["finish_reason"] == "stop"
    assert stopped["usage"]["completion_tokens"] == 4  # EOS counts, its text is not shown
    cut = client.post("/v1/chat/completions", json=_chat(max_tokens=2), headers=auth()).json()
    assert (cut["choices"][0]["finish_reason"], cut["usage"]["completion_tokens"]) == (
        "length",
        2,
    )
    ignored = client.post(
        "/v1/chat/completions", json=_chat(ignore_eos=True, max_tokens=6), headers=auth()
    ).json()
    assert (ignored["choices"][0]["finish_reason"], ignored["usage"]["completion_tokens"]) == (
        "length",
        6,
    )


def test_streaming_equals_non_streaming(app: tuple[TestClient, RuntimeMetrics]) -> None:
    client, _ = app
    body = _chat(n=2, stream=True, stream_options={"include_usage": True})
    with client.stream("POST", "/v1/chat/completions", json=body, headers=auth()) as response:
        assert response.status_code == 200
        lines = [line for line in response.iter_lines() if line.startswith("data: ")]
    assert lines[-1] == "data: [DONE]"
    chunks = [json.loads(line[6:]) for line in lines[:-1]]
    texts = {0: "", 1: ""}
    reasons: dict[int, str] = {}
    for chunk in chunks[:-1]:
        for choice in chunk["choices"]:
            texts[choice["index"]] += choice["delta"].get("content") or ""
            if choice["finish_reason"]:
                reasons[choice["index"]] = choice["finish_reason"]
    assert texts == {0: WORDS, 1: WORDS}
    assert reasons == {0: "length", 1: "length"}
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] > 0


def test_stop_sequence_cuts_the_text(
    app: tuple[TestClient, RuntimeMetrics], backend: FakeBackend
) -> None:
    client, _ = app
    body = client.post("/v1/chat/completions", json=_chat(stop=["loop"]), headers=auth()).json()
    assert body["choices"][0]["message"]["content"] == " the reconcile "
    assert body["choices"][0]["finish_reason"] == "stop"
    assert backend.cancelled == 1  # the rest of the sequence was cancelled


def test_overload_is_429_with_retry_after(
    app: tuple[TestClient, RuntimeMetrics], backend: FakeBackend
) -> None:
    client, _ = app
    held = backend.admit(3)
    response = client.post("/v1/chat/completions", json=_chat(n=2), headers=auth())
    assert response.status_code == 429
    assert response.headers["retry-after"] == "1"
    assert response.json()["error"]["code"] == "server_overloaded"
    held.release()
    assert client.post("/v1/chat/completions", json=_chat(n=2), headers=auth()).status_code == 200
    assert backend.admitted == 0  # every admission was released


def test_per_sequence_metrics_are_observed_once(
    app: tuple[TestClient, RuntimeMetrics], model_facts: tuple[Path, int, list[int]]
) -> None:
    client, metrics = app
    tokens = len(model_facts[2])
    assert client.post("/v1/chat/completions", json=_chat(n=3), headers=auth()).status_code == 200
    text = metrics.render().decode()
    assert sample_value(text, "qms_generation_tokens_total") == 3 * tokens
    assert sample_value(text, "qms_time_to_first_token_seconds_count") == 3
    assert sample_value(text, "qms_inter_token_latency_seconds_count") == 3 * (tokens - 1)
    assert sample_value(text, "qms_e2e_request_latency_seconds_count") == 3


def test_every_finish_reason_is_decided_in_one_place() -> None:
    assert after_tokens([5, 2], (2,)) == "stop"  # end of sequence
    assert after_tokens([5, 6], (2,)) == "length"
    assert after_tokens([], (2,)) == "length"
    assert after_tokens([5, 2], (2,), ignore_eos=True) == "length"
    assert after_tokens([5, 7], (2,), stop_token_ids=(7,)) == "stop"  # a stop token
    assert after_tokens([5, 7], (2,), stop_token_ids=(7,), ignore_eos=True) == "stop"
    assert after_parsing("stop", has_calls=True) == "tool_calls"
    assert after_parsing("length", has_calls=True) == "length"  # a cut call stays a cut
    assert after_parsing("stop", has_calls=False) == "stop"
    assert after_parsing(None, has_calls=True) is None
