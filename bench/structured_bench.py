"""Throughput cost of grammar-constrained requests and of `logprobs`, against plain
requests measured in the same run on the same server (issue 13's target: constrained
>= 0.7x unconstrained tokens/s at concurrency 16).

    python bench/structured_bench.py                 # tiny dense Qwen3, 4 rounds
    python bench/structured_bench.py --size small    # the ~21M model of runtime_bench.py

One server, one model; each round runs the workloads one after another in a rotating
order (WORKLOADS: plain, json_schema, logprobs with top 5, penalties), each as
`--requests` chat requests at `--concurrency`, sampled (temperature 0.8, seeded), up to
`--max-tokens` tokens; a constrained answer ends when its grammar is complete (then only
EOS is allowed). Throughput counts generated tokens (usage.completion_tokens) over the
workload's wall time; prints the median of the rounds per workload and its ratio to plain.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from qms_testkit.processes import start_server

# Long enough for 64+ tokens of the tiny tokenizer; an array of bounded items.
SCHEMA = {
    "type": "object",
    "properties": {
        "items": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "name": {"type": "string", "maxLength": 12},
                    "count": {"type": "integer", "minimum": 0, "maximum": 999},
                    "ok": {"type": "boolean"},
                },
                "required": ["name", "count", "ok"],
                "additionalProperties": False,
            },
        }
    },
    "required": ["items"],
    "additionalProperties": False,
}
WORKLOADS: dict[str, dict[str, Any]] = {
    "plain": {},
    "json_schema": {
        "response_format": {"type": "json_schema", "json_schema": {"name": "a", "schema": SCHEMA}}
    },
    "logprobs_top5": {"logprobs": True, "top_logprobs": 5},
    "penalties": {"presence_penalty": 0.5, "frequency_penalty": 0.5, "repetition_penalty": 1.1},
}


async def workload(
    base: str, extra: dict[str, Any], requests: int, concurrency: int, max_tokens: int
) -> tuple[float, int, int]:
    limit = asyncio.Semaphore(concurrency)
    tokens = failures = 0

    async def one(client: httpx.AsyncClient, i: int) -> None:
        nonlocal tokens, failures
        body = {
            "model": "bench",
            "messages": [{"role": "user", "content": f"List the items of order {i}."}],
            "max_tokens": max_tokens,
            "temperature": 0.8,
            "seed": i,
            **extra,
        }
        async with limit:
            response = await client.post("/v1/chat/completions", json=body)
        if response.status_code != 200:
            failures += 1
            return
        tokens += response.json()["usage"]["completion_tokens"]

    async with httpx.AsyncClient(base_url=base, timeout=600) as client:
        start = time.perf_counter()
        await asyncio.gather(*(one(client, i) for i in range(requests)))
        wall = time.perf_counter() - start
    return tokens / wall, tokens, failures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="tiny")
    parser.add_argument("--requests", type=int, default=32)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--max-tokens", type=int, default=48)
    parser.add_argument("--rounds", type=int, default=4)
    args = parser.parse_args()
    from qms_runtime.tools.tiny_model import write_tiny_model

    with tempfile.TemporaryDirectory(prefix="qms-structured-bench-") as tmp:
        model_dir = write_tiny_model(Path(tmp) / "model", "qwen3", size=args.size)
        server = start_server(
            model_dir, Path(tmp), served_model_name="bench", max_batch_size=args.concurrency
        )
        try:
            names = list(WORKLOADS)
            rates: dict[str, list[float]] = {name: [] for name in names}
            failed = 0
            for round_ in range(args.rounds + 1):  # round 0 warms up and is not counted
                order = names[round_ % len(names) :] + names[: round_ % len(names)]
                for name in order:
                    rate, _, failures = asyncio.run(
                        workload(
                            server.base_url,
                            WORKLOADS[name],
                            args.requests,
                            args.concurrency,
                            args.max_tokens,
                        )
                    )
                    failed += failures
                    if round_:
                        rates[name].append(rate)
        finally:
            server.stop()
    load = os.getloadavg()
    print(f"size={args.size} requests={args.requests} concurrency={args.concurrency} "
          f"max_tokens={args.max_tokens} rounds={args.rounds} failures={failed} "
          f"load={load[0]:.1f}")  # fmt: skip
    plain = statistics.median(rates["plain"])
    print(f"{'workload':<16}{'tokens/s (median)':>20}{'x plain':>10}")
    for name in names:
        median = statistics.median(rates[name])
        print(f"{name:<16}{median:>20.1f}{median / plain:>10.2f}")


if __name__ == "__main__":
    main()
