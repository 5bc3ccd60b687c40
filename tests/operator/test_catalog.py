"""The operator's Qwen catalog (qms_operator.catalog) against transformers and the
runtime: parameter counts equal transformers' count of the real configs in
../shared/realqwen and of configs built from the catalog's numbers; KV bytes per token
equal the real configs'; and on the same model files, the operator's weights equal the
runtime's fit check's, its KV cache per token is the runtime's cache geometry, and its
total is never above the runtime's (a server the operator refuses, the runtime would
refuse too)."""

from __future__ import annotations

import json
import math
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from qms_operator.catalog import (
    GPUS,
    MODELS,
    SOURCES,
    does_not_fit,
    find_gpu,
    find_model,
    gpus_needed,
    kv_bytes_per_token,
    need,
    parameters,
)

ROOT = Path(__file__).resolve().parents[2]
REALQWEN = next(
    (p for p in (ROOT.parent / "shared" / "realqwen", Path("/work/shared/realqwen")) if p.is_dir()),
    None,
)
needs_real = pytest.mark.skipif(REALQWEN is None, reason="../shared/realqwen is not here")


def _meta_model(config: Any) -> Any:
    import torch
    import transformers

    with torch.device("meta"):
        if config.model_type == "qwen3_omni_moe":
            return transformers.Qwen3OmniMoeForConditionalGeneration._from_config(config)
        return transformers.AutoModelForCausalLM.from_config(config)


def _config(name: str) -> Any:
    """A transformers config from the catalog's numbers (the real one where it is here)."""
    import transformers

    model = MODELS[name]
    a = model.arch
    common: dict[str, Any] = dict(
        vocab_size=a.vocab, hidden_size=a.hidden, num_hidden_layers=a.layers,
        num_attention_heads=a.heads, num_key_value_heads=a.kv_heads, head_dim=a.head_dim,
        intermediate_size=a.intermediate, tie_word_embeddings=a.tied,
        max_position_embeddings=a.max_positions,
    )  # fmt: skip
    if a.experts:
        return transformers.Qwen3MoeConfig(
            num_experts=a.experts, num_experts_per_tok=a.experts_per_token,
            moe_intermediate_size=a.moe_intermediate, mlp_only_layers=[],
            decoder_sparse_step=1, **common,
        )  # fmt: skip
    return transformers.Qwen3Config(**common)


@needs_real
def test_the_real_configs_give_the_catalogs_counts() -> None:
    import transformers

    assert REALQWEN is not None
    small = transformers.AutoConfig.from_pretrained(str(REALQWEN / "Qwen3-0.6B"))
    counted = sum(p.numel() for p in _meta_model(small).parameters())
    assert parameters(MODELS["qwen3-0.6b"]) == counted == 596_049_920
    per_token = 2 * small.num_hidden_layers * small.num_key_value_heads * small.head_dim * 2
    assert kv_bytes_per_token(MODELS["qwen3-0.6b"].arch, "bfloat16") == per_token == 114_688

    omni = transformers.AutoConfig.from_pretrained(str(REALQWEN / "Qwen3-Omni-30B-A3B-Instruct"))
    parts: dict[str, int] = {}
    for name, p in _meta_model(omni).named_parameters():
        key = "thinker" if name.startswith("thinker.") else "speech"
        parts[key] = parts.get(key, 0) + p.numel()
    instruct = MODELS["qwen3-omni-30b-a3b-instruct"]
    assert parameters(instruct, speech=False) == parts["thinker"] == 31_719_205_488
    assert parameters(instruct, speech=True) == parts["thinker"] + parts["speech"]
    text = omni.thinker_config.text_config
    per_token = 2 * text.num_hidden_layers * text.num_key_value_heads * text.head_dim * 2
    assert kv_bytes_per_token(instruct.arch, "bfloat16") == per_token == 98_304
    assert instruct.arch.max_positions == text.max_position_embeddings == 65_536
    assert instruct.arch.vocab == text.vocab_size


@pytest.mark.parametrize("name", [n for n in MODELS if "omni" not in n])
def test_every_text_model_counts_as_transformers_builds_it_and_as_qwen_publishes(
    name: str,
) -> None:
    model = MODELS[name]
    counted = sum(p.numel() for p in _meta_model(_config(name)).parameters())
    assert parameters(model) == counted
    published = float(model.published.removesuffix("B"))
    digits = 0 if published >= 100 else 1
    assert round(counted / 1e9, digits) == published, (counted, model.published)


def test_omni_totals_round_to_what_qwen_publishes() -> None:
    """Hugging Face counts the whole repo: Instruct 35B (with the talker), Thinking and
    Captioner 32B (the thinker only)."""
    for name, published in (("instruct", 35), ("thinking", 32), ("captioner", 32)):
        model = MODELS[f"qwen3-omni-30b-a3b-{name}"]
        assert round(parameters(model, speech=True) / 1e9) == published


def test_every_model_names_its_sources_and_the_lookups_work() -> None:
    assert len(MODELS) == 14
    for model in MODELS.values():
        assert model.sources and set(model.sources) <= set(SOURCES), model.name
        assert find_model(model.repo) is model and find_model(model.name.upper()) is model
    assert find_model("llama-3-8b") is None
    assert {g.name for g in GPUS} >= {"T4", "L4", "A10G", "L40S", "A100 40GB", "A100 80GB",
                                      "H100 80GB", "H200", "B200"}  # fmt: skip
    assert find_gpu("nvidia-tesla-t4") is find_gpu("Tesla-T4") is GPUS[0]
    assert find_gpu("NVIDIA-H200").memory_mib == 143_771  # type: ignore[union-attr]
    assert find_gpu("nvidia-h200") is find_gpu("nvidia-h200-141gb")
    assert find_gpu("tpu-v5") is None


def test_the_seed_example_does_not_fit_one_t4_and_fits_one_h200() -> None:
    """The seed article's Qwen3-Omni-30B-A3B-Instruct on one T4 (16 GB)."""
    omni = MODELS["qwen3-omni-30b-a3b-instruct"]
    required = need(omni, "bfloat16")
    t4, h200 = find_gpu("nvidia-tesla-t4"), find_gpu("nvidia-h200")
    assert t4 is not None and h200 is not None
    assert required.weights == 2 * parameters(omni, speech=True) == 70_519_637_090
    assert required.kv_cache == 65_536 * 98_304
    assert required.total > t4.memory_bytes
    assert (gpus_needed(required, t4), gpus_needed(required, h200)) == (5, 1)
    thinker_int8 = need(omni, "bfloat16", int8=True, speech=False, context=32_768)
    assert thinker_int8.weights == 31_402_150_112 + 2 * 317_055_376


# ------------------------------------------------------- the check of a spec
def _spec(name: str, gpu: dict[str, Any], **runtime: Any) -> Any:
    from qms_operator.spec import parse_spec

    source = {"imagePath": "/models/m"}
    return parse_spec({"model": {"name": name, "source": source}, "resources": {"gpu": gpu},
                       "runtime": runtime})  # fmt: skip


def test_what_would_fit_is_named() -> None:
    """Qwen3-14B on one L4: two L4s, one L40S, or int8 would hold it; its weights alone
    do not fit one L4, so a shorter context is not offered."""
    message = does_not_fit(_spec("qwen3-14b", {"count": 1, "acceleratorTypes": ["nvidia-l4"]}))
    assert message is not None
    assert message.startswith("qwen3-14b does not fit: it needs at least 33.9 GiB per replica ")
    assert message.endswith(
        "but 1 x L4 has 22.5 GiB; use resources.gpu.count: 2 (L4), or acceleratorTypes "
        "[nvidia-l40s] (one L40S holds it), or runtime.quantization: int8 (at least 20.2 GiB)"
    )
    # Qwen3-8B at its full 40,960 tokens x 8 on one L4: weights fit, the cache does not.
    long = _spec("qwen3-8b", {"count": 1, "acceleratorTypes": ["nvidia-l4"]},
                 batching={"maxModelLen": 40_960})  # fmt: skip
    assert does_not_fit(long) is None  # one sequence of 40,960 tokens: 5.6 GiB of cache
    # Qwen3-30B-A3B-Instruct-2507 at its native 262,144 tokens on one H100: every way out.
    h100 = {"count": 1, "acceleratorTypes": ["nvidia-h100-80gb"]}
    native = _spec("Qwen/Qwen3-30B-A3B-Instruct-2507", h100, batching={"maxModelLen": 262_144})
    assert does_not_fit(native) == (
        "qwen3-30b-a3b-instruct-2507 does not fit: it needs at least 83.7 GiB per replica "
        "(weights 56.9 GiB at bfloat16, KV cache 24.0 GiB for 262,144 tokens, headroom "
        "2.8 GiB) but 1 x H100 80GB has 79.6 GiB; use resources.gpu.count: 2 (H100 80GB), "
        "or acceleratorTypes [nvidia-h100-nvl] (one H100 NVL holds it), or "
        "runtime.quantization: int8 (at least 54.2 GiB), or a shorter "
        "runtime.batching.maxModelLen"
    )
    speech = _spec("qwen3-omni-30b-a3b-instruct", {"count": 1, "acceleratorTypes": ["nvidia-l4"]},
                   audioOutput=True)  # fmt: skip
    assert ", speech on, KV cache" in (does_not_fit(speech) or "")


def test_the_check_stays_out_of_what_it_cannot_know() -> None:
    t4 = {"count": 1, "acceleratorTypes": ["nvidia-tesla-t4"]}
    omni = "qwen3-omni-30b-a3b-instruct"
    assert does_not_fit(_spec(omni, t4)) is not None
    assert does_not_fit(_spec("my-finetune", t4)) is None  # not in the catalog
    assert does_not_fit(_spec(omni, {**t4, "fitCheck": False})) is None
    assert does_not_fit(_spec(omni, {"count": 0})) is None  # CPU: the runtime checks RAM
    assert does_not_fit(_spec(omni, {"count": 1})) is None  # any GPU type: unknown memory
    unknown = {"count": 1, "acceleratorTypes": ["nvidia-tesla-t4", "acme-npu"]}
    assert does_not_fit(_spec(omni, unknown)) is None  # acme-npu might hold it
    assert does_not_fit(_spec(omni, {"count": 5, "acceleratorTypes": ["nvidia-tesla-t4"]})) is None
    int8 = _spec(omni, {"count": 1, "acceleratorTypes": ["nvidia-a100-40gb"]},
                 quantization="int8")  # fmt: skip
    assert does_not_fit(int8) is None  # 31.7 GB of int8 weights and 3 GiB of cache in 40 GB


# --------------------------------------------------- the same files, both checks
def _write_header_only_model(config: Any, target: Path) -> None:
    """config.json and a safetensors file whose header lists every parameter as
    save_pretrained would (tied weights once, BF16) and holds no data: the fit check
    reads nothing but headers."""
    config.save_pretrained(str(target))
    header: dict[str, Any] = {}
    offset = 0
    for name, p in _meta_model(config).named_parameters():
        size = p.numel() * 2
        header[name] = {
            "dtype": "BF16",
            "shape": list(p.shape),
            "data_offsets": [offset, offset + size],
        }
        offset += size
    raw = json.dumps(header).encode()
    (target / "model.safetensors").write_bytes(struct.pack("<Q", len(raw)) + raw)


CASES = [
    # (catalog name, real config dir or None, int8, speech, context)
    ("qwen3-0.6b", "Qwen3-0.6B", False, False, 40_960),
    ("qwen3-0.6b", "Qwen3-0.6B", True, False, 8_192),
    ("qwen3-omni-30b-a3b-instruct", "Qwen3-Omni-30B-A3B-Instruct", False, False, 32_768),
    ("qwen3-omni-30b-a3b-instruct", "Qwen3-Omni-30B-A3B-Instruct", False, True, 65_536),
    ("qwen3-omni-30b-a3b-instruct", "Qwen3-Omni-30B-A3B-Instruct", True, False, 16_384),
    ("qwen3-1.7b", None, False, False, 32_768),
    ("qwen3-4b", None, False, False, 40_960),
    ("qwen3-8b", None, True, False, 40_960),
    ("qwen3-14b", None, False, False, 16_384),
    ("qwen3-32b", None, False, False, 40_960),
    ("qwen3-30b-a3b", None, False, False, 40_960),
    ("qwen3-30b-a3b-instruct-2507", None, True, False, 131_072),
    ("qwen3-235b-a22b", None, False, False, 32_768),
]


@pytest.mark.parametrize(
    "case", CASES, ids=[f"{c[0]}-int8{c[2]}-speech{c[3]}-{c[4]}" for c in CASES]
)
def test_the_operators_need_is_the_runtimes_weights_and_cache_and_never_above_its_total(
    case: tuple[str, str | None, bool, bool, int], tmp_path: Path
) -> None:
    import transformers

    from qms_runtime.engine.batching import cb_config_kwargs
    from qms_runtime.models.fit import estimate
    from qms_runtime.settings import RuntimeSettings

    name, real, int8, speech, context = case
    if real is not None:
        if REALQWEN is None:
            pytest.skip("../shared/realqwen is not here")
        config = transformers.AutoConfig.from_pretrained(str(REALQWEN / real))
    else:
        config = _config(name)
    _write_header_only_model(config, tmp_path)
    settings = RuntimeSettings(
        model_dir=tmp_path, dtype="bfloat16", max_model_len=context,
        quantization="int8" if int8 else "none", audio_output=speech,
    )  # fmt: skip
    runtime = estimate(tmp_path, settings, True, cb_config_kwargs)
    ours = need(MODELS[name], "bfloat16", int8=int8, speech=speech, context=context)
    assert ours.weights == runtime.weights
    assert ours.headroom == runtime.headroom
    per_token = kv_bytes_per_token(MODELS[name].arch, "bfloat16")
    assert runtime.kv_cache % per_token == 0  # the runtime's cache is whole tokens of ours
    assert runtime.kv_cache // per_token >= runtime.kv_tokens >= context
    assert ours.kv_cache == context * per_token
    assert ours.total <= runtime.total


# ------------------------------------------------------------------- the CLI
def _size(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "qms_operator.cli", "size", *args],
        capture_output=True, text=True, check=False,
    )  # fmt: skip


def test_size_prints_the_table_and_the_gpus() -> None:
    done = _size("Qwen/Qwen3-Omni-30B-A3B-Instruct", "--gpu", "nvidia-tesla-t4")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert (
        lines[0]
        == "model                qwen3-omni-30b-a3b-instruct (Qwen/Qwen3-Omni-30B-A3B-Instruct)"
    )
    assert lines[2] == "weights              65.7 GiB (bfloat16)"
    assert lines[3] == "KV cache per token   98,304 bytes"
    assert lines[-1] == "  T4          15,360 MiB  5"


def test_size_json_and_bad_input() -> None:
    done = _size("qwen3-8b", "--context", "32768", "--batch", "4", "--int8", "--json")
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert (out["context"], out["sequences"], out["int8"]) == (32_768, 4, True)
    assert out["kvCacheBytes"] == 4 * 32_768 * 147_456
    assert out["gpus"]["H200"] == {"count": 1, "memoryMiB": 143_771}
    assert len(out["gpus"]) == len(GPUS)
    unknown = _size("llama-3-8b")
    assert unknown.returncode == 2 and "'llama-3-8b' is not in the catalog" in unknown.stderr
    gpu = _size("qwen3-8b", "--gpu", "tpu-v5")
    assert gpu.returncode == 2 and "unknown GPU 'tpu-v5'" in gpu.stderr
    assert math.isclose(out["totalBytes"], out["weightsBytes"] + out["kvCacheBytes"]
                        + out["headroomBytes"])  # fmt: skip


def test_the_docs_sizing_table_is_the_catalogs() -> None:
    from qms_operator.sizing_cli import catalog_markdown

    docs = (ROOT / "docs" / "operator.md").read_text()
    begin, end = "<!-- catalog:begin -->\n", "<!-- catalog:end -->"
    held = docs[docs.index(begin) + len(begin) : docs.index(end)]
    assert held == catalog_markdown(), (
        "docs/operator.md's sizing table is stale: paste `qms-operator catalog` between "
        "its catalog markers"
    )
    table = catalog_markdown().splitlines()
    assert len(table) == 2 + len(MODELS)
    assert table[2] == (
        "| [qwen3-omni-30b-a3b-instruct](https://huggingface.co/Qwen/Qwen3-Omni-30B-A3B-Instruct)"
        " | 31.72 B (+3.54 B to speak) | 59.1 GiB | 29.8 GiB | 98,304 B | 65,536 "
        "| image, audio, video | yes |"
    )
