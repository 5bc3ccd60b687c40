"""Checksum manifests of a model directory: write `SHA256SUMS`, verify it (or `MD5SUMS`).

The format is `sha256sum`'s own (`<hex>  <relative path>`), so `sha256sum -c SHA256SUMS`
works in a Dockerfile too. Every weight file must be listed and must match; anything
else stops the process before the weights are read.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

SHA256_MANIFEST = "SHA256SUMS"
MD5_MANIFEST = "MD5SUMS"
WEIGHT_SUFFIXES = (".safetensors", ".bin")
_CHUNK = 8 * 1024 * 1024

log = logging.getLogger(__name__)


class ChecksumError(Exception):
    """A weight file is missing, unlisted or does not match its manifest entry."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"checksum verification failed for {path}: {reason}")
        self.path = path
        self.reason = reason


@dataclass(frozen=True)
class Manifest:
    algorithm: str  # "sha256" or "md5"
    name: str
    entries: dict[str, str]  # relative path -> lowercase hex digest


def file_digest(path: Path, algorithm: str, on_bytes: Callable[[int], None] | None = None) -> str:
    """The file's digest; `on_bytes(n)` after each chunk read (start-up progress)."""
    digest = hashlib.new(algorithm)
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
            if on_bytes is not None:
                on_bytes(len(chunk))
    return digest.hexdigest()


def parse_manifest(text: str, algorithm: str, name: str) -> Manifest:
    """Parse `sha256sum`/`md5sum` output; a `*` before the path marks binary mode."""
    width = 64 if algorithm == "sha256" else 32
    entries: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        digest, _, rest = line.partition(" ")
        path = rest.lstrip(" ").removeprefix("*")
        digest = digest.lower()
        if len(digest) != width or any(c not in "0123456789abcdef" for c in digest) or not path:
            raise ChecksumError(name, f"line {number} is not '<{algorithm} hex>  <path>'")
        entries[path.removeprefix("./")] = digest
    return Manifest(algorithm=algorithm, name=name, entries=entries)


def read_manifest(model_dir: Path) -> Manifest:
    for name, algorithm in ((SHA256_MANIFEST, "sha256"), (MD5_MANIFEST, "md5")):
        candidate = model_dir / name
        if candidate.is_file():
            return parse_manifest(candidate.read_text(encoding="utf-8"), algorithm, name)
    raise ChecksumError(
        str(model_dir / SHA256_MANIFEST), f"no {SHA256_MANIFEST} or {MD5_MANIFEST} manifest"
    )


def weight_files(model_dir: Path) -> list[str]:
    return sorted(
        str(path.relative_to(model_dir))
        for path in model_dir.rglob("*")
        if path.is_file() and path.name.endswith(WEIGHT_SUFFIXES)
    )


def listed_size(model_dir: Path) -> tuple[int, int]:
    """(files, bytes) the manifest lists that are there: what verifying will read."""
    manifest = read_manifest(model_dir)
    paths = [model_dir / relative for relative in manifest.entries]
    return len(paths), sum(p.stat().st_size for p in paths if p.is_file())


def verify_model_dir(
    model_dir: Path,
    progress: Callable[[str, int, int], None] | None = None,
    on_bytes: Callable[[int], None] | None = None,
) -> Manifest:
    """Check every listed file and require every weight file to be listed.

    Raises `ChecksumError` naming the first offending file.
    """
    manifest = read_manifest(model_dir)
    for weight in weight_files(model_dir):
        if weight not in manifest.entries:
            raise ChecksumError(weight, f"weight file is not listed in {manifest.name}")
    total = len(manifest.entries)
    for index, (relative, expected) in enumerate(sorted(manifest.entries.items()), start=1):
        path = model_dir / relative
        if not path.is_file():
            raise ChecksumError(relative, f"listed in {manifest.name} but missing")
        actual = file_digest(path, manifest.algorithm, on_bytes)
        if actual != expected:
            raise ChecksumError(
                relative, f"{manifest.algorithm} mismatch: expected {expected}, got {actual}"
            )
        if progress is not None:
            progress(relative, index, total)
    return manifest


def write_sha256sums(model_dir: Path) -> Path:
    """Write `SHA256SUMS` for every file in the directory (but the manifest itself)."""
    lines = []
    for path in sorted(p for p in model_dir.rglob("*") if p.is_file()):
        relative = str(path.relative_to(model_dir))
        if relative in (SHA256_MANIFEST, MD5_MANIFEST):
            continue
        lines.append(f"{file_digest(path, 'sha256')}  {relative}\n")
    target = model_dir / SHA256_MANIFEST
    target.write_text("".join(lines), encoding="utf-8")
    return target
