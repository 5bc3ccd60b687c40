"""Through a real uvicorn process and the official `openai` client."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from qms_testkit.processes import RuntimeServer
from qms_testkit.serving import API_KEY, auth, metric_value

pytestmark = pytest.mark.runtime

MODEL = "tiny-qwen3"
QUESTION = [{"role": "user", "content": "What is a Kubernetes operator?"}]


@pytest.fixture(scope="module")
def client(main_server: RuntimeServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{main_server.base_url}/v1", api_key=API_KEY, max_retries=0)


def _prompt_len(qwen3_dir: Path, messages: list[dict[str, str]]) -> int:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(qwen3_dir))
    text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    return len(tokenizer.encode(text, add_special_tokens=False))


def test_models_lists_the_served_name(client: openai.OpenAI) -> None:
    assert [model.id for model in client.models.list()] == [MODEL]


def test_chat_max_tokens_and_usage(client: openai.OpenAI, qwen3_dir: Path) -> None:
    reply = client.chat.completions.create(
        model=MODEL, messages=QUESTION, max_tokens=7, temperature=0, extra_body={"ignore_eos": True}
    )  # type: ignore[arg-type]
    prompt_tokens = _prompt_len(qwen3_dir, QUESTION)
    assert reply.object == "chat.completion"
    assert reply.model == MODEL
    assert reply.choices[0].finish_reason == "length"
    assert reply.choices[0].message.role == "assistant"
    assert reply.usage is not None
    assert (reply.usage.prompt_tokens, reply.usage.completion_tokens) == (prompt_tokens, 7)
    assert reply.usage.total_tokens == prompt_tokens + 7


def test_chat_streaming_equals_non_streaming(client: openai.OpenAI) -> None:
    kwargs = dict(model=MODEL, messages=QUESTION, max_tokens=12, temperature=0)
    full = client.chat.completions.create(**kwargs)  # type: ignore[call-overload]
    chunks = list(
        client.chat.completions.create(
            **kwargs, stream=True, stream_options={"include_usage": True}
        )  # type: ignore[call-overload]
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == full.choices[0].message.content
    assert chunks[0].choices[0].delta.role == "assistant"
    finishes = [
        c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason
    ]
    assert finishes == [full.choices[0].finish_reason]
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == full.usage.completion_tokens  # type: ignore[union-attr]


def test_stop_sequence_cuts_the_text(client: openai.OpenAI) -> None:
    base = dict(model=MODEL, max_tokens=24, temperature=0, extra_body={"ignore_eos": True})
    free = client.completions.create(prompt="The operator reconciles", **base)  # type: ignore[call-overload]
    text = free.choices[0].text
    stop = text[len(text) // 2 : len(text) // 2 + 3]
    assert len(stop) == 3
    stopped = client.completions.create(prompt="The operator reconciles", stop=[stop], **base)  # type: ignore[call-overload]
    assert stopped.choices[0].text == text[: text.index(stop)]
    assert stopped.choices[0].finish_reason == "stop"
    streamed = client.completions.create(
        prompt="The operator reconciles", stop=[stop], stream=True, **base
    )  # type: ignore[call-overload]
    chunks = list(streamed)
    assert "".join(c.choices[0].text for c in chunks) == text[: text.index(stop)]
    assert chunks[-1].choices[0].finish_reason == "stop"


def test_completions_batch_of_prompts_and_n(client: openai.OpenAI) -> None:
    reply = client.completions.create(
        model=MODEL, prompt=["alpha", "beta gamma"], n=2, max_tokens=5, temperature=0,
        extra_body={"ignore_eos": True},
    )  # fmt: skip
    assert [choice.index for choice in reply.choices] == [0, 1, 2, 3]
    assert reply.choices[0].text == reply.choices[1].text  # greedy: both samples agree
    assert reply.usage is not None
    assert reply.usage.completion_tokens == 20


def test_sampling_parameters_are_accepted(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(
        model=MODEL, messages=QUESTION, max_tokens=6, temperature=0.8, top_p=0.9, seed=7,
        extra_body={"ignore_eos": True},
    )  # fmt: skip
    assert reply.usage is not None
    assert reply.usage.completion_tokens == 6


def test_predict_answers_like_chat(main_server: RuntimeServer) -> None:
    body = {"model": MODEL, "messages": QUESTION, "max_tokens": 9, "temperature": 0}
    chat = httpx.post(f"{main_server.base_url}/v1/chat/completions", json=body, headers=auth())
    predict = httpx.post(f"{main_server.base_url}/v1/predict", json=body, headers=auth())
    assert predict.status_code == chat.status_code == 200
    assert predict.json()["choices"] == chat.json()["choices"]
    assert predict.json()["object"] == "chat.completion"


def test_metrics_parse_and_carry_the_contract_names(main_server: RuntimeServer) -> None:
    text = httpx.get(f"{main_server.base_url}/metrics").text
    samples = {s.name for family in text_string_to_metric_families(text) for s in family.samples}
    for name in (
        "vllm:num_requests_running",
        "vllm:num_requests_waiting",
        "vllm:kv_cache_usage_perc",
        "qms_requests_total",
        "qms_prompt_tokens_total",
        "qms_generation_tokens_total",
        "qms_time_to_first_token_seconds_bucket",
        "qms_inter_token_latency_seconds_bucket",
        "qms_e2e_request_latency_seconds_count",
        "qms_batch_size_bucket",
    ):
        assert name in samples, name


def test_counters_move_by_exact_amounts(main_server: RuntimeServer) -> None:
    url = main_server.base_url
    labels = {"endpoint": "/v1/completions", "status": "200"}
    before = [
        metric_value(url, "qms_requests_total", labels),
        metric_value(url, "qms_generation_tokens_total"),
        metric_value(url, "qms_prompt_tokens_total"),
    ]
    body = {"model": MODEL, "prompt": [5, 6, 7, 8], "max_tokens": 11, "ignore_eos": True}
    assert httpx.post(f"{url}/v1/completions", json=body, headers=auth()).status_code == 200
    after = [
        metric_value(url, "qms_requests_total", labels),
        metric_value(url, "qms_generation_tokens_total"),
        metric_value(url, "qms_prompt_tokens_total"),
    ]
    assert [a - b for a, b in zip(after, before, strict=True)] == [1, 11, 4]


def test_disconnect_mid_stream_frees_the_slot(main_server: RuntimeServer) -> None:
    url = main_server.base_url
    body = {"model": MODEL, "prompt": "long", "max_tokens": 400, "ignore_eos": True, "stream": True}
    with (
        httpx.Client(timeout=30) as http,
        http.stream("POST", f"{url}/v1/completions", json=body, headers=auth()) as response,
    ):
        lines = response.iter_lines()
        assert next(lines).startswith("data: ")
        assert metric_value(url, "vllm:num_requests_running") == 1
    # Leaving the block closed the connection mid-stream.

    deadline = time.monotonic() + 1.0
    while metric_value(url, "vllm:num_requests_running") != 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert metric_value(url, "vllm:num_requests_running") == 0
    assert metric_value(url, "vllm:num_requests_waiting") == 0
    generated = metric_value(url, "qms_generation_tokens_total")
    time.sleep(0.3)
    assert metric_value(url, "qms_generation_tokens_total") == generated  # nothing generates on
