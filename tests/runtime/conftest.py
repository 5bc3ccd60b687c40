"""Fixtures of the runtime served with models: a copy of the tiny Qwen3 to damage, and one
shared server (the tiny models themselves are built once per session: tests/conftest.py)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from qms_testkit.processes import RuntimeServer, start_server
from qms_testkit.serving import API_KEY


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
