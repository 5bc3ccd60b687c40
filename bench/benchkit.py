"""The benchmarks' library: the peers (the QMS runtime, `transformers serve`, one-at-a-time
`generate`), each started through qms_testkit's `ServiceProcess` (the one process runner
of tests and benchmarks) on a free loopback port; the streamed chat load they are put
under; the prompts; and the table of results with the ratios between peers. Scripts in
bench/ import it (they run from bench/, which Python puts on the path)."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil
from runtime_bench_peers import sequential_worker_command

from qms_testkit.net import free_port
from qms_testkit.processes import ServiceProcess, runtime_command

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


def shared_prefix_prompts(conversations: int, turns: int, system_words: int) -> list[Messages]:
    """Every request: the same system prompt, then its conversation's turns so far; in
    turn order (a later turn of a conversation arrives after the earlier ones)."""
    sentence = "The operator reconciles each model server and keeps its status current. "
    system = (sentence * (system_words // 11 + 1)).strip()
    prompts = []
    for turn in range(turns):
        for conv in range(conversations):
            messages: Messages = [{"role": "system", "content": system}]
            for k in range(turn):
                question = f"Conversation {conv}, question {k}: what does step {k} do?"
                answer = f"Step {k} reads the object and writes the difference back ({conv})."
                messages.append({"role": "user", "content": question})
                messages.append({"role": "assistant", "content": answer})
            question = f"Conversation {conv}, question {turn}: and what happens next?"
            messages.append({"role": "user", "content": question})
            prompts.append(messages)
    return prompts


async def one_request(
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
        await one_request(client, model, warm, 4, extra)  # first-request costs out
        semaphore = asyncio.Semaphore(args.concurrency)
        sampler = asyncio.create_task(watcher.run())

        async def bounded(messages: Messages) -> Outcome | None:
            async with semaphore:
                try:
                    return await one_request(
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
    log = workdir / f"qms-{model_dir.name}.log"
    process = ServiceProcess(runtime_command(model_dir, port), log, env)
    try:
        process.wait_http(f"http://127.0.0.1:{port}/ready", timeout=300)
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
        process.stop()


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
    process = ServiceProcess(command, log, dict(os.environ))
    name = "transformers serve" + (" --continuous-batching" if continuous else "")
    try:
        process.wait_http(f"http://127.0.0.1:{port}/health", timeout=300)
        if close_after is not None:
            name += f" (closed after {close_after})"
        url = f"http://127.0.0.1:{port}"
        return asyncio.run(
            load_server(name, url, process.pid, str(model_dir), args, {}, close_after, prompts)
        )
    finally:
        process.stop()


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
    process = ServiceProcess(command, log, dict(os.environ))
    watcher = RssWatcher(process.pid)
    while process.running():
        watcher.sample()
        time.sleep(0.05)
    if process.stop() != 0:
        raise RuntimeError(process.logs(3000))
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
