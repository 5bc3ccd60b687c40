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
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchkit import OMNI_SERVE_TOKENS, report, run_qms, run_sequential, run_transformers_serve


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
