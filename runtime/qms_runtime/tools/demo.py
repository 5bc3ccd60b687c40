"""`qms-runtime demo`: build a tiny model, serve it, ask one question with the official
`openai` client, and print the answer and the /metrics samples that changed."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return int(response.status), response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, ""
    except OSError:
        return 0, ""


def _samples(metrics_text: str) -> dict[str, float]:
    from prometheus_client.parser import text_string_to_metric_families

    samples: dict[str, float] = {}
    for family in text_string_to_metric_families(metrics_text):
        for sample in family.samples:
            if sample.name.endswith("_created"):
                continue
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
            samples[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return samples


def run_demo(workdir: Path | None) -> int:
    try:
        import openai
    except ImportError:
        print("the demo needs the openai client: pip install 'qms[dev]'", file=sys.stderr)
        return 2
    from qms_runtime.tools.tiny_model import write_tiny_model

    root = workdir or Path(tempfile.mkdtemp(prefix="qms-demo-"))
    model_dir = root / "tiny-qwen3"
    if not (model_dir / "SHA256SUMS").exists():
        print(f"== building a tiny Qwen3 model in {model_dir}")
        write_tiny_model(model_dir, "qwen3")
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    log_path = root / "server.log"
    print(f"== starting qms-runtime on {base} (logs: {log_path})")
    with log_path.open("wb") as log:
        server = subprocess.Popen(
            [sys.executable, "-m", "qms_runtime.cli", "serve", "--model-dir", str(model_dir),
             "--host", "127.0.0.1", "--port", str(port), "--log-format", "text"],
            stdout=log, stderr=log,
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 120
            while _get(f"{base}/ready")[0] != 200:
                if server.poll() is not None or time.monotonic() > deadline:
                    print(log_path.read_text(errors="replace")[-2000:], file=sys.stderr)
                    return 1
                time.sleep(0.2)
            before = _samples(_get(f"{base}/metrics")[1])
            client = openai.OpenAI(base_url=f"{base}/v1", api_key="unused", max_retries=0)
            reply = client.chat.completions.create(
                model="tiny-qwen3",
                messages=[{"role": "user", "content": "Say hello to Kubernetes."}],
                max_tokens=16,
                temperature=0,
            )
            print("== answer (random weights, so the words are noise):")
            print(repr(reply.choices[0].message.content), reply.usage)
            after = _samples(_get(f"{base}/metrics")[1])
            print("== /metrics samples that changed:")
            for name, value in after.items():
                if (
                    name.startswith(("qms_", "vllm:"))
                    and "_bucket" not in name
                    and before.get(name) != value
                ):
                    print(f"{name} {before.get(name, 0.0)} -> {value}")
        finally:
            server.send_signal(signal.SIGTERM)
            code = server.wait(60)
    print(f"== server drained and exited with {code}")
    return 0 if code == 0 else 1
