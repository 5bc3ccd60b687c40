"""Real clients against a real server on the tiny Qwen3 model: lm-evaluation-harness
(`local-completions`: a loglikelihood multiple-choice task, which sends `echo` +
`logprobs` + `max_tokens: 1` and sums the prompt's log-probabilities, and a
generate_until task with stop strings; `local-chat-completions`: generate_until) and
guidellm, the benchmark client (bench/client_bench.sh). Each lives in its own venv
(qms_testkit.tools): their dependencies conflict with the project's.

The tasks are local (a YAML and a jsonl written here; no hub). Asserted: exit 0, the
sample counts in lm-eval's results, every request answered 200 (the server's access
log), guidellm's report with zero errored requests.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from qms_testkit.processes import RuntimeServer, start_server
from qms_testkit.tools import tool_venv

pytestmark = pytest.mark.runtime

MODEL = "tiny-qwen3"
ROOT = Path(__file__).resolve().parents[2]
LM_EVAL = ("lm-eval", "lm-eval[api]==0.4.13", "transformers==5.24.0")  # tokenizer only
GUIDELLM = ("guidellm", "guidellm==0.8.1")
MC_DOCS = [
    {"question": f"Which word follows {w}?", "choices": ["loop", "child", "spec"], "answer": i % 3}
    for i, w in enumerate(["the", "a", "every", "one", "each"])
]
GEN_DOCS = [{"question": f"Say {w}:", "answer": w} for w in ["loop", "child", "spec"]]


@pytest.fixture(scope="module")
def server(qwen3_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RuntimeServer]:
    """A server of their own, without an API key (lm-eval sends `Bearer ` empty)."""
    started = start_server(qwen3_dir, tmp_path_factory.mktemp("clients"), served_model_name=MODEL)
    yield started
    started.stop()


def _statuses(server: RuntimeServer) -> dict[str, int]:
    """Access-log status counts of the server so far: {"200": n, ...}."""
    counts: dict[str, int] = {}
    server.logs()  # flushes the log file
    log = server.log_path.read_text(errors="replace")
    for status in re.findall(r"qms_runtime\.access: POST \S+ (\d{3})", log):
        counts[status] = counts.get(status, 0) + 1
    return counts


def _tasks(root: Path) -> Path:
    tasks = root / "tasks"
    tasks.mkdir()
    (tasks / "mc.jsonl").write_text("".join(json.dumps(doc) + "\n" for doc in MC_DOCS))
    (tasks / "gen.jsonl").write_text("".join(json.dumps(doc) + "\n" for doc in GEN_DOCS))
    common = "dataset_path: json\ntest_split: test\n"
    (tasks / "qms_mc.yaml").write_text(
        f"task: qms_mc\n{common}"
        f"dataset_kwargs:\n  data_files:\n    test: {tasks / 'mc.jsonl'}\n"
        "output_type: multiple_choice\n"
        'doc_to_text: "{{question}}"\ndoc_to_choice: "{{choices}}"\ndoc_to_target: "{{answer}}"\n'
        "metric_list:\n  - metric: acc\n"
    )
    (tasks / "qms_gen.yaml").write_text(
        f"task: qms_gen\n{common}"
        f"dataset_kwargs:\n  data_files:\n    test: {tasks / 'gen.jsonl'}\n"
        "output_type: generate_until\n"
        'doc_to_text: "{{question}}"\ndoc_to_target: "{{answer}}"\n'
        "generation_kwargs:\n"
        '  until: ["\\n", "."]\n  max_gen_toks: 8\n  do_sample: false\n'
        "metric_list:\n  - metric: exact_match\n"
    )
    return tasks


def _lm_eval(tmp_path: Path, *args: str) -> dict[str, object]:
    venv = tool_venv(*LM_EVAL)
    out = tmp_path / "results"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    env["HF_HOME"] = str(tmp_path / "hf")  # the datasets cache: this test's own
    command = [str(venv / "bin" / "lm_eval"), *args]
    command += ["--include_path", str(_tasks(tmp_path)), "--output_path", str(out)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-4000:]
    for failure in ("Traceback", "API request failed", "Exception:", "Retry attempt"):
        assert failure not in output, output[-4000:]
    (results,) = sorted(out.glob("*/results_*.json"))
    loaded: dict[str, object] = json.loads(results.read_text())
    return loaded


def test_lm_eval_local_completions(server: RuntimeServer, qwen3_dir: Path, tmp_path: Path) -> None:
    before = _statuses(server)
    model_args = (
        f"model={MODEL},base_url={server.base_url}/v1/completions,tokenizer={qwen3_dir},"
        "tokenizer_backend=huggingface,num_concurrent=1,max_retries=1"
    )
    results = _lm_eval(
        tmp_path, "--model", "local-completions", "--model_args", model_args,
        "--tasks", "qms_mc,qms_gen",
    )  # fmt: skip
    assert results["n-samples"] == {
        "qms_mc": {"original": 5, "effective": 5},
        "qms_gen": {"original": 3, "effective": 3},
    }
    after = _statuses(server)
    # One loglikelihood request per choice (5 x 3), one generation per doc (3), all 200.
    assert after.get("200", 0) - before.get("200", 0) == 5 * 3 + 3
    assert {k: v for k, v in after.items() if k != "200"} == {
        k: v for k, v in before.items() if k != "200"
    }


def test_lm_eval_local_chat_completions(server: RuntimeServer, tmp_path: Path) -> None:
    before = _statuses(server)
    model_args = (
        f"model={MODEL},base_url={server.base_url}/v1/chat/completions,"
        "num_concurrent=1,max_retries=1"
    )
    results = _lm_eval(
        tmp_path, "--model", "local-chat-completions", "--model_args", model_args,
        "--apply_chat_template", "--tasks", "qms_gen",
    )  # fmt: skip
    assert results["n-samples"] == {"qms_gen": {"original": 3, "effective": 3}}
    after = _statuses(server)
    assert after.get("200", 0) - before.get("200", 0) == 3
    assert set(after) == set(before) | {"200"}


@pytest.mark.parametrize("request_format", ["/v1/chat/completions", "/v1/completions"])
def test_guidellm(
    server: RuntimeServer, qwen3_dir: Path, tmp_path: Path, request_format: str
) -> None:
    tool_venv(*GUIDELLM)  # built here (once), so the script finds it ready
    report = tmp_path / "guidellm.json"
    command = [
        str(ROOT / "bench" / "client_bench.sh"), server.base_url, MODEL, str(qwen3_dir),
        str(report), "6", "kind=concurrent,streams=3", request_format,
    ]  # fmt: skip
    env = {**os.environ, "PROMPT_TOKENS": "16", "OUTPUT_TOKENS": "8"}
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    (benchmark,) = json.loads(report.read_text())["benchmarks"]
    assert benchmark["metrics"]["request_totals"] == {
        "successful": 6,
        "errored": 0,
        "incomplete": 0,
        "total": 6,
    }
