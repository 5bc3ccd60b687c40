"""Where a batch step's time goes, QMS vs `transformers serve --continuous-batching`, under
the same load (py-spy, sampling the batching thread of each server in turn).

    python bench/profile_decode.py                       # dense Qwen3-0.6B shape, c=16
    python bench/profile_decode.py --model DIR --seconds 20
    python bench/profile_decode.py --workload shared-prefix --after-start 0 --seconds 20

Each server gets `--requests` streamed chats of `--max-tokens` (temperature 0) at
`--concurrency`; once the first tokens came back (prefill done), py-spy samples the
server for `--seconds`. Of the stacks that run the batch loop (`_generation_step`), it
prints the share in each part of a step (the model forward, the logits processors,
sampling, preparing the batch, routing outputs) and the top leaf functions: what QMS adds
per step shows up as parts and leaves serve does not have.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from benchkit import default_prompts, one_request, shared_prefix_prompts

from qms_testkit.net import free_port
from qms_testkit.processes import ServiceProcess

# The parts of a batch step, by the first frame of a stack that names one (innermost first).
PARTS = (
    ("logits processors", ("cb_logits_processors.py", "controls.py", "sampling_patches.py:apply")),
    ("sampling", ("model_runner.py:_sample", "sampling_patches.py:_sample")),
    ("model forward", ("modeling_", "torch/nn/modules")),
    ("prepare batch", ("input_outputs.py", "scheduler.py", "prepare_next_batch")),
    ("outputs to requests", ("update_batch", "deliver", "requests.py")),
)


def part_of(stack: list[str]) -> str:
    for frame in reversed(stack):  # innermost first
        for part, marks in PARTS:
            if any(mark in frame for mark in marks):
                return part
    return "other (loop, cache, glue)"


def record(pid: int, seconds: float, out: Path) -> list[tuple[list[str], int]]:
    """py-spy's collapsed stacks of `pid`: (frames outermost first, samples)."""
    command = ["py-spy", "record", "--pid", str(pid), "--duration", str(int(seconds)),
               "--rate", "50", "--format", "raw", "--output", str(out),
               "--nonblocking"]  # fmt: skip
    subprocess.run(command, check=True, capture_output=True)
    stacks = []
    for line in out.read_text().splitlines():
        frames, _, count = line.rpartition(" ")
        if frames:
            stacks.append((frames.split(";"), int(count)))
    return stacks


def frame_name(frame: str) -> str:
    """'fn (path/file.py:12)' -> 'file.py:fn'."""
    name, _, where = frame.partition(" (")
    file = where.split(":")[0].rsplit("/", 1)[-1]
    return f"{file}:{name}"


def workload_prompts(args: argparse.Namespace) -> list:
    if args.workload == "shared-prefix":
        return shared_prefix_prompts(8, 4, 700)  # runtime_bench_real's defaults
    return default_prompts(args.requests)


async def drive(url: str, model: str, args: argparse.Namespace, pid: int, out: Path) -> list:
    prompts = workload_prompts(args)
    semaphore = asyncio.Semaphore(args.concurrency)

    async def bounded(client: httpx.AsyncClient, messages: list) -> object:
        async with semaphore:
            return await one_request(client, model, messages, args.max_tokens, {})

    limits = httpx.Limits(max_connections=args.concurrency * 2)
    async with httpx.AsyncClient(base_url=url, timeout=600, limits=limits) as client:
        await one_request(client, model, [{"role": "user", "content": "warm up"}], 4, {})
        load = [asyncio.create_task(bounded(client, m)) for m in prompts]
        await asyncio.sleep(args.after_start)  # past the prefill
        stacks = await asyncio.to_thread(record, pid, args.seconds, out)
        await asyncio.gather(*load)
    return stacks


def report(name: str, stacks: list[tuple[list[str], int]], top: int) -> dict[str, float]:
    loop = [(s, n) for s, n in stacks if any("_generation_step" in f for f in s)]
    total = sum(n for _, n in loop) or 1
    parts: collections.Counter[str] = collections.Counter()
    leaves: collections.Counter[str] = collections.Counter()
    for stack, n in loop:
        parts[part_of([frame_name(f) for f in stack])] += n
        leaves[frame_name(stack[-1])] += n
    print(f"\n## {name}: {total} samples of the batch loop")
    for part, n in parts.most_common():
        print(f"  {part:28s} {100 * n / total:5.1f}%")
    print("  top leaves:")
    for leaf, n in leaves.most_common(top):
        print(f"    {100 * n / total:5.1f}%  {leaf}")
    # The other busy threads (py-spy leaves idle ones out): the event loop's HTTP and
    # detokenising work, which holds the GIL the batch loop also needs.
    rest = [(s, n) for s, n in stacks if not any("_generation_step" in f for f in s)]
    busy = sum(n for _, n in rest)
    print(f"  other threads: {busy} samples ({100 * busy / total:.1f}% of the batch loop's)")
    ours: collections.Counter[str] = collections.Counter()
    for stack, n in rest:
        mine = [frame_name(f) for f in stack if "qms_runtime" in f]
        ours[mine[-1] if mine else frame_name(stack[-1])] += n
    for frame, n in ours.most_common(top // 2):
        print(f"    {100 * n / total:5.1f}%  {frame}")
    return {part: n / total for part, n in parts.items()} | {"other threads": busy / total}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=None, help="default: see --workload")
    parser.add_argument("--workload", choices=("decode", "shared-prefix"), default="decode")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--requests", type=int, default=16)
    parser.add_argument("--max-tokens", type=int, default=48)
    parser.add_argument("--after-start", type=float, default=8.0)
    parser.add_argument("--seconds", type=float, default=12.0)
    parser.add_argument("--top", type=int, default=12)
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="qms-profile-"))
    workdir.mkdir(parents=True, exist_ok=True)
    model = args.model
    if model is None:  # decode: the 0.6B shape; shared-prefix: the small dense model
        from qms_runtime.tools.tiny_model import write_tiny_model

        size = "real" if args.workload == "decode" else "small"
        model = workdir / f"{size}-qwen3"
        if not (model / "SHA256SUMS").exists():
            write_tiny_model(model, "qwen3", size)
    shares = {}
    for peer in ("qms", "serve"):
        port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("QMS_")}
        if peer == "qms":
            env.update(QMS_LOG_FORMAT="text", QMS_MAX_BATCH_SIZE=str(args.concurrency))
            env.update(QMS_KV_CACHE_BLOCKS="512", QMS_MAX_MODEL_LEN="2048")
            command = [sys.executable, "-m", "qms_runtime.cli", "serve", "--model-dir",
                       str(model), "--host", "127.0.0.1", "--port", str(port)]  # fmt: skip
            ready, name = "/ready", model.name
        else:
            command = [sys.executable, "-m", "transformers.cli.transformers", "serve",
                       str(model), "--device", "cpu", "--dtype", "float32", "--host",
                       "127.0.0.1", "--port", str(port), "--attn-implementation", "sdpa",
                       "--continuous-batching", "--cb-num-blocks", "64",
                       "--cb-max-batch-tokens", "512"]  # fmt: skip
            ready, name = "/health", str(model)
        log = workdir / f"profile-{peer}.log"
        process = ServiceProcess(command, log, env)
        try:
            url = f"http://127.0.0.1:{port}"
            process.wait_http(url + ready, timeout=300)
            started = time.perf_counter()
            out = workdir / f"profile-{peer}.txt"
            stacks = asyncio.run(drive(url, name, args, process.pid, out))
            took = f"{peer} ({time.perf_counter() - started:.0f}s)"
            shares[peer] = report(took, stacks, args.top)
        finally:
            process.stop()
    print("\n## share of the batch loop, qms vs serve")
    for part in sorted({*shares["qms"], *shares["serve"]}):
        q, s = shares["qms"].get(part, 0.0), shares["serve"].get(part, 0.0)
        print(f"  {part:28s} qms {100 * q:5.1f}%  serve {100 * s:5.1f}%")
    if args.model is None and args.workdir is None:  # a model of GBs in a temp dir of ours
        shutil.rmtree(model, ignore_errors=True)
    print(f"(py-spy's raw stacks and the servers' logs: {workdir})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
