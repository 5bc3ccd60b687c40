"""Runtime benchmark at real shapes and on chat-like traffic: QMS vs `transformers serve
--continuous-batching` vs one-at-a-time `generate`, all in one run, alternating.

    python bench/runtime_bench_real.py                 # every workload below
    python bench/runtime_bench_real.py --only dense-real --rounds 2
    python bench/runtime_bench_real.py --only dense-real --dtype bfloat16   # both servers

Workloads (random weights, `qms-runtime tiny-model --size real`, the 4k test tokenizer):
- dense-real: Qwen3-0.6B's shape (28 layers, hidden 1024, vocab 151,936, tied);
- moe-real: Qwen3-30B-A3B's layer shape (hidden 2048, 128 experts, 8 active, vocab
  151,936) with `--moe-layers` layers (default 1: 1.25B parameters, 5 GB in float32);
- shared-prefix: chat traffic on the small dense model (~21M): one long system prompt
  shared by every request, `--conversations` conversations of `--turns` turns, each
  request carrying its conversation's history so far (the later turns share the earlier
  turns' pages too). Both servers share prefix pages (transformers' block sharing, on by
  default in both; QMS pages are 32 tokens, serve's 256, so QMS matches more of each
  history).

Both servers get the same KV budget in tokens. Prints a table per workload (tokens/s, TTFT
p50/p99, inter-token latency p50/p99, e2e, peak RSS) and QMS / peer ratios, plus the load
average before and after each peer: the 2 cores are shared, only same-run ratios mean much.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

from benchkit import (
    Messages,
    Result,
    default_prompts,
    report,
    run_qms,
    run_sequential,
    run_transformers_serve,
    shared_prefix_prompts,
)

WORKLOADS = ("dense-real", "moe-real", "shared-prefix")


def load() -> str:
    one, five, _ = os.getloadavg()
    return f"load {one:.1f}/{five:.1f}"


def peers(
    title: str,
    model: Path,
    args: argparse.Namespace,
    workdir: Path,
    prompts: list[Messages],
    qms_env: dict[str, str],
    serve_cb: tuple[str, ...],
    sequential: int,
) -> None:
    """QMS and serve alternating for `args.rounds` rounds, then `generate` once over the
    first `sequential` prompts (0: skipped)."""
    results: list[Result] = []
    pairs = []
    for round_ in range(args.rounds):
        before = load()
        qms = run_qms(model, args, workdir, env_extra=qms_env, prompts=prompts)
        qms.name += f" r{round_ + 1}"
        mid = load()
        serve = run_transformers_serve(
            model, args, workdir, True, cb_args=serve_cb, prompts=prompts, dtype=args.dtype
        )
        serve.name += f" r{round_ + 1}"
        print(f"  {title} round {round_ + 1}: {before} | qms | {mid} | serve | {load()}")
        results += [qms, serve]
        pairs.append((len(results) - 2, len(results) - 1))
    if sequential:
        results.append(run_sequential(model, args, workdir, prompts[:sequential]))
        pairs += [(i, len(results) - 1) for i in range(0, 2 * args.rounds, 2)]
    report(title, results, pairs)
    if args.rounds > 1:
        qms_rates = [results[a].tokens_per_s for a, _ in pairs[: args.rounds]]
        serve_rates = [results[b].tokens_per_s for _, b in pairs[: args.rounds]]
        ratios = sorted(q / s for q, s in zip(qms_rates, serve_rates, strict=True))
        print(
            f"{title}: median tok/s qms {statistics.median(qms_rates):.1f}, serve "
            f"{statistics.median(serve_rates):.1f}; qms / serve "
            f"{statistics.median(qms_rates) / statistics.median(serve_rates):.2f}x "
            f"(per round {', '.join(f'{r:.2f}' for r in ratios)})"
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", choices=WORKLOADS, action="append")
    parser.add_argument("--rounds", type=int, default=1, help="QMS/serve alternations")
    parser.add_argument("--requests", type=int, default=16)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--sequential", type=int, default=4, help="prompts for `generate`")
    parser.add_argument("--moe-layers", type=int, default=1)
    parser.add_argument("--conversations", type=int, default=8)
    parser.add_argument("--turns", type=int, default=4)
    parser.add_argument("--system-words", type=int, default=700)
    parser.add_argument(
        "--workdir", type=Path, default=None, help="kept, models reused (default: temp, removed)"
    )
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument(
        "--dtype", choices=("float32", "bfloat16"), default="float32", help="both servers"
    )
    args = parser.parse_args()
    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from qms_runtime.tools.tiny_model import write_tiny_model

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="qms-bench-real-"))
    chosen = args.only or list(WORKLOADS)
    print(f"workdir {workdir}; concurrency {args.concurrency}; threads {args.threads}; {load()}")
    # The same KV budget for both servers: 16k tokens (QMS 32-token pages, serve 256).
    budget = ("--cb-num-blocks", "64", "--cb-max-batch-tokens", "512")
    qms_env = {"QMS_KV_CACHE_BLOCKS": "512", "QMS_MAX_MODEL_LEN": "2048", "QMS_DTYPE": args.dtype}
    if "dense-real" in chosen:
        model = workdir / "real-qwen3"
        if not (model / "SHA256SUMS").exists():
            write_tiny_model(model, "qwen3", "real")
        prompts = default_prompts(args.requests)
        title = f"dense Qwen3-0.6B shape, {args.requests} x {args.max_tokens} tokens"
        peers(title, model, args, workdir, prompts, qms_env, budget, args.sequential)
    if "moe-real" in chosen:
        model = workdir / f"real-qwen3-moe-{args.moe_layers}l"
        if not (model / "SHA256SUMS").exists():
            write_tiny_model(model, "qwen3_moe", "real", layers=args.moe_layers)
        prompts = default_prompts(args.requests)
        title = (
            f"Qwen3-30B-A3B layer shape x {args.moe_layers}, {args.requests} x {args.max_tokens}"
        )
        peers(title, model, args, workdir, prompts, qms_env, budget, args.sequential)
    if "shared-prefix" in chosen:
        model = workdir / "small-qwen3"
        if not (model / "SHA256SUMS").exists():
            write_tiny_model(model, "qwen3", "small")
        prompts = shared_prefix_prompts(args.conversations, args.turns, args.system_words)
        title = (
            f"shared prefix (small dense): {args.conversations} conversations x {args.turns} "
            f"turns, ~{args.system_words}-word system prompt, {args.max_tokens} tokens"
        )
        peers(title, model, args, workdir, prompts, qms_env, budget, args.sequential)
    if args.workdir is None:  # the models are GBs: a temp dir of ours goes (logs included)
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
