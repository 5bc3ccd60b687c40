"""Runtime test fixtures: tiny models built once per session, one shared server."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from runtime_support import API_KEY, RuntimeServer, start_server

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def model_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="session")
def tiny_model(model_root: Path) -> Any:
    """`tiny_model(arch)` -> directory of that tiny model, built once per session."""
    from qms_runtime.tools.tiny_model import write_tiny_model

    built: dict[str, Path] = {}

    def get(arch: str) -> Path:
        if arch not in built:
            built[arch] = write_tiny_model(model_root / arch, arch)  # type: ignore[arg-type]
        return built[arch]

    return get


@pytest.fixture(scope="session")
def qwen3_dir(tiny_model: Any) -> Path:
    path: Path = tiny_model("qwen3")
    return path


@pytest.fixture
def model_copy(qwen3_dir: Path, tmp_path: Path) -> Path:
    target = tmp_path / "model-copy"
    shutil.copytree(qwen3_dir, target)
    return target


@pytest.fixture(scope="session")
def main_server(
    qwen3_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RuntimeServer]:
    """The shared tiny Qwen3 server (API key on) for client, corpus and metrics tests."""
    log_dir = tmp_path_factory.mktemp("main-server")
    key_file = log_dir / "api-key"
    key_file.write_text(API_KEY + "\n")
    server = start_server(qwen3_dir, log_dir, api_key_file=key_file, served_model_name="tiny-qwen3")
    yield server
    server.stop()
