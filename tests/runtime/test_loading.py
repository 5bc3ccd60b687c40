"""Safe loading: checksum failures stop the process; /health answers while loading;
INT8 reaches the MoE experts and keeps outputs close."""

from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import torch

from qms_testkit.processes import RuntimeServer

pytestmark = pytest.mark.runtime


def _watch_until_exit(server: RuntimeServer, timeout: float = 120) -> list[int]:
    """Poll /ready until the process exits; return every status seen."""
    seen: list[int] = []
    deadline = time.monotonic() + timeout
    while server.process.poll() is None and time.monotonic() < deadline:
        with contextlib.suppress(httpx.TransportError):
            seen.append(httpx.get(f"{server.base_url}/ready", timeout=2).status_code)
        time.sleep(0.05)
    return seen


def test_checksum_mismatch_exits_nonzero_naming_the_file(model_copy: Path, tmp_path: Path) -> None:
    weights = model_copy / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    server = RuntimeServer(model_copy, tmp_path / "server.log")
    seen = _watch_until_exit(server)
    code = server.stop()
    assert code == 1
    assert 200 not in seen
    logs = server.logs()
    assert "checksum verification failed for model.safetensors: sha256 mismatch" in logs


def test_unlisted_weight_file_exits_nonzero(model_copy: Path, tmp_path: Path) -> None:
    (model_copy / "extra.bin").write_bytes(b"not in the manifest")
    server = RuntimeServer(model_copy, tmp_path / "server.log")
    seen = _watch_until_exit(server)
    assert server.stop() == 1
    assert 200 not in seen
    assert "extra.bin: weight file is not listed in SHA256SUMS" in server.logs()


def test_health_answers_while_ready_does_not(model_copy: Path, tmp_path: Path) -> None:
    from starlette.testclient import TestClient

    from qms_runtime.app import create_app
    from qms_runtime.settings import RuntimeSettings

    settings = RuntimeSettings(model_dir=model_copy, verify_checksums=False)
    app = create_app(settings)
    with TestClient(app) as client:
        # The lifespan started the background load; the first answers come before it ends.
        health, ready = client.get("/health"), client.get("/ready")
        assert health.status_code == 200
        assert (ready.status_code, ready.json()["error"]["code"]) == (503, "loading")
        chat = client.post("/v1/completions", json={"model": "model-copy", "prompt": "x"})
        assert (chat.status_code, chat.json()["error"]["code"]) == (503, "loading")
        deadline = time.monotonic() + 60
        while client.get("/ready").status_code != 200 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert client.get("/ready").status_code == 200
        assert client.get("/health").json() == {"status": "ok", "phase": "ready"}


@pytest.mark.parametrize("arch", ["qwen3_moe", "qwen3_omni_moe"])
def test_int8_quantizes_experts_and_stays_close(tiny_model: Any, arch: str) -> None:
    from qms_runtime.models.loading import load_model
    from qms_runtime.models.quantization import weight_bytes
    from qms_runtime.settings import RuntimeSettings

    model_dir = tiny_model(arch)
    full = load_model(RuntimeSettings(model_dir=model_dir))
    int8 = load_model(RuntimeSettings(model_dir=model_dir, quantization="int8"))
    experts = {
        name: type(param).__name__
        for name, param in int8.model.named_parameters()
        if ".experts." in name
    }
    assert experts and set(experts.values()) == {"Int8Tensor"}
    linear = dict(int8.model.named_parameters())
    q_proj = next(name for name in linear if name.endswith("layers.0.self_attn.q_proj.weight"))
    assert type(linear[q_proj]).__name__ == "Int8Tensor"
    assert weight_bytes(int8.model) < 0.7 * weight_bytes(full.model)
    ids = torch.tensor([[11, 22, 33, 44, 55, 66, 77, 88]])
    with torch.no_grad():
        reference = full.model(input_ids=ids).logits
        quantized = int8.model(input_ids=ids).logits
    assert torch.allclose(quantized, reference, atol=0.05 * float(reference.abs().max()))
    assert (quantized.argmax(-1) == reference.argmax(-1)).float().mean().item() >= 0.75
