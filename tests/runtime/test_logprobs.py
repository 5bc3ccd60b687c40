"""Log-probabilities, `echo` and the tokenizer endpoints.

In process over the FAKE backend (qms_testkit.fake_backend: scripted tokens, scripted scores)
for the response shapes; through a real server on the tiny Qwen3 model for the values:
the prompt's log-probabilities equal a plain transformers forward of the same model,
also while other sequences are being generated (the scoring forward runs between two
batch steps).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from fastapi.testclient import TestClient

from qms_runtime.metrics import RuntimeMetrics
from qms_testkit.fake_backend import FakeBackend, fake_app
from qms_testkit.processes import RuntimeServer
from qms_testkit.serving import API_KEY, auth

pytestmark = pytest.mark.runtime

MODEL = "tiny-qwen3"
EOS = 2
PROMPT = [40, 41, 42, 43]
SCRIPT = [50, 51, 52]


@pytest.fixture(scope="module")
def tokenizer(qwen3_dir: Path) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(qwen3_dir))


@pytest.fixture
def backend() -> FakeBackend:
    return FakeBackend(SCRIPT, (EOS,), capacity=4)


@pytest.fixture
def client(qwen3_dir: Path, backend: FakeBackend) -> Iterator[TestClient]:
    app: tuple[TestClient, RuntimeMetrics]
    with fake_app(qwen3_dir, backend, 512, served_model_name=MODEL) as app:
        yield app[0]


def _text(tokenizer: Any, ids: list[int]) -> str:
    return str(tokenizer.decode(ids, skip_special_tokens=True))


def _piece(tokenizer: Any, token: int) -> str:
    return str(tokenizer.decode([token], skip_special_tokens=False))


def _legacy(tokenizer: Any, ids: list[int], first: int, top: int) -> dict[str, Any]:
    """What the fake's scores look like in the legacy shape: position i (counted in
    the scored sequence from `first`) has -i/10; alternatives id+j at -i/10 - j/2."""
    tokens = [_piece(tokenizer, t) for t in ids]
    offsets = [sum(len(t) for t in tokens[:i]) for i in range(len(tokens))]
    logprobs: list[float | None] = []
    tops: list[dict[str, float] | None] = []
    for i, token in enumerate(ids, start=first):
        if i == 0:
            logprobs.append(None)
            tops.append(None)
            continue
        logprobs.append(-i / 10)
        entry = {_piece(tokenizer, token + j): -i / 10 - 0.5 * j for j in range(top)}
        entry.setdefault(_piece(tokenizer, token), -i / 10)
        tops.append(entry)
    return {
        "tokens": tokens,
        "token_logprobs": logprobs,
        "top_logprobs": tops,
        "text_offset": offsets,
    }


# ------------------------------------------------------------- shapes, in process
def test_echo_with_logprobs_prepends_the_prompt(
    client: TestClient, backend: FakeBackend, tokenizer: Any
) -> None:
    body = {"model": MODEL, "prompt": PROMPT, "max_tokens": 2, "echo": True, "logprobs": 2}
    answer = client.post("/v1/completions", json=body).json()
    (choice,) = answer["choices"]
    assert choice["text"] == _text(tokenizer, PROMPT) + _text(tokenizer, SCRIPT[:2])
    assert choice["logprobs"] == _legacy(tokenizer, PROMPT + SCRIPT[:2], 0, 2)
    # One scoring forward over prompt + generated: the engine produced no logprobs.
    assert backend.scored == [PROMPT + SCRIPT[:2]]
    assert answer["usage"] == {"prompt_tokens": 4, "completion_tokens": 2, "total_tokens": 6}


def test_logprobs_without_echo_are_the_generated_tokens(
    client: TestClient, backend: FakeBackend, tokenizer: Any
) -> None:
    body = {"model": MODEL, "prompt": PROMPT, "max_tokens": 3, "logprobs": 0}
    (choice,) = client.post("/v1/completions", json=body).json()["choices"]
    assert choice["text"] == _text(tokenizer, SCRIPT)
    assert choice["logprobs"] == _legacy(tokenizer, SCRIPT, len(PROMPT), 0)


def test_max_tokens_zero_with_echo_scores_the_prompt_alone(
    client: TestClient, backend: FakeBackend, tokenizer: Any
) -> None:
    body = {"model": MODEL, "prompt": [PROMPT, PROMPT[:2]], "max_tokens": 0, "echo": True}
    answer = client.post("/v1/completions", json={**body, "logprobs": 1}).json()
    assert [c["text"] for c in answer["choices"]] == [
        _text(tokenizer, PROMPT),
        _text(tokenizer, PROMPT[:2]),
    ]
    assert [c["finish_reason"] for c in answer["choices"]] == ["length", "length"]
    assert [c["logprobs"] for c in answer["choices"]] == [
        _legacy(tokenizer, PROMPT, 0, 1),
        _legacy(tokenizer, PROMPT[:2], 0, 1),
    ]
    assert backend.prompts == []  # nothing generated
    assert answer["usage"]["completion_tokens"] == 0
    plain = client.post("/v1/completions", json=body).json()  # echo without logprobs
    assert [c["logprobs"] for c in plain["choices"]] == [None, None]
    assert plain["choices"][0]["text"] == _text(tokenizer, PROMPT)


def test_echo_of_a_text_prompt_is_the_text_as_sent(client: TestClient) -> None:
    body = {"model": MODEL, "prompt": "the loop", "max_tokens": 1, "echo": True}
    (choice,) = client.post("/v1/completions", json=body).json()["choices"]
    assert choice["text"].startswith("the loop")


def test_streamed_echo_sends_the_prompt_first(
    client: TestClient, backend: FakeBackend, tokenizer: Any
) -> None:
    body = {"model": MODEL, "prompt": PROMPT, "max_tokens": 2, "echo": True, "logprobs": 1}
    with client.stream("POST", "/v1/completions", json={**body, "stream": True}) as response:
        lines = [line for line in response.iter_lines() if line.startswith("data: {")]
    chunks = [json.loads(line[len("data: ") :])["choices"][0] for line in lines]
    assert chunks[0]["text"] == _text(tokenizer, PROMPT)
    assert chunks[0]["logprobs"] == _legacy(tokenizer, PROMPT, 0, 1)
    assert "".join(c["text"] for c in chunks) == _text(tokenizer, PROMPT + SCRIPT[:2])
    # The fake engine yields no generated logprobs: streamed deltas carry none.
    assert [c["logprobs"] for c in chunks[1:]] == [None] * (len(chunks) - 1)


def test_chat_logprobs_shape(client: TestClient, tokenizer: Any) -> None:
    body = {
        "model": MODEL,
        "messages": [{"role": "user", "content": "hi"}],
        "max_tokens": 2,
        "logprobs": True,
        "top_logprobs": 2,
    }
    answer = client.post("/v1/chat/completions", json=body).json()
    prompt_len = answer["usage"]["prompt_tokens"]
    content = answer["choices"][0]["logprobs"]["content"]
    expected = []
    for i, token in enumerate(SCRIPT[:2], start=prompt_len):
        text = _piece(tokenizer, token)
        alternatives = []
        for j in range(2):
            alt = _piece(tokenizer, token + j)
            alternatives.append(
                {"token": alt, "logprob": -i / 10 - 0.5 * j, "bytes": list(alt.encode())}
            )
        item = {"token": text, "logprob": -i / 10, "bytes": list(text.encode())}
        expected.append({**item, "top_logprobs": alternatives})
    assert content == expected
    plain = client.post("/v1/chat/completions", json={**body, "logprobs": False, "top_logprobs": 0})
    assert plain.json()["choices"][0]["logprobs"] is None


# ------------------------------------------------------------ tokenizer endpoints
def test_tokenize_prompt_and_messages(client: TestClient, tokenizer: Any) -> None:
    answer = client.post("/tokenize", json={"model": MODEL, "prompt": "the loop"}).json()
    ids = tokenizer.encode("the loop")
    assert answer == {"count": len(ids), "max_model_len": 512, "tokens": ids, "token_strs": None}
    strs = client.post("/tokenize", json={"prompt": "the loop", "return_token_strs": True}).json()
    assert strs["token_strs"] == tokenizer.convert_ids_to_tokens(ids)
    messages = [{"role": "user", "content": "hi"}]
    chat = client.post("/tokenize", json={"model": MODEL, "messages": messages}).json()
    text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert chat["tokens"] == tokenizer.encode(text, add_special_tokens=False)
    bare = client.post("/tokenize", json={"messages": messages, "add_generation_prompt": False})
    text = tokenizer.apply_chat_template(messages, add_generation_prompt=False, tokenize=False)
    assert bare.json()["tokens"] == tokenizer.encode(text, add_special_tokens=False)


def test_detokenize(client: TestClient, tokenizer: Any) -> None:
    ids = tokenizer.encode("the reconcile loop")
    answer = client.post("/detokenize", json={"model": MODEL, "tokens": ids}).json()
    assert answer == {"prompt": "the reconcile loop"}


# ---------------------------------------------------- real model, real server
def _reference(qwen3_dir: Path, ids: list[int]) -> tuple[list[float], list[int]]:
    """Per position 1.., the log-probability of the token, and the argmax id, from a
    plain transformers forward of the tiny model."""
    import torch
    import transformers

    model = transformers.AutoModelForCausalLM.from_pretrained(str(qwen3_dir)).eval()
    with torch.inference_mode():
        logits = model(input_ids=torch.tensor([ids])).logits[0].float()
    scores = torch.log_softmax(logits, dim=-1)
    chosen = [float(scores[i - 1, ids[i]]) for i in range(1, len(ids))]
    best = [int(scores[i - 1].argmax()) for i in range(1, len(ids))]
    return chosen, best


def test_prompt_logprobs_equal_a_plain_forward(
    main_server: RuntimeServer, qwen3_dir: Path, tokenizer: Any
) -> None:
    client = openai.OpenAI(base_url=f"{main_server.base_url}/v1", api_key=API_KEY, max_retries=0)
    ids = tokenizer.encode("the reconcile loop applies every child")
    expected, best = _reference(qwen3_dir, ids)

    def scored() -> list[Any]:
        reply = client.completions.create(
            model=MODEL, prompt=ids, max_tokens=1, echo=True, logprobs=1, temperature=0
        )
        logprobs = reply.choices[0].logprobs
        assert logprobs is not None and logprobs.token_logprobs is not None
        assert logprobs.top_logprobs is not None
        assert len(logprobs.token_logprobs) == len(ids) + 1  # the prompt, then 1 generated
        assert logprobs.token_logprobs[0] is None
        for position, (value, top) in enumerate(
            zip(
                logprobs.token_logprobs[1 : len(ids)],
                logprobs.top_logprobs[1 : len(ids)],
                strict=True,
            )
        ):
            assert value == pytest.approx(expected[position], abs=1e-4)
            best_text = _piece(tokenizer, best[position])
            assert max(top.values()) == pytest.approx(top[best_text], abs=1e-6)
        return list(logprobs.token_logprobs[: len(ids)])

    alone = scored()
    # The same while other sequences are being generated in the batch.
    stop = threading.Event()

    def generate() -> None:
        while not stop.is_set():
            httpx.post(
                f"{main_server.base_url}/v1/completions",
                json={"model": MODEL, "prompt": "busy", "max_tokens": 24, "ignore_eos": True},
                headers=auth(),
                timeout=60,
            ).raise_for_status()

    busy = [threading.Thread(target=generate) for _ in range(2)]
    for thread in busy:
        thread.start()
    try:
        during = [scored() for _ in range(3)]
    finally:
        stop.set()
        for thread in busy:
            thread.join()
    for values in during:
        assert values[0] is None
        assert values[1:] == pytest.approx(alone[1:], abs=1e-4)


def test_tokenize_through_the_real_server(main_server: RuntimeServer, tokenizer: Any) -> None:
    url = main_server.base_url
    ids = tokenizer.encode("hello world")
    body = {"model": MODEL, "prompt": "hello world"}
    tokenized = httpx.post(f"{url}/tokenize", json=body, headers=auth())
    expected = {"count": len(ids), "max_model_len": 512, "tokens": ids, "token_strs": None}
    assert tokenized.json() == expected
    back = httpx.post(f"{url}/detokenize", json={"model": MODEL, "tokens": ids}, headers=auth())
    assert back.json() == {"prompt": "hello world"}


@pytest.mark.parametrize("arch", ["qwen3_moe", "qwen3_omni_moe"])
def test_echo_logprobs_on_the_other_families(arch: str, tiny_model: Any, tmp_path: Path) -> None:
    """The scoring forward on the MoE and the Omni thinker (text prompt): one entry per
    prompt token and one generated, the first null, each a log-probability no higher
    than the best alternative's."""
    from transformers import AutoTokenizer

    from qms_testkit.processes import start_server

    model_dir = tiny_model(arch)
    own = AutoTokenizer.from_pretrained(str(model_dir))
    ids = own.encode("the reconcile loop")
    server = start_server(model_dir, tmp_path, served_model_name=MODEL)
    try:
        body = {"model": MODEL, "prompt": ids, "max_tokens": 1, "echo": True, "logprobs": 1}
        reply = httpx.post(f"{server.base_url}/v1/completions", json=body, timeout=120)
        assert reply.status_code == 200, reply.text
        logprobs = reply.json()["choices"][0]["logprobs"]
        assert len(logprobs["token_logprobs"]) == len(ids) + 1
        assert logprobs["token_logprobs"][0] is None and logprobs["top_logprobs"][0] is None
        for value, top in zip(
            logprobs["token_logprobs"][1:], logprobs["top_logprobs"][1:], strict=True
        ):
            assert value <= 0.0 and value <= max(top.values()) + 1e-6
    finally:
        server.stop()


@pytest.mark.parametrize("temperature", [0.0, 1.8])
def test_generated_logprobs_are_the_raw_model_ones(
    main_server: RuntimeServer, qwen3_dir: Path, tokenizer: Any, temperature: float
) -> None:
    """Chat logprobs of generated tokens come from the engine (engine/controls.py): the
    raw model log-probabilities, before temperature, equal to a plain forward over
    prompt + answer, streamed and not, with the top alternatives sorted."""
    client = openai.OpenAI(base_url=f"{main_server.base_url}/v1", api_key=API_KEY, max_retries=0)
    messages = [{"role": "user", "content": "Tell me about the reconcile loop."}]
    kwargs: dict[str, Any] = {
        "model": MODEL, "messages": messages, "max_tokens": 8, "temperature": temperature,
        "seed": 3, "logprobs": True, "top_logprobs": 3,
        "extra_body": {"ignore_eos": True, "return_token_ids": True},
    }  # fmt: skip
    reply = client.chat.completions.create(**kwargs)
    choice = reply.choices[0]
    generated: list[int] = choice.model_extra["token_ids"]  # type: ignore[index]
    text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    prompt = tokenizer.encode(text, add_special_tokens=False)
    ids = [*prompt, *generated]
    expected, best = _reference(qwen3_dir, ids)
    entries = choice.logprobs.content if choice.logprobs else None
    assert entries is not None and len(entries) == len(generated) == 8
    for i, entry in enumerate(entries):
        position = len(prompt) - 1 + i
        assert entry.logprob == pytest.approx(expected[position], abs=1e-4)
        assert entry.token == _piece(tokenizer, generated[i])
        tops = [top.logprob for top in entry.top_logprobs]
        assert len(tops) == 3 and tops == sorted(tops, reverse=True)
        assert entry.top_logprobs[0].token == _piece(tokenizer, best[position])
        if temperature == 0.0:
            assert generated[i] == best[position]
    streamed = [
        entry.logprob
        for chunk in client.chat.completions.create(stream=True, **kwargs)
        for part in chunk.choices
        for entry in (part.logprobs.content if part.logprobs and part.logprobs.content else [])
    ]
    assert streamed == pytest.approx([entry.logprob for entry in entries], abs=1e-6)
