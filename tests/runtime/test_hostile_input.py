# ruff: noqa: E501  (the case tables read best as one case per line)
"""Hostile input never gives a 500, and the error path cannot fail.

Three parts, all against a real `qms-runtime serve` on a tiny Qwen3 over HTTP:

1. the classes that gave 500 before (issue 17): a lone UTF-16 surrogate in `model`, in a
   prompt or in a chat message, and 100,000-deep JSON; plus what the boundary refuses
   next to them (NaN, huge numbers, bad UTF-8) and how errors echo client input;
2. schemathesis against the server's own /openapi.json, every operation, positive and
   negative cases, with schemathesis' checks plus "every 4xx has the OpenAI body";
3. hypothesis strategies that mutate valid requests (wrong types, extreme numbers,
   unicode edge cases with lone surrogates, deep nesting, raw byte damage).

Generated runs are bounded and reproducible: `derandomize=True` (the seed comes from the
test itself), no example database, `QMS_FUZZ_EXAMPLES` cases per run (default below).
After them the server must still answer a normal request with nothing left in the
batch (running and waiting gauges back to 0), and its log holds neither the API key nor
a prompt.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, event, given, note, settings
from hypothesis import strategies as st
from schemathesis.specs.openapi.checks import positive_data_acceptance

from qms_runtime.api.request.protocol import ErrorResponse
from qms_testkit.processes import RuntimeServer, start_server
from qms_testkit.serving import API_KEY, auth, metric_value

pytestmark = pytest.mark.runtime

MODEL = "tiny-qwen3"
CHAT, COMPLETIONS, PREDICT = "/v1/chat/completions", "/v1/completions", "/v1/predict"
EXAMPLES = int(os.environ.get("QMS_FUZZ_EXAMPLES", "60"))
MARKER = "zebra-quartz-4711"  # a prompt word that must never reach the log
FUZZ_SETTINGS = settings(
    max_examples=EXAMPLES,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    print_blob=True,
)
# Per operation and mode (11 of them): fewer cases each, about as many in all.
SCHEMATHESIS_SETTINGS = settings(FUZZ_SETTINGS, max_examples=max(1, EXAMPLES // 4))


@pytest.fixture(scope="module")
def server(qwen3_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RuntimeServer]:
    """Its own server: a short context (64) bounds what any generated request can ask for."""
    log_dir = tmp_path_factory.mktemp("hostile")
    key_file = log_dir / "api-key"
    key_file.write_text(API_KEY + "\n")
    server = start_server(
        qwen3_dir, log_dir, api_key_file=key_file, served_model_name=MODEL, max_model_len=64,
        log_format="json",
    )  # fmt: skip
    yield server
    assert server.stop() == 0


def assert_openai_error(
    response: httpx.Response | Any, status: int | None = None
) -> dict[str, Any]:
    """The exact OpenAI error body: four keys, the right types, a message."""
    if status is not None:
        assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json"), response.headers
    body = json.loads(response.content)
    assert set(body) == {"error"}, body
    assert set(body["error"]) == {"message", "type", "param", "code"}, body
    ErrorResponse.model_validate(body)
    assert body["error"]["message"], body
    response.content.decode("ascii")  # errors are ASCII JSON: nothing to mis-encode
    return dict(body["error"])


def post_raw(server: RuntimeServer, path: str, content: bytes, **headers: str) -> httpx.Response:
    return httpx.post(
        server.base_url + path,
        content=content,
        headers={**auth(), "Content-Type": "application/json", **headers},
        timeout=60,
    )


def post(server: RuntimeServer, path: str, body: Any) -> httpx.Response:
    # ensure_ascii: a lone surrogate goes out as the JSON escape \ud800, as a client sends it
    return post_raw(server, path, json.dumps(body, ensure_ascii=True).encode())


def chat(**fields: Any) -> dict[str, Any]:
    return {
        "model": MODEL,
        "messages": [{"role": "user", "content": "hi"}],
        "max_tokens": 2,
        **fields,
    }


def completion(**fields: Any) -> dict[str, Any]:
    return {"model": MODEL, "prompt": "hi", "max_tokens": 2, **fields}


def deep(levels: int) -> bytes:
    return b"[" * levels + b"]" * levels


def wait_idle(server: RuntimeServer, timeout: float = 60) -> None:
    """Every admitted sequence is gone: running and waiting back to 0."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        running = metric_value(server.base_url, "vllm:num_requests_running")
        waiting = metric_value(server.base_url, "vllm:num_requests_waiting")
        if running == waiting == 0:
            return
        time.sleep(0.2)
    raise AssertionError(f"still in flight: running={running} waiting={waiting}")


def assert_still_serving(server: RuntimeServer) -> None:
    wait_idle(server)
    response = post(server, CHAT, chat(max_tokens=3, ignore_eos=True))
    assert response.status_code == 200, response.text
    assert response.json()["usage"]["completion_tokens"] == 3
    assert httpx.get(server.base_url + "/health", timeout=10).status_code == 200
    assert httpx.get(server.base_url + "/ready", timeout=10).status_code == 200
    wait_idle(server)


# ------------------------------------------------------------ 1. the known classes
SURROGATE = "\ud800"
KNOWN = [
    # name, path, raw body, status, param, code
    ("lone surrogate in model (chat)", CHAT, chat(model=SURROGATE), 400, "model", "invalid_unicode"),
    ("lone surrogate in model (completions)", COMPLETIONS, completion(model="tiny" + SURROGATE), 400, "model", "invalid_unicode"),
    ("lone low surrogate in model", PREDICT, chat(model="\udfff"), 400, "model", "invalid_unicode"),
    ("lone surrogate in prompt", COMPLETIONS, completion(prompt="hello " + SURROGATE), 400, "prompt", "invalid_unicode"),
    ("lone surrogate in a prompt list", COMPLETIONS, completion(prompt=["ok", "x" + SURROGATE]), 400, "prompt.1", "invalid_unicode"),
    ("lone surrogate in a message", CHAT, chat(messages=[{"role": "user", "content": SURROGATE}]), 400, "messages.0.content", "invalid_unicode"),
    ("lone surrogate in a text part", CHAT, chat(messages=[{"role": "user", "content": [{"type": "text", "text": "a" + SURROGATE}]}]), 400, "messages.0.content.0.text", "invalid_unicode"),
    ("lone surrogate in a stop sequence", CHAT, chat(stop=[SURROGATE]), 400, "stop.0", "invalid_unicode"),
    ("lone surrogate in an ignored field", CHAT, chat(metadata={"note": SURROGATE}), 400, "metadata.note", "invalid_unicode"),
    ("lone surrogate in a key", CHAT, chat(**{"x" + SURROGATE: 1}), 400, None, "invalid_unicode"),
    ("lone surrogate in a content part type", CHAT, chat(messages=[{"role": "user", "content": [{"type": SURROGATE}]}]), 400, "messages.0.content.0.type", "invalid_unicode"),
    ("a surrogate pair is fine, the model is unknown", CHAT, chat(model="\ud83d\ude00"), 404, "model", "model_not_found"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("name", "path", "body", "status", "param", "code"), KNOWN, ids=[c[0] for c in KNOWN]
)
def test_lone_surrogates_are_400_naming_the_field(
    server: RuntimeServer,
    name: str,
    path: str,
    body: Any,
    status: int,
    param: str | None,
    code: str,
) -> None:
    error = assert_openai_error(post(server, path, body), status)
    assert (error["param"], error["code"], error["type"]) == (param, code, "invalid_request_error")


RAW = [
    ("100,000-deep array", CHAT, deep(100_000), "too_deep"),
    ("100,000-deep object", CHAT, b'{"a":' * 100_000 + b"1" + b"}" * 100_000, "too_deep"),
    ("deep array inside a valid body", CHAT, b'{"model":"tiny-qwen3","messages":' + deep(100_000) + b"}", "too_deep"),
    ("33 levels", COMPLETIONS, b'{"model":"tiny-qwen3","prompt":' + deep(32) + b"}", "too_deep"),
    ("NaN", CHAT, b'{"model":"tiny-qwen3","messages":[{"role":"user","content":"hi"}],"temperature":NaN}', "invalid_number"),
    ("Infinity", CHAT, b'{"model":"tiny-qwen3","messages":[],"top_p":-Infinity}', "invalid_number"),
    ("float overflow", CHAT, b'{"model":"tiny-qwen3","messages":[],"temperature":1e999}', "invalid_number"),
    ("5000-digit integer", COMPLETIONS, b'{"model":"tiny-qwen3","prompt":"hi","max_tokens":' + b"9" * 5000 + b"}", "invalid_number"),
    ("invalid utf-8 in a string", CHAT, b'{"model":"tiny-\xc3\x28qwen3","messages":[]}', "invalid_encoding"),
    ("encoded surrogate bytes", CHAT, b'{"model":"\xed\xa0\x80","messages":[]}', "invalid_encoding"),
    ("utf-16 body", CHAT, json.dumps(chat()).encode("utf-16"), "invalid_encoding"),
    ("truncated", CHAT, json.dumps(chat()).encode()[:-3], "invalid_json"),
    ("a json string", CHAT, b'"hello"', "invalid_json"),
]  # fmt: skip


@pytest.mark.parametrize(("name", "path", "content", "code"), RAW, ids=[c[0] for c in RAW])
def test_bodies_the_boundary_refuses(
    server: RuntimeServer, name: str, path: str, content: bytes, code: str
) -> None:
    error = assert_openai_error(post_raw(server, path, content), 400)
    assert (error["code"], error["param"]) == (code, None), error


def test_32_levels_are_accepted(server: RuntimeServer) -> None:
    body = b'{"model":"tiny-qwen3","prompt":"hi","max_tokens":1,"x":' + deep(31) + b"}"
    assert post_raw(server, COMPLETIONS, body).status_code == 200


def test_error_messages_echo_client_input_escaped_and_capped(server: RuntimeServer) -> None:
    long_name = "m" * 10_000
    error = assert_openai_error(post(server, CHAT, chat(model=long_name)), 404)
    assert len(error["message"]) < 200 and "m" * 64 + "..." in error["message"]
    error = assert_openai_error(post(server, CHAT, chat(model="a\x00b\nc\u202ed")), 404)
    assert "'a\\x00b\\x0ac\\u202ed'" in error["message"], error
    error = assert_openai_error(post(server, CHAT, chat(model="caf\u00e9 \U0001f600")), 404)
    assert "'caf\u00e9 \U0001f600'" in error["message"]  # printable text stays as it is
    bad_tag = chat(messages=[{"role": "user", "content": [{"type": "\x1b[31m" + "t" * 500}]}])
    error = assert_openai_error(post(server, CHAT, bad_tag), 400)
    assert "\x1b" not in error["message"] and "t" * 200 not in error["message"], error


def test_api_key_never_in_error_bodies_or_logs(server: RuntimeServer) -> None:
    wrong = "sk-wrong-" + "W" * 24
    for headers in ({"Authorization": f"Bearer {wrong}"}, {"Authorization": API_KEY}, {}):
        response = httpx.post(server.base_url + CHAT, json=chat(), headers=headers, timeout=30)
        error = assert_openai_error(response, 401)
        assert wrong not in response.text and API_KEY not in response.text, error
    assert post(server, CHAT, chat()).status_code == 200  # the right key works
    logs = server.log_path.read_text(errors="replace")
    assert wrong not in logs and API_KEY not in logs


def test_prompts_and_answers_are_not_logged_by_default(server: RuntimeServer) -> None:
    response = post(server, CHAT, chat(messages=[{"role": "user", "content": f"say {MARKER}"}]))
    assert response.status_code == 200
    # 16 tokens, no early end: an answer long enough not to occur in any log by chance
    # (2 random tokens once decoded to "p", which every log has).
    response = post(
        server, COMPLETIONS, completion(prompt=f"{MARKER} again", max_tokens=16, ignore_eos=True)
    )
    assert response.status_code == 200
    answer = response.json()["choices"][0]["text"]
    assert len(answer.strip()) >= 8, answer
    logs = server.log_path.read_text(errors="replace")
    assert f"{COMPLETIONS} 200" in logs or '"status": 200' in logs  # the request is logged...
    assert MARKER not in logs  # ...its prompt is not
    assert answer not in logs


def test_log_prompts_setting_logs_them(qwen3_dir: Path, tmp_path: Path) -> None:
    server = start_server(
        qwen3_dir, tmp_path, served_model_name=MODEL, log_prompts="true", max_model_len=64
    )
    try:
        response = httpx.post(
            server.base_url + COMPLETIONS, json=completion(prompt=f"{MARKER} on"), timeout=60
        )
        assert response.status_code == 200
        logs = server.logs()
        assert MARKER in logs
        assert "generated" in logs
    finally:
        assert server.stop() == 0


EXTREME_SAMPLING = [
    {"temperature": 1e-300},  # was a 500, and the batching loop died with it: 503 after
    {"temperature": 5e-324, "seed": 7},
    {"temperature": 1e-45, "stream": True},
    {"top_p": 5e-324},
    {"top_p": 1e-40, "temperature": 2.0, "n": 4},
    {"temperature": 2.0, "seed": -(2**63)},
    {"seed": 2**64 + 1},
]


@pytest.mark.parametrize("fields", EXTREME_SAMPLING, ids=[json.dumps(f) for f in EXTREME_SAMPLING])
def test_extreme_sampling_values_in_range_are_served(
    server: RuntimeServer, fields: dict[str, Any]
) -> None:
    response = post(server, CHAT, chat(**fields))
    assert response.status_code == 200, response.text
    _check_answer(response)
    assert httpx.get(server.base_url + "/ready", timeout=10).status_code == 200


def test_server_still_serves_after_the_known_classes(server: RuntimeServer) -> None:
    assert (
        metric_value(server.base_url, "qms_requests_total", {"endpoint": CHAT, "status": "500"})
        == 0
    )
    assert (
        metric_value(
            server.base_url, "qms_requests_total", {"endpoint": COMPLETIONS, "status": "500"}
        )
        == 0
    )
    assert_still_serving(server)


# ------------------------------------------------------------------ 2. schemathesis
OPERATIONS = [
    ("GET", "/health"), ("GET", "/ready"), ("GET", "/metrics"), ("GET", "/v1/models"),
    ("POST", CHAT), ("POST", COMPLETIONS), ("POST", PREDICT),
    ("POST", "/tokenize"), ("POST", "/detokenize"),
]  # fmt: skip
SCHEMATHESIS_CASES = [
    (method, path, mode)
    for method, path in OPERATIONS
    for mode in ("positive", "negative")
    if method == "POST" or mode == "positive"  # GET operations take no input to negate
]


@pytest.fixture(scope="module")
def api_schema(server: RuntimeServer) -> Any:
    """The schema as the server serves it (schemathesis' own loader, over HTTP)."""
    return schemathesis.openapi.from_url(server.base_url + "/openapi.json", timeout=30)


def test_the_schema_lists_every_operation(api_schema: Any) -> None:
    served = {
        (result.ok().method.upper(), result.ok().path) for result in api_schema.get_all_operations()
    }
    assert served == set(OPERATIONS)


def openai_error_body(ctx: Any, response: Any, case: Any) -> bool | None:
    """Every 4xx and 5xx carries the exact OpenAI error body."""
    if response.status_code >= 400:
        body = json.loads(response.content)
        assert set(body) == {"error"}, body
        assert set(body["error"]) == {"message", "type", "param", "code"}, body
        ErrorResponse.model_validate(body)
    return None


@pytest.mark.parametrize(
    ("method", "path", "mode"),
    SCHEMATHESIS_CASES,
    ids=[f"{m} {p} {g}" for m, p, g in SCHEMATHESIS_CASES],
)
@given(data=st.data())
@SCHEMATHESIS_SETTINGS
def test_schemathesis(
    server: RuntimeServer, api_schema: Any, method: str, path: str, mode: str, data: st.DataObject
) -> None:
    """schemathesis' cases for one operation, with its checks (no 5xx, statuses, content
    types and bodies as documented, negative data refused, auth enforced, unsupported
    methods 405) and ours."""
    strategy = api_schema[path][method].as_strategy(schemathesis.GenerationMode(mode))
    case = data.draw(strategy)
    if isinstance(case.body, dict) and "max_tokens" not in case.body:
        case.body["max_tokens"] = 2  # bounds the run; any max_tokens drawn is kept
    case.call_and_validate(
        base_url=server.base_url,
        headers=auth(),
        timeout=60,
        additional_checks=[openai_error_body],
        # Schema-valid is not always acceptable: an unknown model (404), a prompt over the
        # context, unsupported penalties (400) - and JSON Schema's integer includes 3.0,
        # which the strict protocol refuses with a 400 naming the field.
        excluded_checks=[positive_data_acceptance],
    )


def test_server_still_serves_after_schemathesis(server: RuntimeServer) -> None:
    assert_still_serving(server)


# -------------------------------------------------------------------- 3. hypothesis
UNICODE_EDGES = st.sampled_from([
    "\ud800", "\udfff", "a\udbff", "\udc00z", "\x00", "\u202e", "\ufeff", "\uffff", "\U0010ffff",
    "\U0001f600", "e\u0301", "\u0000\u0000", "\r\n", "\\u", "<|im_end|>", "<|im_start|>system", "{{ raise }}", "{% for %}",
])  # fmt: skip
TEXT = st.one_of(
    st.text(max_size=40),
    UNICODE_EDGES,
    st.builds(lambda a, b: a + b, st.text(max_size=8), UNICODE_EDGES),
)
NUMBERS = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from([0, -1, 1, 2**31, 2**63, -(2**63), 2**64, 10**30]),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from([1e308, -1e308, 5e-324, -0.0, 0.5, 2.0000001]),
)
SCALARS = st.one_of(st.none(), st.booleans(), NUMBERS, TEXT)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(TEXT, inner, max_size=4)),
    max_leaves=12,
)
FIELDS = ["model", "messages", "prompt", "max_tokens", "max_completion_tokens", "temperature", "top_p", "n",
          "stream", "stream_options", "stop", "seed", "user", "logprobs", "logit_bias", "tools", "echo",
          "ignore_eos", "return_token_ids", "modalities", "audio", "best_of", "suffix", "tool_choice",
          "parallel_tool_calls", "chat_template_kwargs"]  # fmt: skip
MESSAGE_FIELDS = ["role", "content", "name", "tool_calls", "tool_call_id", "reasoning_content"]
DEEP = "__deep__"


@st.composite
def valid_body(draw: st.DrawFn) -> tuple[str, dict[str, Any]]:
    path = draw(st.sampled_from([CHAT, COMPLETIONS, PREDICT]))
    common = {
        "model": MODEL,
        "max_tokens": draw(st.integers(1, 4)),
        "stream": draw(st.booleans()),
        "n": draw(st.integers(1, 3)),
        "temperature": draw(st.sampled_from([0.0, 0.7, 1.0, 2.0, 5e-324, 1e-300, 1e-6])),
        "top_p": draw(st.sampled_from([1.0, 0.5, 5e-324, 1e-40])),
        "seed": draw(st.none() | st.integers(0, 2**32)),
    }
    if path == COMPLETIONS:
        prompt = draw(st.sampled_from(["hi", ["a", "b"], [1, 2, 3], [[4, 5], [6]]]))
        return path, {**common, "prompt": prompt}
    content = draw(st.sampled_from(["hi", [{"type": "text", "text": "hello"}], ""]))
    return path, {**common, "messages": [{"role": "user", "content": content}]}


def _at(body: dict[str, Any], draw: st.DrawFn) -> tuple[Any, Any]:
    """A container in the body and one of its keys/indexes, to mutate."""
    messages = body.get("messages")
    if isinstance(messages, list) and messages and draw(st.booleans()):
        message = messages[0]
        if not isinstance(message, dict):  # an earlier mutation replaced it
            return messages, 0
        if isinstance(message.get("content"), list) and message["content"] and draw(st.booleans()):
            part = message["content"][0]
            if not isinstance(part, dict):  # an earlier mutation replaced it
                return message["content"], 0
            return part, draw(st.sampled_from(["type", "text", "image_url", "input_audio"]))
        return message, draw(st.sampled_from(MESSAGE_FIELDS))
    return body, draw(st.sampled_from(FIELDS))


@st.composite
def mutated_request(draw: st.DrawFn) -> tuple[str, bytes, str]:
    path, body = draw(valid_body())
    for _ in range(draw(st.integers(1, 3))):
        container, key = _at(body, draw)
        action = draw(st.sampled_from(["set", "set", "delete", "wrap-deep"]))
        if action == "delete" and isinstance(container, list):
            del container[key]  # key 0 of a non-empty list (see _at)
        elif action == "delete":
            container.pop(key, None)
        elif action == "wrap-deep":  # spliced in as text below: too deep for json.dumps
            container[key] = f"{DEEP}{draw(st.sampled_from([5, 40, 2000]))}"
        else:
            container[key] = draw(VALUES)
    raw = json.dumps(body, ensure_ascii=True).encode()
    for levels in (5, 40, 2000):
        raw = raw.replace(f'"{DEEP}{levels}"'.encode(), deep(levels))
    damage = draw(
        st.sampled_from(["none"] * 6 + ["truncate", "bad-byte", "nest-body", "content-type"])
    )
    content_type = "application/json"
    if damage == "truncate":
        raw = raw[: draw(st.integers(0, max(0, len(raw) - 1)))]
    elif damage == "bad-byte":
        at = draw(st.integers(0, len(raw)))
        raw = (
            raw[:at]
            + draw(st.sampled_from([b"\xff", b"\xc3", b"\xed\xa0\x80", b"\x00", b"\\ud800"]))
            + raw[at:]
        )
    elif damage == "nest-body":
        levels = draw(st.sampled_from([33, 1000, 100_000]))
        raw = b"[" * levels + raw + b"]" * levels
    elif damage == "content-type":
        content_type = draw(
            st.sampled_from(
                [
                    "text/plain",
                    "application/x-www-form-urlencoded",
                    "",
                    "application/json; charset=latin-1",
                ]
            )
        )
    return path, raw, content_type


def _check_answer(response: httpx.Response) -> None:
    assert response.status_code < 500, response.text
    if response.status_code >= 400:
        assert_openai_error(response)
        return
    assert response.status_code == 200, response.text
    if response.headers["content-type"].startswith("text/event-stream"):
        events = [line[6:] for line in response.text.splitlines() if line.startswith("data: ")]
        assert events[-1] == "[DONE]", events
        for event in events[:-1]:
            assert "error" not in json.loads(event), event
    else:
        assert response.json()["choices"], response.text


@given(request=mutated_request())
@FUZZ_SETTINGS
def test_hypothesis_mutations(server: RuntimeServer, request: tuple[str, bytes, str]) -> None:
    path, raw, content_type = request
    note(f"POST {path} Content-Type: {content_type!r} body: {raw[:2000]!r}")
    headers = {**auth(), "Content-Type": content_type}
    response = httpx.post(server.base_url + path, content=raw, headers=headers, timeout=60)
    event(f"{response.status_code} {_code(response)}")  # --hypothesis-show-statistics
    _check_answer(response)


def _code(response: httpx.Response) -> str:
    try:
        return str(response.json()["error"]["code"]) if response.status_code >= 400 else "ok"
    except (ValueError, KeyError, TypeError):
        return "?"


def test_server_still_serves_after_hypothesis(server: RuntimeServer) -> None:
    assert (
        metric_value(server.base_url, "qms_requests_total", {"endpoint": CHAT, "status": "500"})
        == 0
    )
    assert_still_serving(server)
    assert API_KEY not in server.log_path.read_text(errors="replace")
