"""The official non-weight files of real Qwen checkpoints, and models built from them.

The files are not in the repository (never commit copies). They are looked for in
`$QMS_REALQWEN`, then `../shared/realqwen` beside the repository, then
`/work/shared/realqwen` (where this project's machines keep them), then the copy in
`~/.cache/qms/realqwen` that an earlier run made. Every file must have the sha256 of the
official revision (pinned here, from each folder's SOURCES.md); a file that differs is
refused. Without them the tests that need them fail, saying so: they are not skipped.

Models built from them (`qms-runtime tiny-model --from-config`, random weights, fewer
layers) are cached in `~/.cache/qms/realqwen-models/`, keyed by the pins and the maker's
own source, so a warm run builds nothing.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "qms"

QWEN3_06B = "Qwen3-0.6B"
QWEN3_OMNI = "Qwen3-Omni-30B-A3B-Instruct"

PINS: dict[str, dict[str, str]] = {
    QWEN3_06B: {
        "config.json": "660db3b73d788119c04535e48cf9be5f55bc3100841a718637ae695b442f27dd",
        "generation_config.json": (
            "2325da0f15bb848e018c5ae071b7943332e9f871d6b60e2ed22ca97d4cb993d2"
        ),
        "merges.txt": "8831e4f1a044471340f7c0a83d7bd71306a5b867e95fd870f74d0c5308a904d5",
        "tokenizer.json": "aeb13307a71acd8fe81861d94ad54ab689df773318809eed3cbe794b4492dae4",
        "tokenizer_config.json": "d5d09f07b48c3086c508b30d1c9114bd1189145b74e982a265350c923acd8101",
        "vocab.json": "ca10d7e9fb3ed18575dd1e277a2579c16d108e32f27439684afa0e10b1440910",
    },
    QWEN3_OMNI: {
        "chat_template.json": "90c1b81f29e41b7642b0cc02c877a10c8bf6751a8d8fa1d16ac9a718cf1c3d86",
        "config.json": "eab5093d47807aaf894119506b238b2b1cee70d08456e894fee9a012d88f2e0d",
        "generation_config.json": (
            "7fa40989be8e43c078907810c41c25d33747523afce3d5a34d5850f930c886cb"
        ),
        "merges.txt": "599bab54075088774b1733fde865d5bd747cbcc7a547c5bc12610e874e26f5e3",
        "preprocessor_config.json": (
            "b10e27fd4542cf89ec7145942b87f3e65408d4e9f9d031a29acdd293c15fb3fc"
        ),
        "tokenizer_config.json": "dc3c31c3bdaedd5016382bb3cbe07323026775ad51f5a4fb564505992ae4a670",
        "vocab.json": "ca10d7e9fb3ed18575dd1e277a2579c16d108e32f27439684afa0e10b1440910",
    },
}


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _complete(folder: Path, name: str) -> bool:
    pins = PINS[name]
    return all((folder / f).is_file() and _sha256(folder / f) == h for f, h in pins.items())


def _places() -> list[Path]:
    places = [Path(p) for p in [os.environ.get("QMS_REALQWEN", "")] if p]
    return [*places, REPO.parent / "shared" / "realqwen", Path("/work/shared/realqwen")]


def real_files(name: str) -> Path:
    """The folder of `name`'s official files (sha256-checked), or the test fails."""
    cached = CACHE / "realqwen" / name
    for place in _places():
        if _complete(place / name, name):
            if not _complete(cached, name):  # a clone elsewhere finds them next time
                cached.mkdir(parents=True, exist_ok=True)
                for file in PINS[name]:
                    shutil.copyfile(place / name / file, cached / file)
            return place / name
    if _complete(cached, name):
        return cached
    searched = ", ".join(str(p) for p in [*_places(), CACHE / "realqwen"])
    pytest.fail(
        f"the official files of {name} are not here (looked in {searched}; each file's "
        "sha256 must be the pinned one): set QMS_REALQWEN to the folder that holds them"
    )


def real_model(name: str, layers: int = 2) -> Path:
    """A random-weight model from `name`'s real files, built once and cached."""
    from qms_runtime.tools import from_config

    source = real_files(name)
    key = hashlib.sha256(
        repr(sorted(PINS[name].items())).encode()
        + Path(from_config.__file__).read_bytes()
        + str(layers).encode()
    ).hexdigest()[:12]
    target = CACHE / "realqwen-models" / f"{name}-{layers}l-{key}"
    if (target / "SHA256SUMS").is_file():
        return target
    for stale in target.parent.glob(f"{name}-{layers}l-*"):  # built by an older maker
        shutil.rmtree(stale, ignore_errors=True)
    scratch = target.with_name(target.name + f".building-{os.getpid()}")
    shutil.rmtree(scratch, ignore_errors=True)
    from_config.write_from_config(scratch, source, layers=layers)
    shutil.rmtree(target, ignore_errors=True)
    scratch.rename(target)
    return target
