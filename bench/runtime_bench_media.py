"""Runtime benchmark, media: text-only throughput with and without concurrent media requests.

    python bench/runtime_bench_media.py      # tiny Qwen3-Omni-MoE, 32 text requests x 64 tokens

One QMS server on the tiny Omni model. First the text-only load alone (continuous
batching); then the same text load while `--media-concurrency` clients keep sending
image+audio requests (they run on the separate, one-at-a-time media path). Prints both
text results, the ratio, and the media path's own throughput.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from benchkit import Result, load_server, report

from qms_testkit.net import free_port
from qms_testkit.processes import ServiceProcess, runtime_command


def _media_body(model: str, max_tokens: int) -> dict[str, Any]:
    import soundfile
    from PIL import Image

    pixels = (np.random.RandomState(0).rand(56, 56, 3) * 255).astype("uint8")
    image = io.BytesIO()
    Image.fromarray(pixels).save(image, format="PNG")
    audio = io.BytesIO()
    t = np.arange(16_000) / 16_000
    soundfile.write(audio, (0.5 * np.sin(2 * np.pi * 440 * t)).astype("float32"), 16_000,
                    format="WAV")  # fmt: skip
    image_url = "data:image/png;base64," + base64.b64encode(image.getvalue()).decode()
    content = [
        {"type": "image_url", "image_url": {"url": image_url}},
        {"type": "input_audio",
         "input_audio": {"data": base64.b64encode(audio.getvalue()).decode(), "format": "wav"}},
        {"type": "text", "text": "Describe both."},
    ]  # fmt: skip
    return {"model": model, "messages": [{"role": "user", "content": content}],
            "max_tokens": max_tokens, "temperature": 0, "ignore_eos": True}  # fmt: skip


async def _media_load(
    base_url: str, body: dict[str, Any], clients: int, stop: asyncio.Event
) -> tuple[int, int, float]:
    """Keep `clients` media requests in flight until `stop`; (requests, tokens, seconds)."""
    done = tokens = 0
    start = time.perf_counter()
    async with httpx.AsyncClient(base_url=base_url, timeout=600) as client:

        async def loop() -> None:
            nonlocal done, tokens
            while not stop.is_set():
                response = await client.post("/v1/chat/completions", json=body)
                response.raise_for_status()
                done += 1
                tokens += response.json()["usage"]["completion_tokens"]

        await asyncio.gather(*(loop() for _ in range(clients)))
    return done, tokens, time.perf_counter() - start


async def _text_with_media(
    base_url: str, pid: int, model: str, args: argparse.Namespace
) -> tuple[Result, tuple[int, int, float]]:
    stop = asyncio.Event()
    body = _media_body(model, args.media_max_tokens)
    media = asyncio.create_task(_media_load(base_url, body, args.media_concurrency, stop))
    await asyncio.sleep(1.0)  # media requests are running before the text load starts
    text = await load_server("text + media", base_url, pid, model, args, {"ignore_eos": True})
    stop.set()
    return text, await media


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=32)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--media-concurrency", type=int, default=2)
    parser.add_argument("--media-max-tokens", type=int, default=16)
    parser.add_argument(
        "--media-step-interval", type=int, default=None, help="QMS_MEDIA_STEP_INTERVAL"
    )
    parser.add_argument(
        "--threads", type=int, default=os.cpu_count() or 1, help="OMP_NUM_THREADS of the server"
    )
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from qms_runtime.tools.tiny_model import write_tiny_model

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="qms-bench-media-"))
    omni = workdir / "tiny-qwen3-omni"
    if not (omni / "SHA256SUMS").exists():
        write_tiny_model(omni, "qwen3_omni_moe", "tiny")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("QMS_")}
    env.update(QMS_LOG_FORMAT="text", QMS_MAX_BATCH_SIZE=str(args.concurrency),
               QMS_MAX_REQUEST_BYTES=str(8 * 2**20))  # fmt: skip
    if args.media_step_interval is not None:
        env["QMS_MEDIA_STEP_INTERVAL"] = str(args.media_step_interval)
    log = workdir / "qms-media.log"
    process = ServiceProcess(runtime_command(omni, port), log, env)
    base_url = f"http://127.0.0.1:{port}"
    print(
        f"workdir {workdir}; text {args.requests} x {args.max_tokens} tokens at concurrency "
        f"{args.concurrency}; media clients {args.media_concurrency} x "
        f"{args.media_max_tokens} tokens; cpus {os.cpu_count()}, threads {args.threads}"
    )
    try:
        process.wait_http(base_url + "/ready", timeout=300)
        alone = asyncio.run(
            load_server("text only", base_url, process.pid, omni.name, args, {"ignore_eos": True})
        )
        with_media, (media_done, media_tokens, media_s) = asyncio.run(
            _text_with_media(base_url, process.pid, omni.name, args)
        )
    finally:
        process.stop()
    report(
        "tiny Qwen3-Omni-MoE: text-only requests, without and with media load", [alone, with_media]
    )
    if alone.tokens_per_s:
        ratio = with_media.tokens_per_s / alone.tokens_per_s
        print(f"text tok/s with media / without: {ratio:.2f}")
    print(f"media path: {media_done} requests, {media_tokens} tokens in {media_s:.1f}s "
          f"= {media_tokens / media_s:.1f} tok/s, {media_done / media_s:.2f} req/s")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
