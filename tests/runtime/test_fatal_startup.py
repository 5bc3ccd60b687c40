"""Fatal start-up errors: the process exits at once and writes one line, naming the
problem, to the termination-message file Kubernetes shows in the pod's status; the fit
check estimates what the model needs from the safetensors headers, before loading."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from qms_runtime.engine.batching import cb_config_kwargs
from qms_runtime.models.fit import GIB, ModelDoesNotFit, check_fit, estimate
from qms_runtime.settings import RuntimeSettings
from qms_testkit.processes import RuntimeServer

pytestmark = pytest.mark.runtime


def _run_until_exit(model_dir: Path, tmp_path: Path, **settings: Any) -> tuple[int, str, str]:
    """Exit code, termination message and log of `qms-runtime serve` that fails early."""
    message_file = tmp_path / "termination-log"
    server = RuntimeServer(
        model_dir, tmp_path / "server.log", termination_log_path=message_file, **settings
    )
    deadline = time.monotonic() + 120
    while server.process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    code = server.stop()
    text = message_file.read_text() if message_file.exists() else ""
    return code, text, server.logs()


def test_a_model_that_does_not_fit_exits_with_one_line(qwen3_dir: Path, tmp_path: Path) -> None:
    code, message, logs = _run_until_exit(qwen3_dir, tmp_path, memory_limit_bytes=1_000_000)
    assert code == 1
    assert message.count("\n") == 1 and message.endswith("\n")
    assert message.startswith("qms-runtime: the model does not fit: it needs about ")
    assert " but memory_limit_bytes has 1 MiB; use more memory" in message
    assert "loading qwen3 model" not in logs  # it never started to load
    assert f"fatal: {message.strip().removeprefix('qms-runtime: ')}" in logs  # and in the log


def test_checksum_mismatch_writes_the_file_name(model_copy: Path, tmp_path: Path) -> None:
    weights = model_copy / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    code, message, _ = _run_until_exit(model_copy, tmp_path)
    assert code == 1
    assert message.startswith(
        "qms-runtime: checksum verification failed for model.safetensors: sha256 mismatch"
    )
    assert message.count("\n") == 1 and message.endswith("\n")


def test_a_missing_model_directory_writes_its_name(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-model"
    code, message, _ = _run_until_exit(missing, tmp_path)
    assert code == 1
    assert message == f"qms-runtime: {missing}/config.json not found: not a model directory\n"


def test_invalid_settings_write_the_message_too(tmp_path: Path) -> None:
    message_file = tmp_path / "termination-log"
    result = subprocess.run(
        [sys.executable, "-m", "qms_runtime.cli", "serve", "--model-dir", str(tmp_path),
         "--port", "0", "--termination-log-path", str(message_file)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 2
    assert message_file.read_text() == (
        "qms-runtime: invalid settings: port: Input should be greater than or equal to 1\n"
    )


@pytest.mark.parametrize("arch", ["qwen3", "qwen3_moe"])
def test_the_weight_estimate_is_what_loading_holds(tiny_model: Any, arch: str) -> None:
    from qms_runtime.models.loading import load_model

    settings = RuntimeSettings(model_dir=tiny_model(arch), warmup=False)
    need = estimate(settings.model_dir, settings, False, cb_config_kwargs)
    loaded = load_model(settings)  # float32 on CPU
    assert need.weights == sum(p.nbytes for p in loaded.model.parameters())
    assert need.dtype == "float32"


def test_the_estimate_follows_dtype_quantization_and_context(qwen3_dir: Path) -> None:
    full = RuntimeSettings(model_dir=qwen3_dir, dtype="float32")
    half = RuntimeSettings(model_dir=qwen3_dir, dtype="bfloat16")
    int8 = RuntimeSettings(model_dir=qwen3_dir, dtype="bfloat16", quantization="int8")
    short = RuntimeSettings(model_dir=qwen3_dir, dtype="bfloat16", max_model_len=64)
    e_full, e_half, e_int8, e_short = (
        estimate(qwen3_dir, s, False, cb_config_kwargs) for s in (full, half, int8, short)
    )
    assert e_half.weights * 2 == e_full.weights
    assert e_half.weights / 2 < e_int8.weights < e_half.weights
    # CPU: a full batch (16) of full-length sequences, and the engine's 4 spare pages of 32
    assert (e_half.kv_tokens, e_short.kv_tokens) == (512 * 16 + 4 * 32, 64 * 16 + 4 * 32)
    # K and V of 2 layers, 2 KV heads of 16, bfloat16; and transformers' 2 trash pages
    assert e_half.kv_cache == 2 * 2 * 2 * 16 * 2 * (e_half.kv_tokens + 2 * 32)
    gpu = estimate(qwen3_dir, half, True, cb_config_kwargs)
    assert gpu.kv_tokens == 512  # GPU: one sequence


def test_a_30b_model_on_a_16_gb_gpu_is_refused_with_advice(tmp_path: Path) -> None:
    """Qwen3-Omni-30B-A3B's thinker shape (from its config) in BF16 on one T4, as the
    seed example asks: headers only, so the test writes headers without weights."""
    model = _omni_30b_headers(tmp_path)
    settings = RuntimeSettings(model_dir=model, dtype="bfloat16", memory_limit_bytes=16 * GIB)
    with pytest.raises(ModelDoesNotFit) as refused:
        check_fit(settings, cb_config_kwargs, on_gpu=True)
    message = str(refused.value)
    need = estimate(model, settings, True, cb_config_kwargs)
    assert 55 * GIB < need.weights < 62 * GIB  # ~30.5B parameters at 2 bytes
    assert message.startswith(f"the model does not fit: it needs about {need.total / GIB:.1f} GiB")
    assert message.endswith(
        "but memory_limit_bytes has 16.0 GiB; use more GPUs, or quantization int8"
    )


def _omni_30b_headers(root: Path) -> Path:
    """A model directory with Qwen3-Omni-30B-A3B's config and safetensors headers whose
    shapes add up to its thinker (48 layers, 128 experts of 768, hidden 2048)."""
    import json
    import struct

    model = root / "omni-30b"
    model.mkdir()
    text = {"num_hidden_layers": 48, "hidden_size": 2048, "num_attention_heads": 32,
            "num_key_value_heads": 4, "head_dim": 128, "max_position_embeddings": 32768,
            "vocab_size": 152064}  # fmt: skip
    config = {"model_type": "qwen3_omni_moe", "thinker_config": {"text_config": text}}
    (model / "config.json").write_text(json.dumps(config))
    shapes = {"thinker.model.embed_tokens.weight": [152064, 2048],
              "thinker.lm_head.weight": [152064, 2048],
              "talker.model.layers.0.mlp.weight": [4096, 4096]}  # fmt: skip
    for layer in range(48):
        prefix = f"thinker.model.layers.{layer}."
        shapes[prefix + "self_attn.qkv.weight"] = [(32 + 8) * 128, 2048]
        shapes[prefix + "self_attn.o_proj.weight"] = [2048, 32 * 128]
        shapes[prefix + "mlp.experts.gate_up_proj"] = [128, 2048, 2 * 768]
        shapes[prefix + "mlp.experts.down_proj"] = [128, 768, 2048]
    header: dict[str, Any] = {}
    offset = 0
    for name, shape in shapes.items():
        size = 2
        for dim in shape:
            size *= dim
        header[name] = {"dtype": "BF16", "shape": shape, "data_offsets": [offset, offset + size]}
        offset += size
    blob = json.dumps(header).encode()
    (model / "model.safetensors").write_bytes(struct.pack("<Q", len(blob)) + blob)
    return model
