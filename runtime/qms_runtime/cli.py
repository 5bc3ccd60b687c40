"""`qms-runtime`: serve a model, download one from the Hub, write a tiny model, or run the
demo."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from qms_runtime.logs import configure_logging, write_termination_message
from qms_runtime.settings import RuntimeSettings, load_settings

# Flags of `serve`: every RuntimeSettings field (dashes for underscores), so also the
# env var QMS_<NAME>; help texts come from the fields. Not as a flag: the API key (a
# command line is visible to every process; use QMS_API_KEY or --api-key-file).
_ENV_ONLY = frozenset({"api_key"})
_SERVE_FLAGS = tuple(name for name in RuntimeSettings.model_fields if name not in _ENV_ONLY)
_BOOLEAN_FLAGS = frozenset(
    name for name, info in RuntimeSettings.model_fields.items() if info.annotation is bool
)


def _add_serve(sub: Any) -> None:
    serve = sub.add_parser("serve", help="serve a local model over the OpenAI API")
    for name in _SERVE_FLAGS:
        info = RuntimeSettings.model_fields[name]
        flag = "--" + name.replace("_", "-")
        help_text = f"{info.description} (env QMS_{name.upper()})"
        if name in _BOOLEAN_FLAGS:
            serve.add_argument(
                flag, dest=name, default=None, choices=["true", "false"], help=help_text
            )
        else:
            serve.add_argument(flag, dest=name, default=None, help=help_text)


def _add_tiny_model(sub: Any) -> None:
    from qms_runtime.tools.tiny_model import ARCHS, SIZES

    tiny = sub.add_parser("tiny-model", help="write a tiny random-weight Qwen model")
    tiny.add_argument("directory", type=Path)
    tiny.add_argument("--arch", choices=ARCHS, default="qwen3")
    tiny.add_argument("--size", choices=SIZES, default="tiny")
    tiny.add_argument("--seed", type=int, default=0)
    tiny.add_argument("--layers", type=int, default=None, help="decoder layers (default: by size)")
    tiny.add_argument(
        "--from-config",
        type=Path,
        default=None,
        metavar="DIR",
        help="build from a real checkpoint's non-weight files in DIR (config, tokenizer, "
        "chat template, processor configs), --layers decoder layers (default 2); "
        "--arch and --size do not apply",
    )


def _add_download(sub: Any) -> None:
    download = sub.add_parser(
        "download",
        help="download a model from the Hugging Face Hub (HF_ENDPOINT) into a cache "
        "directory once: <cache-dir>/<namespace>--<name>/<revision>, checksums verified",
    )
    download.add_argument("--repo-id", required=True, help="namespace/name on the Hub")
    download.add_argument("--revision", required=True, help="branch, tag or commit hash")
    download.add_argument("--cache-dir", type=Path, required=True, help="the shared volume")
    download.add_argument(
        "--token-file", type=Path, default=None, help="file holding a Hub token (a Secret)"
    )
    download.add_argument(
        "--termination-log-path",
        default=None,
        help="where a failure is written as one line (env QMS_TERMINATION_LOG_PATH, "
        "default /dev/termination-log)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="qms-runtime", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    _add_serve(sub)
    _add_download(sub)
    _add_tiny_model(sub)
    demo = sub.add_parser("demo", help="tiny model + server + one chat request via openai")
    demo.add_argument("--workdir", type=Path, default=None)
    return parser


def _termination_log_path(args: argparse.Namespace) -> Path:
    """The flag's or QMS_TERMINATION_LOG_PATH's file, else Kubernetes' default."""
    given = args.termination_log_path or os.environ.get("QMS_TERMINATION_LOG_PATH")
    default: Path = RuntimeSettings.model_fields["termination_log_path"].default
    return Path(given) if given else default


def _invalid(message: str, args: argparse.Namespace) -> int:
    """Exit 2 with the message on stderr and in the termination-message file."""
    line = f"qms-runtime: invalid settings: {message}"
    print(line, file=sys.stderr)
    write_termination_message(_termination_log_path(args), line)
    return 2


def _download(args: argparse.Namespace) -> int:
    """Exit 0 once the snapshot is there (downloaded now or earlier); else 1 with one
    line, naming the file or the HTTP status, on stderr and in the termination file."""
    from qms_runtime.models.hub import DownloadError, download_snapshot, read_token

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("huggingface_hub").propagate = False  # it has a handler of its own
    try:
        token = read_token(args.token_file)
        result = download_snapshot(
            args.repo_id,
            args.revision,
            args.cache_dir,
            token=token,
            token_source=str(args.token_file) if token is not None else None,
            endpoint=os.environ.get("HF_ENDPOINT") or None,
        )
    except DownloadError as exc:
        line = f"qms-runtime download: {exc}"
        print(line, file=sys.stderr)
        write_termination_message(_termination_log_path(args), line)
        return 1
    done = "downloaded" if result.downloaded else "already downloaded"
    print(
        f"{done} {args.repo_id}@{args.revision} (commit {result.commit}, "
        f"{result.files} files) in {result.path}"
    )
    return 0


def _serve(args: argparse.Namespace) -> int:
    overrides = {name: getattr(args, name) for name in _SERVE_FLAGS}
    try:
        settings = load_settings(**overrides)
    except ValidationError as exc:
        # Without the input values: they hold every setting, the API key included.
        problems = "; ".join(
            f"{'.'.join(str(p) for p in error['loc']) or 'settings'}: {error['msg']}"
            for error in exc.errors(include_input=False, include_url=False)
        )
        return _invalid(problems, args)
    except (OSError, ValueError) as exc:
        return _invalid(str(exc), args)
    configure_logging(settings.log_format, settings.log_level)
    from qms_runtime.run import serve

    return serve(settings)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "download":
        # The one command that reaches the Hub (read by huggingface_hub at import);
        # no telemetry in the user agent (it would fetch a registry from the endpoint).
        os.environ["HF_HUB_OFFLINE"] = "0"
        os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
        return _download(args)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # models are local; never reach the hub
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if args.command == "serve":
        return _serve(args)
    if args.command == "tiny-model":
        from qms_runtime.tools.tiny_model import write_tiny_model

        logging.basicConfig(level=logging.INFO, format="%(message)s")
        if args.from_config is not None:
            from qms_runtime.tools.from_config import write_from_config

            write_from_config(args.directory, args.from_config, args.layers or 2, args.seed)
            print(f"wrote a model from {args.from_config} to {args.directory}")
            return 0
        write_tiny_model(args.directory, args.arch, args.size, args.seed, layers=args.layers)
        print(f"wrote {args.size} {args.arch} model to {args.directory}")
        return 0
    from qms_runtime.tools.demo import run_demo

    return run_demo(args.workdir)


if __name__ == "__main__":
    sys.exit(main())
