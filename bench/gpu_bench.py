"""GPU benchmark: QMS vs `transformers serve --continuous-batching` vs one-at-a-time
`generate` at real shapes (random weights), on the accelerator machine, in one command.

    bash bench/gpu_prepare.sh             # here: wheels into .whl/, prints the `run` call
    python3 bench/gpu_bench.py --out DIR  # there (about 6 to 8 minutes on one H200)
    python bench/gpu_bench.py --device cpu --quick   # here: the same code path, tiny models

Workloads (each: QMS, then serve, then `generate` over the first --sequential prompts):
- dense: Qwen3-0.6B's shape, bfloat16, --requests x --max-tokens at --concurrency;
- shared-prefix: the same model, a ~1500-word system prompt shared by every request and
  multi-turn histories (benchkit.shared_prefix_prompts);
- moe: Qwen3-30B-A3B's layer shape with --moe-layers layers, bfloat16.

CUDA graphs / torch.compile: QMS runs without CUDA graphs (engine/batching.py: its
per-request logits processors decide on the host at every step, which a captured graph
would replay) and without compile; serve runs with transformers' defaults (CUDA graphs
auto-decided by `ContinuousBatchingConfig.decide_use_cuda_graphs`, no compile). The table
names the settings each peer ran with. Results also go to DIR/gpu_bench.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
for extra in (ROOT / "runtime", ROOT / "tests" / "cluster", ROOT / "bench"):
    sys.path.insert(0, str(extra))
# Subprocesses (the servers, the generate worker) import the same trees.
os.environ["PYTHONPATH"] = os.pathsep.join(
    [str(ROOT / "runtime"), str(ROOT / "tests" / "cluster"), os.environ.get("PYTHONPATH", "")]
)
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from benchkit import (  # noqa: E402
    Result,
    default_prompts,
    report,
    run_qms,
    run_sequential,
    run_transformers_serve,
    shared_prefix_prompts,
)


def environment(device: str) -> str:
    import torch
    import transformers

    gpu = torch.cuda.get_device_name(0) if device == "cuda" else "none"
    return f"torch {torch.__version__}, transformers {transformers.__version__}, GPU {gpu}"


def workload(
    title: str,
    model: Path,
    args: argparse.Namespace,
    workdir: Path,
    prompts: list[list[dict[str, str]]],
    results_out: dict[str, list[dict[str, object]]],
) -> None:
    dtype = "bfloat16" if args.device == "cuda" else "float32"
    qms_env = {
        "QMS_DTYPE": "auto",
        "QMS_MAX_MODEL_LEN": "4096",
        "QMS_MAX_BATCHED_TOKENS": str(args.max_batched_tokens),
    }
    if args.device == "cpu":
        qms_env["QMS_MAX_MODEL_LEN"] = "512"
    serve_cb: tuple[str, ...] = ("--cb-max-batch-tokens", str(args.max_batched_tokens))
    if args.device == "cpu":
        serve_cb += ("--cb-num-blocks", "64")
    started = time.perf_counter()
    results: list[Result] = [run_qms(model, args, workdir, env_extra=qms_env, prompts=prompts)]
    results[0].name += " (no graphs)"
    results.append(
        run_transformers_serve(
            model,
            args,
            workdir,
            True,
            cb_args=serve_cb,
            prompts=prompts,
            device=args.device,
            dtype=dtype,
        )
    )
    results[1].name += " (graphs auto)"
    if args.sequential:
        results.append(
            run_sequential(model, args, workdir, prompts[: args.sequential], device=args.device)
        )
    report(f"{title} [{time.perf_counter() - started:.0f}s]", results)
    results_out[title] = [
        {**dataclasses.asdict(r), "tokens_per_s": r.tokens_per_s} for r in results
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    parser.add_argument("--quick", action="store_true", help="tiny models, few requests")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--requests", type=int, default=64)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--sequential", type=int, default=8)
    parser.add_argument("--moe-layers", type=int, default=2)
    parser.add_argument("--max-batched-tokens", type=int, default=2048)
    parser.add_argument("--only", choices=["dense", "shared-prefix", "moe"], action="append")
    args = parser.parse_args()
    if args.quick:
        args.requests, args.max_tokens, args.sequential, args.moe_layers = 4, 8, 2, 1
    from qms_runtime.tools.tiny_model import write_tiny_model

    workdir = Path(tempfile.mkdtemp(prefix="qms-gpu-bench-"))
    print(f"{environment(args.device)}; workdir {workdir}; load {os.getloadavg()[0]:.1f}")
    size = "tiny" if args.quick else "real"
    shape = "tiny" if args.quick else "Qwen3-0.6B shape"
    dtype = None if args.quick else "bfloat16"
    chosen = args.only or ["dense", "shared-prefix", "moe"]
    out: dict[str, list[dict[str, object]]] = {}
    if {"dense", "shared-prefix"} & set(chosen):
        t0 = time.perf_counter()
        dense = write_tiny_model(workdir / "qwen3", "qwen3", size, dtype=dtype)
        print(f"dense model written in {time.perf_counter() - t0:.0f}s", flush=True)
        if "dense" in chosen:
            title = f"dense Qwen3 {size} ({shape}), {args.requests} x {args.max_tokens}"
            workload(title, dense, args, workdir, default_prompts(args.requests), out)
        if "shared-prefix" in chosen:
            words = 40 if args.quick else 1500
            prompts = shared_prefix_prompts(args.requests // 4, 4, words)
            title = f"shared prefix, Qwen3 {size}, {len(prompts)} requests, {words} words"
            workload(title, dense, args, workdir, prompts, out)
    if "moe" in chosen:
        t0 = time.perf_counter()
        moe = write_tiny_model(
            workdir / "qwen3-moe", "qwen3_moe", size, layers=args.moe_layers, dtype=dtype
        )
        print(f"MoE model written in {time.perf_counter() - t0:.0f}s", flush=True)
        title = (
            f"Qwen3-30B-A3B layer shape x {args.moe_layers}, {args.requests} x {args.max_tokens}"
        )
        workload(title, moe, args, workdir, default_prompts(args.requests), out)
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "gpu_bench.json").write_text(json.dumps(out, indent=1))
    return 0 if all(row["failures"] == 0 for rows in out.values() for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
