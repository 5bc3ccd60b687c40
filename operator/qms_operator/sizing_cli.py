"""`qms-operator size MODEL`: the sizing table of a catalog model, so a user can plan a
server before writing its YAML; `qms-operator catalog`: every model of the catalog as
the Markdown table docs/operator.md holds (catalog/sizing.py computes; this prints)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from .catalog import (
    GPUS,
    MODELS,
    find_gpu,
    find_model,
    gpus_needed,
    kv_bytes_per_token,
    need,
    parameters,
)
from .catalog.sizing import size


def size_command(args: argparse.Namespace) -> int:
    model = find_model(args.model)
    if model is None:
        sys.stderr.write(
            f"qms-operator size: {args.model!r} is not in the catalog; known: {', '.join(MODELS)}\n"
        )
        return 2
    gpus = GPUS
    if args.gpu:
        gpu = find_gpu(args.gpu)
        if gpu is None:
            labels = ", ".join(g.labels[0] for g in GPUS)
            sys.stderr.write(f"qms-operator size: unknown GPU {args.gpu!r}; known: {labels}\n")
            return 2
        gpus = [gpu]
    if (args.context is not None and args.context < 1) or args.batch < 1:
        sys.stderr.write("qms-operator size: --context and --batch must be at least 1\n")
        return 2
    required = need(model, args.dtype, args.int8, not args.no_speech, args.context, args.batch)
    per_token = kv_bytes_per_token(model.arch, args.dtype)
    counts = {g.name: gpus_needed(required, g) for g in gpus}
    if args.json:
        out: dict[str, Any] = {
            "model": model.name,
            "repo": model.repo,
            "parameters": parameters(model, required.speech),
            "dtype": args.dtype,
            "int8": args.int8,
            "speech": required.speech,
            "context": required.context,
            "sequences": required.sequences,
            "weightsBytes": required.weights,
            "kvBytesPerToken": per_token,
            "kvCacheBytes": required.kv_cache,
            "headroomBytes": required.headroom,
            "totalBytes": required.total,
            "gpus": {g.name: {"count": counts[g.name], "memoryMiB": g.memory_mib} for g in gpus},
        }
        sys.stdout.write(json.dumps(out, indent=2) + "\n")
        return 0
    weights = f"{args.dtype}{' + int8' if args.int8 else ''}"
    rows = [
        ("model", f"{model.name} ({model.repo})"),
        ("parameters loaded", f"{parameters(model, required.speech):,}"
         f"{' (speech included)' if required.speech else ''}"),
        ("weights", f"{size(required.weights)} ({weights})"),
        ("KV cache per token", f"{per_token:,} bytes"),
        ("KV cache", f"{size(required.kv_cache)} ({required.sequences} x "
         f"{required.context:,} tokens)"),
        ("headroom", size(required.headroom)),
        ("at least", size(required.total)),
    ]  # fmt: skip
    for label, value in rows:
        sys.stdout.write(f"{label:20} {value}\n")
    sys.stdout.write("\nGPUs per replica (at least; the runtime's own check adds buffers):\n")
    for g in gpus:
        sys.stdout.write(f"  {g.name:10} {g.memory_mib:>7,} MiB  {counts[g.name]}\n")
    return 0


def catalog_markdown() -> str:
    """The catalog as docs/operator.md shows it (a test fails when the docs are stale)."""
    lines = [
        "| model | parameters loaded | weights BF16 | weights int8 | KV cache per token "
        "(BF16) | context (max_position_embeddings) | inputs besides text | speaks |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for model in MODELS.values():
        text = need(model, "bfloat16", speech=False, context=1)
        int8 = need(model, "bfloat16", int8=True, speech=False, context=1)
        speech = ""
        if model.speaks:
            speech = f" (+{model.speech_params / 1e9:.2f} B to speak)"
        lines.append(
            f"| [{model.name}](https://huggingface.co/{model.repo}) "
            f"| {parameters(model) / 1e9:.2f} B{speech} | {size(text.weights)} "
            f"| {size(int8.weights)} | {kv_bytes_per_token(model.arch, 'bfloat16'):,} B "
            f"| {model.arch.max_positions:,} | {', '.join(model.inputs) or '-'} "
            f"| {'yes' if model.speaks else 'no'} |"
        )
    return "\n".join(lines) + "\n"


def catalog_command() -> int:
    sys.stdout.write(catalog_markdown())
    return 0
