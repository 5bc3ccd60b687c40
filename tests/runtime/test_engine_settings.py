"""The engine's scheduling settings reach transformers' continuous batching, prefix caching
is reported (log line and `qms_prefix_caching` gauge), and `tiny-model` sizes and layers."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from qms_runtime.tools.tiny_model import REAL_VOCAB, _dims, write_tiny_model
from qms_testkit.processes import RuntimeServer, start_server
from qms_testkit.serving import auth, metric_value

QUESTION = [{"role": "user", "content": "Say something about the reconcile loop."}]


def test_prefix_caching_is_on_by_default(main_server: RuntimeServer) -> None:
    gauge = metric_value(main_server.base_url, "qms_prefix_caching", {"model_name": "tiny-qwen3"})
    assert gauge == 1.0
    assert "prefix caching on" in main_server.log_path.read_text(errors="replace")


def test_settings_reach_the_batch_config(qwen3_dir: Path, tmp_path: Path) -> None:
    server = start_server(
        qwen3_dir, tmp_path, prefix_caching=False, scheduler="prefill_first", kv_cache_blocks=77
    )
    try:
        body = {"model": qwen3_dir.name, "messages": QUESTION, "max_tokens": 5,
                "temperature": 0, "ignore_eos": True}  # fmt: skip
        reply = httpx.post(f"{server.base_url}/v1/chat/completions", json=body, headers=auth())
        assert reply.status_code == 200
        assert reply.json()["usage"]["completion_tokens"] == 5
        labels = {"model_name": qwen3_dir.name}
        assert metric_value(server.base_url, "qms_prefix_caching", labels) == 0.0
        log = server.log_path.read_text(errors="replace")
        assert "'allow_block_sharing': False" in log
        assert "'scheduler_type': 'prefill_first'" in log
        assert "'num_blocks': 77" in log
        assert "prefix caching off (prefix_caching is false)" in log
    finally:
        server.stop()


def test_tiny_model_layers_option(tmp_path: Path) -> None:
    target = write_tiny_model(tmp_path / "one-layer", "qwen3", "tiny", layers=1)
    config = json.loads((target / "config.json").read_text())
    assert config["num_hidden_layers"] == 1
    assert json.loads((target / "qms-tiny-model.json").read_text())["layers"] == 1


def test_real_sizes_have_the_published_shapes() -> None:
    dense = _dims("qwen3", "real", None)
    assert (dense["layers"], dense["hidden"], dense["inter"]) == (28, 1024, 3072)
    assert (dense["heads"], dense["kv"], dense["head_dim"], dense["vocab"]) == (
        16, 8, 128, REAL_VOCAB,
    )  # fmt: skip
    moe = _dims("qwen3_moe", "real", 2)
    assert (moe["layers"], moe["hidden"], moe["experts"], moe["top_k"]) == (2, 2048, 128, 8)
    assert (moe["moe_inter"], moe["heads"], moe["kv"], moe["head_dim"]) == (768, 32, 4, 128)
    with pytest.raises(ValueError, match="size 'real' is for qwen3 and qwen3_moe"):
        _dims("qwen3_omni_moe", "real", None)
