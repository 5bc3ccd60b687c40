"""QMS against QMS: the runtime of another source tree (before a change) and this one
(after), same model, same load, alternating rounds in one run.

    git worktree add /tmp/qms-before <commit>
    python bench/runtime_ab.py --before /tmp/qms-before/runtime [--rounds 3]
    python bench/runtime_ab.py --before /tmp/qms-before/runtime --model DIR  # e.g. real shape

Prints each round and the median tokens/s of both, with after / before (these machines
are shared and noisy: only the ratio of medians measured in the same run means much).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path

from benchkit import report, run_qms


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", type=Path, required=True, help="the other tree's runtime/")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--requests", type=int, default=32)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--model", type=Path, default=None, help="default: tiny dense Qwen3")
    args = parser.parse_args()
    if not (args.before / "qms_runtime").is_dir():
        parser.error(f"{args.before} has no qms_runtime package")
    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from qms_runtime.tools.tiny_model import write_tiny_model

    workdir = Path(tempfile.mkdtemp(prefix="qms-ab-"))
    model = args.model or write_tiny_model(workdir / "small-qwen3", "qwen3", "small")
    title = f"{model.name}" if args.model else "dense Qwen3, ~21M"
    env = {"QMS_KV_CACHE_BLOCKS": "512", "QMS_MAX_MODEL_LEN": "2048"} if args.model else {}
    results = []
    for round_ in range(args.rounds):
        results.append(
            run_qms(model, args, workdir, runtime_src=args.before, name="before", env_extra=env)
        )
        results.append(run_qms(model, args, workdir, name="after", env_extra=env))
        print(f"round {round_ + 1}: " + ", ".join(
            f"{r.name} {r.tokens_per_s:.1f} tok/s" for r in results[-2:]
        ), flush=True)  # fmt: skip
    pairs = [(2 * i + 1, 2 * i) for i in range(args.rounds)]  # after / before, per round
    report(f"QMS before vs after, {args.rounds} rounds ({title})", results, pairs)
    before = statistics.median(r.tokens_per_s for r in results if r.name == "before")
    after = statistics.median(r.tokens_per_s for r in results if r.name == "after")
    ratio = after / before
    best = max(r.tokens_per_s for r in results if r.name == "after") / max(
        r.tokens_per_s for r in results if r.name == "before"
    )
    print(f"median tok/s: before {before:.1f}, after {after:.1f}; after / before {ratio:.2f}x")
    print(f"best round of each: after / before {best:.2f}x")
    return 0 if all(r.failures == 0 for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
