"""The engine's scheduling settings, each value against the default, on the same workloads.

    python bench/engine_knobs.py                    # small dense Qwen3, 2 workloads
    python bench/engine_knobs.py --rounds 3 --model DIR

For each setting (`page_size`, `max_batched_tokens`, `scheduler`, `prefix_caching`) and
each value, one QMS server on `--model` runs two workloads: 32 independent chats (c=16,
64 tokens) and the shared-prefix chat traffic of runtime_bench_real.py (8 conversations
x 4 turns behind one ~700-word system prompt). The default configuration runs before
every value of a setting (same load, alternating), and each value prints tokens/s and
TTFT p99 as ratios of that default: the measurements behind the defaults in
docs/runtime.md.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

from benchkit import Result, default_prompts, percentile, run_qms, shared_prefix_prompts

KNOBS: dict[str, list[str]] = {
    "QMS_PAGE_SIZE": ["16", "64", "256"],
    "QMS_MAX_BATCHED_TOKENS": ["256", "1024"],
    "QMS_SCHEDULER": ["prefill_first"],
    "QMS_PREFIX_CACHING": ["false"],
}
DEFAULTS = {"QMS_PAGE_SIZE": "32", "QMS_MAX_BATCHED_TOKENS": "512", "QMS_SCHEDULER": "fifo",
            "QMS_PREFIX_CACHING": "true"}  # fmt: skip


def measure(model: Path, args: argparse.Namespace, workdir: Path, env: dict[str, str]) -> dict:
    out = {}
    for workload, prompts in (
        ("independent", default_prompts(args.requests)),
        ("shared-prefix", shared_prefix_prompts(8, 4, 700)),
    ):
        rates, ttfts = [], []
        for _ in range(args.rounds):
            result: Result = run_qms(model, args, workdir, env_extra=env, prompts=prompts)
            if result.failures:
                raise SystemExit(f"{env}: {result.failures} requests failed")
            rates.append(result.tokens_per_s)
            ttfts.append(percentile(result.ttft, 99))
        out[workload] = (statistics.median(rates), statistics.median(ttfts))
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=None, help="default: small dense Qwen3")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--requests", type=int, default=32)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--only", choices=list(KNOBS), action="append")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    workdir = Path(tempfile.mkdtemp(prefix="qms-knobs-"))
    model = args.model
    if model is None:
        from qms_runtime.tools.tiny_model import write_tiny_model

        model = write_tiny_model(workdir / "small-qwen3", "qwen3", "small")
    base_env = {"QMS_KV_CACHE_BLOCKS": "1024", "QMS_MAX_MODEL_LEN": "2048", **DEFAULTS}
    print(f"model {model}; {args.rounds} round(s) each; c={args.concurrency}; {base_env}")
    print(f"{'setting':32} {'workload':14} {'tok/s':>7} {'x default':>9} {'TTFT p99':>9} "
          f"{'x default':>9}")  # fmt: skip
    for knob in args.only or list(KNOBS):
        for value in KNOBS[knob]:
            base = measure(model, args, workdir, base_env)
            env = {**base_env, knob: value}
            if knob == "QMS_PAGE_SIZE":  # the same KV budget in tokens
                env["QMS_KV_CACHE_BLOCKS"] = str(1024 * 32 // int(value))
            tried = measure(model, args, workdir, env)
            for workload, (rate, ttft) in tried.items():
                base_rate, base_ttft = base[workload]
                print(
                    f"{knob + '=' + value:32} {workload:14} {rate:7.1f} {rate / base_rate:9.2f} "
                    f"{ttft:9.3f} {ttft / base_ttft:9.2f}",
                    flush=True,
                )
    shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
