"""What the fit check estimates vs what the process really holds, on CPU (issue 26, point 4).

    python bench/fit_measure.py                                  # small qwen3, 2048 x 8
    python bench/fit_measure.py --size real --layers 4 --context 2048 --batch 8
    python bench/fit_measure.py --model DIR --context 4096 --batch 4

Writes a random-weight model (qms_runtime.tools.tiny_model) unless --model is given, then
in this one process: the estimate (models/fit.py, before loading), the resident set size
(RSS) after loading, after the engine started (transformers' paged cache and its static
buffers), and its peak while a full batch of `--batch` sequences of `--context` tokens
(a prompt, then `--new-tokens` generated up to the full context) runs, sampled every 10
ms. It prints what each stage added next to the estimate's parts: the weights,
continuous batching (transformers' `compute_memory_footprint`), and what is left for the
headroom (what loading, the allocator and the libraries hold beyond both).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

MIB = 1024**2


def _rss() -> int:
    psutil: Any = importlib.import_module("psutil")
    return int(psutil.Process().memory_info().rss)


class PeakRss:
    """The highest RSS seen, sampled every 10 ms in a thread."""

    def __init__(self) -> None:
        self.peak = _rss()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.01):
            self.peak = max(self.peak, _rss())

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _rss())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, help="a model directory (default: write one)")
    parser.add_argument("--arch", default="qwen3", choices=["qwen3", "qwen3_moe", "qwen3_omni_moe"])
    parser.add_argument("--size", default="small", choices=["tiny", "small", "real"])
    parser.add_argument("--layers", type=int, default=None)
    parser.add_argument("--context", type=int, default=2048, help="max_model_len")
    parser.add_argument("--batch", type=int, default=8, help="max_batch_size")
    parser.add_argument("--new-tokens", type=int, default=16, help="generated per sequence")
    args = parser.parse_args()

    from qms_runtime.engine.batching import Engine, cb_config_kwargs
    from qms_runtime.metrics import RuntimeMetrics
    from qms_runtime.models.fit import estimate, size
    from qms_runtime.models.loading import load_model
    from qms_runtime.settings import RuntimeSettings
    from qms_runtime.tools.tiny_model import write_tiny_model
    from qms_runtime.types import SamplingParams

    model_dir = args.model
    if model_dir is None:
        model_dir = Path(tempfile.mkdtemp(prefix="fit-measure-")) / args.arch
        write_tiny_model(
            model_dir, args.arch, args.size, max_positions=args.context, layers=args.layers
        )
    settings = RuntimeSettings(
        model_dir=model_dir, max_model_len=args.context, max_batch_size=args.batch, warmup=False
    )
    need = estimate(model_dir, settings, False, cb_config_kwargs)
    before = _rss()
    loaded = load_model(settings)
    after_load = _rss()
    new_tokens = args.new_tokens
    prompt_len = args.context - new_tokens - 1  # the sequences end at the full context

    async def run() -> tuple[int, PeakRss, float]:
        engine = Engine(loaded, settings, RuntimeMetrics("fit-measure"))
        engine.start()
        try:
            while getattr(engine._manager, "batch_processor", None) is None:
                await asyncio.sleep(0.01)
            started = _rss()
            params = SamplingParams(max_new_tokens=new_tokens, ignore_eos=True)
            prompts = [[5 + (i + j) % 100 for j in range(prompt_len)] for i in range(args.batch)]
            t0 = time.monotonic()
            with PeakRss() as peak:
                await asyncio.gather(*(engine.generate(p, params) for p in prompts))
            return started, peak, time.monotonic() - t0
        finally:
            engine.stop(timeout=60)

    started, peak, seconds = asyncio.run(run())

    def row(what: str, measured: int, estimated: int | None = None) -> None:
        est = "" if estimated is None else f"{estimated / MIB:12.1f}"
        print(f"{what:52s} {measured / MIB:12.1f} {est}")

    print(f"model {model_dir} ({args.arch} {args.size}, layers {args.layers}), CPU float32,")
    print(f"max_model_len {args.context}, max_batch_size {args.batch}: {args.batch} sequences of")
    print(f"{prompt_len} prompt + {new_tokens} new tokens in {seconds:.1f} s\n")
    print(f"{'MiB':52s} {'measured':>12s} {'estimated':>12s}")
    row("RSS before loading", before)
    row("loading added (weights)", after_load - before, need.weights)
    row("engine start added (cache, static buffers)", started - after_load)
    row("generation peak added over the start", peak.peak - started)
    row("start + peak (continuous batching)", peak.peak - after_load, need.batching)
    row("  of which the estimate's KV cache", need.kv_cache, need.kv_cache)
    row("load + start + peak over RSS before loading", peak.peak - before)
    row("the estimate: weights + batching (no headroom)", need.weights + need.batching)
    print(
        f"\nestimate total {size(need.total)} = weights {size(need.weights)} + batching "
        f"{size(need.batching)} / {need.max_memory_percent:.0%} + headroom {size(need.headroom)}"
    )


if __name__ == "__main__":
    main()
