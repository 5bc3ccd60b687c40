"""`qms-operator`: run the operator, print the CRD, or size a Qwen model for GPUs."""

from __future__ import annotations

import argparse
import sys


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="qms-operator", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("crd", help="print the QwenModelServer CRD YAML (crds/ holds its output)")
    run = sub.add_parser("run", help="run the operator against the current kubeconfig")
    scope = run.add_mutually_exclusive_group()
    scope.add_argument(
        "--namespace", "-n", action="append", default=[], help="watch this namespace (repeatable)"
    )
    scope.add_argument("--all-namespaces", "-A", action="store_true", help="watch every namespace")
    run.add_argument("--health-port", type=int, default=8081, help="port of GET /healthz")
    run.add_argument("--metrics-port", type=int, default=9090, help="port of GET /metrics")
    run.add_argument(
        "--resync-seconds", type=float, default=60.0, help="periodic reconcile interval"
    )
    run.add_argument("--workers", type=int, default=16, help="servers reconciled at once")
    run.add_argument(
        "--lease-namespace", default="", help="namespace of the leader Lease (empty: none)"
    )
    run.add_argument("--verbose", action="store_true", help="debug logging")
    size = sub.add_parser(
        "size", help="what a Qwen model of the catalog needs, and how many GPUs of each type"
    )
    size.add_argument("model", help="catalog name or Hugging Face repo id, e.g. qwen3-8b")
    size.add_argument("--gpu", help="one accelerator type (label value), e.g. nvidia-h200")
    size.add_argument("--context", type=int, help="max_model_len (default: the model's)")
    size.add_argument("--batch", type=int, default=1, help="sequences of that length at once")
    size.add_argument("--dtype", choices=["bfloat16", "float16", "float32"], default="bfloat16")
    size.add_argument("--int8", action="store_true", help="int8 weight-only quantization")
    size.add_argument("--no-speech", action="store_true", help="Qwen3-Omni without speech out")
    size.add_argument("--json", action="store_true", help="one JSON object")
    sub.add_parser("catalog", help="the Qwen models the operator knows, as a Markdown table")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "crd":
        from .crd import crd_yaml

        sys.stdout.write(crd_yaml())
        return 0
    if args.command == "size":
        from .sizing_cli import size_command

        return size_command(args)
    if args.command == "catalog":
        from .sizing_cli import catalog_command

        return catalog_command()
    from .runner import run

    return run(args)


if __name__ == "__main__":
    raise SystemExit(main())
