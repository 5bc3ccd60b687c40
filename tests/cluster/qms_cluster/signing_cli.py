"""`python -m qms_cluster.signing keygen | sign | verify | tiny-image` (signing.main runs
it)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from . import build
from .oci import tiny_image
from .signing import (
    KEY_PREFIX,
    VerificationError,
    ensure_tools,
    key_pair,
    sign_archive,
    verify_layout,
)


def add_commands(sub: Any) -> None:
    """Add ``keygen``, ``sign``, ``verify`` and ``tiny-image`` to an argparse subparsers.

    Each sets ``run`` (a function of the parsed namespace, returning the exit code).
    """
    p = sub.add_parser("keygen", help="make a cosign key pair in a directory (kept if present)")
    p.add_argument("--key-dir", type=Path, required=True)
    p.set_defaults(run=_cmd_keygen)
    p = sub.add_parser(
        "sign",
        help="sign an OCI image archive (loopback registry) and save it signed as an OCI layout",
    )
    p.add_argument("archive", type=Path, help="OCI layout dir, OCI archive tar or docker save tar")
    p.add_argument("--key-dir", type=Path, required=True, help="key pair here, made if absent")
    p.add_argument(
        "--out", type=Path, required=True, help="OCI layout to write (image + signature)"
    )
    p.add_argument("--repository", default="qms/image", help="repository name in the registry")
    p.add_argument("--tag", default="latest")
    p.set_defaults(run=_cmd_sign)
    p = sub.add_parser(
        "verify", help="verify a signed OCI layout (from `sign`) offline with a public key"
    )
    p.add_argument("layout", type=Path)
    group = p.add_mutually_exclusive_group(required=True)
    group.add_argument("--key-dir", type=Path, help="directory holding cosign.pub")
    group.add_argument("--key", type=Path, help="a public key file")
    p.set_defaults(run=_cmd_verify)
    p = sub.add_parser("tiny-image", help="write a tiny one-file OCI archive (for trying this out)")
    p.add_argument("path", type=Path)
    p.add_argument("--text", default="hello from qms\n", help="content of /hello.txt")
    p.set_defaults(run=_cmd_tiny_image)


def _stderr(msg: str) -> None:
    print(f"qms-cluster: {msg}", file=sys.stderr, flush=True)


def _cmd_keygen(args: argparse.Namespace) -> int:
    ensure_tools(_stderr)
    kp = key_pair(args.key_dir, log=_stderr)
    print(kp.public_key)
    return 0


def _cmd_sign(args: argparse.Namespace) -> int:
    ensure_tools(_stderr)
    kp = key_pair(args.key_dir, log=_stderr)
    s = sign_archive(args.archive, kp, args.out, args.repository, args.tag, log=_stderr)
    print(s.digest)
    return 0


def _cmd_verify(args: argparse.Namespace) -> int:
    ensure_tools(_stderr)
    pub = args.key if args.key else args.key_dir / f"{KEY_PREFIX}.pub"
    try:
        digest = verify_layout(args.layout, pub, log=_stderr)
    except VerificationError as e:
        print(f"qms-cluster: verification FAILED: {e.message}", file=sys.stderr)
        return 1
    print(f"Verified OK: {digest}")
    return 0


def _cmd_tiny_image(args: argparse.Namespace) -> int:
    print(tiny_image(args.path, {"hello.txt": args.text.encode()}))
    return 0


def run(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m qms_cluster.signing",
        description=f"Sign and verify OCI images offline with cosign {build.COSIGN_VERSION} "
        "(a registry on 127.0.0.1 while signing). See docs/signing.md.",
    )
    add_commands(p.add_subparsers(dest="command", required=True))
    args = p.parse_args(argv)
    try:
        return int(args.run(args))
    except (RuntimeError, ValueError, OSError) as e:
        print(f"qms-cluster: error: {e}", file=sys.stderr)
        return 1
