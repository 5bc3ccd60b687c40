"""Runtime benchmark: QMS vs `transformers serve` vs one-at-a-time `generate`.

One command, all peers measured in the same run on the same locally built models:

    python bench/runtime_bench.py            # 32 requests x 64 new tokens, concurrency 16

- dense Qwen3 (~21M parameters, `tiny-model --size small`): QMS runtime,
  `transformers serve --continuous-batching`, and plain `generate` one request at a time;
- tiny Qwen3-Omni-MoE: QMS runtime vs `transformers serve` (which runs multimodal models
  one request at a time) and vs one-at-a-time thinker `generate`. transformers 5.24's
  `serve` ignores `max_tokens` for Qwen3-Omni (the model's `generate` passes its own
  `thinker_max_new_tokens=1024` to the thinker): for that pair both servers get the same
  client, which asks for 1024 tokens and closes each stream after `--max-tokens` content
  chunks (both counted in chunks); the server cancels the rest of that answer. With
  `--omni-full-answers` both are also measured at serve's own 1024-token answers (the
  model's context is raised to 2048 positions for that; no weight changes).

Prints tokens/s, time to first token p50/p99, end-to-end p50/p99 and peak RSS per peer,
and the ratios between peers. Timing lives here only, never in pass/fail tests.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
from runtime_bench_peers import sequential_worker_command

from qms_testkit.net import free_port

OMNI_SERVE_TOKENS = 1024  # what `transformers serve` generates for Qwen3-Omni, whatever asked
QUESTIONS = [f"Request {i}: explain item {i} of the reconcile loop in detail." for i in range(64)]


@dataclass
class Result:
    name: str
    tokens: int
    wall_s: float
    ttft: list[float]
    e2e: list[float]
    peak_rss_mb: float
    failures: int
    note: str = ""
    itl: list[float] = field(default_factory=list)  # gaps between content chunks

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.wall_s if self.wall_s else 0.0


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


class RssWatcher:
    """Peak RSS of a process tree, sampled every 50 ms."""

    def __init__(self, pid: int) -> None:
        self.process = psutil.Process(pid)
        self.peak = 0
        self._task: asyncio.Task[None] | None = None

    def sample(self) -> None:
        try:
            procs = [self.process, *self.process.children(recursive=True)]
            self.peak = max(self.peak, sum(p.memory_info().rss for p in procs))
        except psutil.Error:
            pass

    async def run(self) -> None:
        while True:
            self.sample()
            await asyncio.sleep(0.05)


Messages = list[dict[str, str]]
Outcome = tuple[int, float, float, list[float]]


def default_prompts(count: int) -> list[Messages]:
    return [[{"role": "user", "content": q}] for q in QUESTIONS[:count]]


async def _one_request(
    client: httpx.AsyncClient,
    model: str,
    messages: Messages,
    max_tokens: int,
    extra: dict[str, Any],
    close_after: int | None = None,
) -> Outcome:
    """(tokens, time to first token, end to end, inter-chunk gaps) of one streamed chat
    completion.

    `close_after`: stop reading (close the connection) after that many content chunks,
    for a server that does not honour max_tokens; the server then cancels the rest.
    """
    body = {
        "model": model,
        "messages": messages,
        "max_tokens": max_tokens,
        "temperature": 0,
        "stream": True,
        "stream_options": {"include_usage": True},
        **extra,
    }
    start = time.perf_counter()
    first = 0.0
    chunks = 0
    last = 0.0
    gaps: list[float] = []
    usage_tokens = None
    async with client.stream("POST", "/v1/chat/completions", json=body) as response:
        response.raise_for_status()
        async for line in response.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            payload = json.loads(line[6:])
            if payload.get("usage"):
                usage_tokens = payload["usage"].get("completion_tokens")
            for choice in payload.get("choices") or []:
                if (choice.get("delta") or {}).get("content"):
                    chunks += 1
                    now = time.perf_counter()
                    if not first:
                        first = now - start
                    else:
                        gaps.append(now - last)
                    last = now
            if close_after is not None and chunks >= close_after:
                return chunks, first, time.perf_counter() - start, gaps
    return (
        (usage_tokens if usage_tokens is not None else chunks),
        first,
        time.perf_counter() - start,
        gaps,
    )


async def load_server(
    name: str,
    base_url: str,
    pid: int,
    model: str,
    args: argparse.Namespace,
    extra: dict[str, Any],
    close_after: int | None = None,
    prompts: list[Messages] | None = None,
) -> Result:
    watcher = RssWatcher(pid)
    prompts = prompts or default_prompts(args.requests)
    limits = httpx.Limits(max_connections=args.concurrency * 2)
    async with httpx.AsyncClient(base_url=base_url, timeout=600, limits=limits) as client:
        warm = [{"role": "user", "content": "warm up"}]
        await _one_request(client, model, warm, 4, extra)  # first-request costs out
        semaphore = asyncio.Semaphore(args.concurrency)
        sampler = asyncio.create_task(watcher.run())

        async def bounded(messages: Messages) -> Outcome | None:
            async with semaphore:
                try:
                    return await _one_request(
                        client, model, messages, args.max_tokens, extra, close_after
                    )
                except httpx.HTTPError as error:
                    print(f"  {name}: request failed: {error!r}", file=sys.stderr)
                    return None

        start = time.perf_counter()
        outcomes = await asyncio.gather(*(bounded(m) for m in prompts))
        wall = time.perf_counter() - start
        sampler.cancel()
    done = [o for o in outcomes if o is not None]
    return Result(
        name=name,
        tokens=sum(o[0] for o in done),
        wall_s=wall,
        ttft=[o[1] for o in done],
        e2e=[o[2] for o in done],
        peak_rss_mb=watcher.peak / 2**20,
        failures=len(outcomes) - len(done),
        itl=[gap for o in done for gap in o[3]],
    )


def start_process(command: list[str], log: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    handle = log.open("wb")
    return subprocess.Popen(command, stdout=handle, stderr=handle, env=env)


def wait_http(url: str, process: subprocess.Popen[bytes], log: Path, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{url}: process exited: {log.read_text(errors='replace')[-3000:]}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.3)
    raise RuntimeError(f"{url} not up after {timeout}s")


def stop_process(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def run_qms(
    model_dir: Path,
    args: argparse.Namespace,
    workdir: Path,
    extra: dict[str, Any] | None = None,
    close_after: int | None = None,
    runtime_src: Path | None = None,
    name: str = "qms",
    env_extra: dict[str, str] | None = None,
    prompts: list[Messages] | None = None,
) -> Result:
    """QMS on `model_dir` under the load of `args`; `runtime_src`: serve the qms_runtime
    package from that folder instead of the installed one (bench/runtime_ab.py)."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("QMS_")}
    env.update(QMS_LOG_FORMAT="text", QMS_MAX_BATCH_SIZE=str(args.concurrency))
    env.update(env_extra or {})
    if runtime_src is not None:
        env["PYTHONPATH"] = str(runtime_src)
    command = [sys.executable, "-m", "qms_runtime.cli", "serve", "--model-dir", str(model_dir),
               "--host", "127.0.0.1", "--port", str(port)]  # fmt: skip
    log = workdir / f"qms-{model_dir.name}.log"
    process = start_process(command, log, env)
    try:
        wait_http(f"http://127.0.0.1:{port}/ready", process, log)
        if extra:
            name = f"{name} ({args.max_tokens} tokens, ignore_eos)"
        if close_after is not None:
            name = f"qms (closed after {close_after})"
        url = f"http://127.0.0.1:{port}"
        return asyncio.run(
            load_server(
                name, url, process.pid, model_dir.name, args, extra or {}, close_after, prompts
            )
        )
    finally:
        stop_process(process)


def run_transformers_serve(
    model_dir: Path,
    args: argparse.Namespace,
    workdir: Path,
    continuous: bool,
    close_after: int | None = None,
    cb_args: tuple[str, ...] = ("--cb-num-blocks", "512", "--cb-max-batch-tokens", "512"),
    prompts: list[Messages] | None = None,
    device: str = "cpu",
    dtype: str = "float32",
) -> Result:
    port = free_port()
    cli = (sys.executable, "-m", "transformers.cli.transformers")  # the importable one
    command = [
        *(*cli, "serve", str(model_dir), "--device", device, "--dtype", dtype),
        *("--host", "127.0.0.1", "--port", str(port), "--attn-implementation", "sdpa"),
    ]
    if continuous:
        command += ["--continuous-batching", *cb_args]
    log = workdir / f"tserve-{model_dir.name}-{'cb' if continuous else 'seq'}.log"
    process = start_process(command, log, dict(os.environ))
    name = "transformers serve" + (" --continuous-batching" if continuous else "")
    try:
        wait_http(f"http://127.0.0.1:{port}/health", process, log)
        if close_after is not None:
            name += f" (closed after {close_after})"
        url = f"http://127.0.0.1:{port}"
        return asyncio.run(
            load_server(name, url, process.pid, str(model_dir), args, {}, close_after, prompts)
        )
    finally:
        stop_process(process)


def run_sequential(
    model_dir: Path,
    args: argparse.Namespace,
    workdir: Path,
    prompts: list[Messages] | None = None,
    device: str = "cpu",
) -> Result:
    """One `generate` at a time over `prompts` (default: the first args.requests questions)."""
    out = workdir / f"sequential-{model_dir.name}.json"
    prompts_file = workdir / f"sequential-{model_dir.name}-prompts.json"
    prompts_file.write_text(json.dumps(prompts or default_prompts(args.requests)))
    command = sequential_worker_command(model_dir, prompts_file, args.max_tokens, out, device)
    log = workdir / f"sequential-{model_dir.name}.log"
    process = start_process(command, log, dict(os.environ))
    watcher = RssWatcher(process.pid)
    while process.poll() is None:
        watcher.sample()
        time.sleep(0.05)
    if process.returncode != 0:
        raise RuntimeError(log.read_text(errors="replace")[-3000:])
    data = json.loads(out.read_text())
    return Result(
        name="one-at-a-time generate",
        tokens=data["tokens"],
        wall_s=data["wall_s"],
        ttft=data["ttft"],
        e2e=data["e2e"],
        peak_rss_mb=watcher.peak / 2**20,
        failures=0,
        itl=data.get("itl", []),
    )


def report(title: str, results: list[Result], pairs: list[tuple[int, int]] | None = None) -> None:
    """A table of the peers, then the tok/s ratio of each pair (default: first vs others)."""
    print(f"\n## {title}")
    columns = ("tokens", "tok/s", "TTFT p50", "TTFT p99", "ITL p50", "ITL p99", "e2e p50",
               "e2e p99", "RSS MB", "fail")  # fmt: skip
    widths = (6, 8, 9, 9, 8, 8, 8, 8, 7, 4)
    print(f"{'peer':40} " + " ".join(f"{c:>{w}}" for c, w in zip(columns, widths, strict=True)))
    for r in results:
        print(
            f"{r.name:40} {r.tokens:6d} {r.tokens_per_s:8.1f} {percentile(r.ttft, 50):9.3f} "
            f"{percentile(r.ttft, 99):9.3f} {percentile(r.itl, 50):8.3f} "
            f"{percentile(r.itl, 99):8.3f} {percentile(r.e2e, 50):8.2f} "
            f"{percentile(r.e2e, 99):8.2f} {r.peak_rss_mb:7.0f} {r.failures:4d}"
        )
    for a, b in pairs or [(0, i) for i in range(1, len(results))]:
        if results[b].tokens_per_s:
            ratio = results[a].tokens_per_s / results[b].tokens_per_s
            ttft = percentile(results[a].ttft, 99) / percentile(results[b].ttft, 99)
            print(
                f"{results[a].name} / {results[b].name}: {ratio:.2f}x tokens/s, "
                f"{ttft:.2f}x TTFT p99"
            )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=32)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--only", choices=["dense", "omni"], default=None)
    parser.add_argument(
        "--omni-full-answers",
        action="store_true",
        help=f"also compare Omni at the {OMNI_SERVE_TOKENS}-token answers serve always gives",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=os.cpu_count() or 1,
        help="OMP_NUM_THREADS for every peer (the same for all; default: every core)",
    )
    args = parser.parse_args()
    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from qms_runtime.tools.tiny_model import write_tiny_model

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="qms-bench-"))
    print(
        f"workdir {workdir}; {args.requests} requests x {args.max_tokens} tokens, "
        f"concurrency {args.concurrency}; cpus {os.cpu_count()}, threads {args.threads}"
    )
    if args.only in (None, "dense"):
        dense = workdir / "small-qwen3"
        if not (dense / "SHA256SUMS").exists():
            write_tiny_model(dense, "qwen3", "small")
        results = [run_qms(dense, args, workdir)]
        results.append(run_transformers_serve(dense, args, workdir, continuous=True))
        results.append(run_sequential(dense, args, workdir))
        report("dense Qwen3 (~21M parameters)", results)
    if args.only in (None, "omni"):
        omni = workdir / "tiny-qwen3-omni"
        if not (omni / "SHA256SUMS").exists():
            write_tiny_model(omni, "qwen3_omni_moe", "tiny", max_positions=2048)
        forced = argparse.Namespace(**{**vars(args), "max_tokens": OMNI_SERVE_TOKENS})
        results = [
            run_qms(omni, args, workdir, {"ignore_eos": True}),
            run_sequential(omni, args, workdir),
            # `serve --continuous-batching` still runs Qwen3-Omni one request at a time, and
            # answers 1024 tokens whatever max_tokens says. Both servers get the same client:
            # 1024 tokens asked, the stream closed after max_tokens content chunks (both
            # counted in chunks), the server cancelling the rest (serve: streamer.cancel).
            run_qms(omni, forced, workdir, {"ignore_eos": True}, close_after=args.max_tokens),
            run_transformers_serve(omni, forced, workdir, True, close_after=args.max_tokens),
        ]
        pairs = [(0, 1), (2, 3)]
        if args.omni_full_answers:  # the same comparison at serve's own answer length
            results.append(run_qms(omni, forced, workdir, {"ignore_eos": True}))
            results.append(run_transformers_serve(omni, forced, workdir, continuous=True))
            pairs.append((4, 5))
        report("tiny Qwen3-Omni-MoE", results, pairs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
