"""The fit check counts what transformers' continuous batching allocates besides the
weights (issue 26, point 4): its paged KV cache and the buffers around it (attention
masks [M, N + M], per-cache-token read buffers, IO tensors, activation peak), divided by
the fraction of free memory transformers lets them take.

Real transformers throughout: tiny models whose engine really starts, and the real
Qwen3-Omni-30B-A3B config (shapes only, on the meta device) for the issue's case.
"""

from __future__ import annotations

import asyncio
import json
import math
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
import transformers
from real_checkpoints import QWEN3_OMNI, real_files
from transformers.generation.continuous_batching import cache as cb_cache
from transformers.generation.continuous_batching import continuous_api

from qms_runtime.engine.batching import Engine, cb_config_kwargs
from qms_runtime.metrics import RuntimeMetrics
from qms_runtime.models.fit import MIN_HEADROOM, ModelDoesNotFit, check_fit, estimate
from qms_runtime.models.loading import LoadedModel, load_model
from qms_runtime.settings import RuntimeSettings
from qms_runtime.tools.tiny_model import Arch, write_tiny_model
from qms_runtime.types import SamplingParams

pytestmark = pytest.mark.runtime

GenerationConfig: Any = transformers.GenerationConfig  # untyped constructor
ISSUE_FOOTPRINT = 25_544_475_648  # "Memory footprint 25544475648 is more than available ..."


@dataclass(frozen=True)
class Checked:
    """One call of transformers' own footprint check, as the cache it builds makes it."""

    footprint: int  # PagedAttentionMemoryHandler.compute_memory_footprint(M, S)
    max_batch_tokens: int
    num_sectors: int
    available: int  # what transformers compared it with


@pytest.fixture
def checks(monkeypatch: pytest.MonkeyPatch) -> list[Checked]:
    """Record every `_check_footprint` transformers makes (also in the batching thread)."""
    handler: Any = cb_cache.PagedAttentionMemoryHandler
    original = handler._check_footprint
    seen: list[Checked] = []

    def check(self: Any, max_batch_tokens: int, num_sectors: int) -> tuple[int, int]:
        footprint = self.compute_memory_footprint(max_batch_tokens, num_sectors)
        seen.append(Checked(footprint, max_batch_tokens, num_sectors, self.available_memory))
        result: tuple[int, int] = original(self, max_batch_tokens, num_sectors)
        return result

    monkeypatch.setattr(handler, "_check_footprint", check)
    return seen


def _device_reports(monkeypatch: pytest.MonkeyPatch, total: int, allocated: int) -> None:
    """Make transformers see a CPU with `total` bytes of which `allocated` are in use (its
    own `get_available_memory` then computes (total - allocated) * max_memory_percent)."""

    def breakdown() -> tuple[torch.device, int, int, int]:
        return torch.device("cpu"), total, allocated, allocated

    monkeypatch.setattr(cb_cache, "get_device_and_memory_breakdown", breakdown)


class _CacheOnly:
    """Stands in for transformers' batch processor: keeps the cache the manager made."""

    def __init__(self, cache: Any, **_: Any) -> None:
        self.cache = cache


def _cache_made_by(manager: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    """The paged cache transformers' manager makes for a model on the meta device (no
    memory: meta tensors cannot feed the batch processor, so only the cache is made)."""
    monkeypatch.setattr(continuous_api, "ContinuousBatchProcessor", _CacheOnly)
    _device_reports(monkeypatch, total=2**50, allocated=0)  # whatever size it asks for
    return manager._create_batch_processor().cache


def _held_bytes(*roots: Any) -> int:
    """Bytes of the distinct tensor storages reachable from transformers' continuous-
    batching objects (the cache, its allocators' views, the static IO buffers)."""
    storages: dict[int, int] = {}
    seen: set[int] = set()
    stack = list(roots)
    while stack:
        obj = stack.pop()
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        if isinstance(obj, torch.Tensor):
            storage = obj.untyped_storage()
            storages[storage.data_ptr()] = storage.nbytes()
        elif isinstance(obj, dict):
            stack.extend(obj.values())
        elif isinstance(obj, list | tuple | set):
            stack.extend(obj)
        elif type(obj).__module__.startswith("transformers.generation.continuous_batching"):
            stack.extend(getattr(obj, "__dict__", {}).values())
    return sum(storages.values())


def _generate(loaded: LoadedModel, settings: RuntimeSettings) -> tuple[list[int], Any]:
    """Start the engine as the server does, generate 4 tokens, return them and the
    manager's batch processor (kept for measuring after the engine stopped)."""

    async def run() -> tuple[list[int], Any]:
        engine = Engine(loaded, settings, RuntimeMetrics("fit"))
        engine.start()
        try:
            params = SamplingParams(max_new_tokens=4, ignore_eos=True)
            tokens = await engine.generate([5, 6, 7], params)
            return tokens, engine._manager.batch_processor
        finally:
            engine.stop(timeout=30)

    return asyncio.run(run())


# ------------------------------------------------- (a) the estimate vs what is allocated
# (arch, written context, max_model_len, max_batch_size) -> transformers' footprint of the
# cache it really made (== the estimate's, before loading), and the bytes its cache and
# static IO tensors really hold once the engine ran. The footprint is 1.27x, 1.26x and
# 1.62x what is held: the rest is what a forward pass holds for a while.
SIZES: dict[str, tuple[Arch, int | None, int, int, int, int]] = {
    "qwen3-512x16": ("qwen3", None, 512, 16, 28_558_336, 22_483_480),
    "qwen3-4096x4": ("qwen3", 4096, 4096, 4, 54_807_552, 43_520_536),
    "omni-256x2": ("qwen3_omni_moe", None, 256, 2, 4_469_760, 2_761_240),
}


@pytest.mark.parametrize("size", list(SIZES))
def test_the_estimate_is_transformers_footprint_and_covers_what_it_allocates(
    size: str, tiny_model: Any, model_root: Path, checks: list[Checked]
) -> None:
    arch, written, context, batch, footprint, held = SIZES[size]
    if written is None:
        model_dir = tiny_model(arch)
    else:
        model_dir = model_root / f"{arch}-{written}"
        if not model_dir.exists():
            write_tiny_model(model_dir, arch, max_positions=written)
    settings = RuntimeSettings(
        model_dir=model_dir, max_model_len=context, max_batch_size=batch, warmup=False
    )
    need = estimate(model_dir, settings, False, cb_config_kwargs)  # before loading
    loaded = load_model(settings)
    tokens, processor = _generate(loaded, settings)
    assert len(tokens) == 4

    cache = processor.cache
    assert len(checks) == 1  # transformers checked its footprint once, for this cache
    real = checks[0]
    assert (real.max_batch_tokens, real.num_sectors) == (512, cache.num_sectors)
    assert need.batching == real.footprint == footprint  # the same figure, before loading
    assert need.kv_cache == cache.cache_tensor.nbytes  # the cache tensor, trash sectors too
    assert need.kv_tokens == cache.num_blocks * settings.page_size >= batch * context
    assert need.max_memory_percent == 0.6  # transformers' CPU share of free memory

    measured = _held_bytes(cache, processor.inputs_and_outputs)
    assert measured == held
    assert measured <= need.batching  # never below what is really allocated
    # held: the cache and the static masks and indices; the rest of the footprint is
    # what a forward pass holds for a while (K/V read back per cache token, activations).
    assert need.weights == sum(p.nbytes for p in loaded.model.parameters())


def test_the_check_sits_where_the_estimate_says(qwen3_dir: Path) -> None:
    def fits(limit: int) -> bool:
        settings = RuntimeSettings(model_dir=qwen3_dir, memory_limit_bytes=limit)
        try:
            check_fit(settings, cb_config_kwargs, on_gpu=False)
        except ModelDoesNotFit:
            return False
        return True

    need = estimate(qwen3_dir, RuntimeSettings(model_dir=qwen3_dir), False, cb_config_kwargs)
    assert need.total == need.weights + math.ceil(need.batching / 0.6) + MIN_HEADROOM
    assert (fits(need.total), fits(need.total - 1)) == (True, False)


# --------------------------------------- (b) the issue's failure, reproduced small
LIMIT = 1024**3  # memory_limit_bytes, and the RAM transformers is made to see


def _old_estimate(model_dir: Path, settings: RuntimeSettings) -> int:
    """The estimate before issue 26: weights + KV bytes of the tokens asked for + headroom
    (for the tiny qwen3: 2 layers, 2 KV heads of 16, float32 on CPU)."""
    need = estimate(model_dir, settings, False, cb_config_kwargs)
    tokens = settings.max_batch_size * (settings.max_model_len or 40_960)
    return need.weights + 2 * 2 * 2 * 16 * 4 * tokens + max(MIN_HEADROOM, need.weights // 20)


@pytest.fixture(scope="module")
def long_context(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny qwen3 at the real 40,960-token context."""
    return write_tiny_model(
        tmp_path_factory.mktemp("fit") / "qwen3-40960", "qwen3", max_positions=40_960
    )


def test_a_model_the_old_estimate_let_through_is_refused_naming_the_buffers(
    long_context: Path,
) -> None:
    settings = RuntimeSettings(model_dir=long_context, memory_limit_bytes=LIMIT)
    assert _old_estimate(long_context, settings) == 604_423_680 < LIMIT  # it passed
    with pytest.raises(ModelDoesNotFit) as refused:
        check_fit(settings, cb_config_kwargs, on_gpu=False)
    assert str(refused.value) == (
        "the model does not fit: it needs about 3.5 GiB (weights 0 MiB at float32; "
        "continuous batching 2.0 GiB, KV cache 0.3 GiB for 655488 tokens and buffers 1.6 GiB, "
        "which transformers allows only 60% of free memory for: 3.3 GiB; headroom 0.2 GiB) "
        "but memory_limit_bytes has 1.0 GiB; use more memory, or a smaller max_model_len, "
        "max_batch_size or max_batched_tokens"
    )


def test_transformers_refuses_what_the_check_refuses(
    long_context: Path, checks: list[Checked], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The refused configuration, started anyway on a machine of LIMIT bytes of which the
    weights alone are in use (kinder than real: no interpreter, no libraries): transformers'
    own check refuses it too, with the footprint the estimate named."""
    settings = RuntimeSettings(model_dir=long_context, memory_limit_bytes=LIMIT)
    need = estimate(long_context, settings, False, cb_config_kwargs)
    loaded = load_model(settings)
    _device_reports(monkeypatch, total=LIMIT, allocated=need.weights)
    manager = loaded.model.init_continuous_batching(
        generation_config=GenerationConfig(eos_token_id=list(loaded.eos_token_ids)),
        continuous_batching_config=transformers.ContinuousBatchingConfig(
            **cb_config_kwargs(settings, loaded.max_model_len, False)
        ),
    )
    with pytest.raises(MemoryError) as refused:
        manager._create_batch_processor()  # what the batching thread does first
    available = int((LIMIT - need.weights) * 0.6)
    assert str(refused.value) == (
        f"Memory footprint {need.batching} is more than available memory {available}"
    )
    assert checks == [Checked(need.batching, 512, 20_484, available)]


def test_a_model_the_check_lets_through_starts_and_generates(
    long_context: Path, checks: list[Checked], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same model and limit with a shorter context and batch: the check passes, and
    the engine starts and generates with transformers seeing only LIMIT bytes of RAM."""
    settings = RuntimeSettings(
        model_dir=long_context, memory_limit_bytes=LIMIT, max_model_len=4096,
        max_batch_size=2, warmup=False,
    )  # fmt: skip
    need = check_fit(settings, cb_config_kwargs, on_gpu=False)
    assert need.total == 316_416_854 < LIMIT
    loaded = load_model(settings)
    _device_reports(monkeypatch, total=LIMIT, allocated=need.weights)
    tokens, _ = _generate(loaded, settings)
    assert len(tokens) == 4
    assert [c.footprint for c in checks] == [need.batching]
    assert checks[0].footprint <= checks[0].available


# ------------------------------------------------- (c) the real Qwen3-Omni config
def _real_omni_config() -> dict[str, Any]:
    """The official config (real_checkpoints.py finds it, sha256-checked, or fails)."""
    config: dict[str, Any] = json.loads((real_files(QWEN3_OMNI) / "config.json").read_text())
    return config


def test_the_real_omni_thinker_at_40960_tokens_on_2_layers(
    tmp_path: Path, checks: list[Checked], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The issue's case: Qwen3-Omni-30B-A3B's thinker shrunk to 2 layers at a 40,960-token
    context on CPU, default max_batch_size. The estimate (from the config alone) is
    transformers' own footprint for it, computed by the manager of a thinker built on
    the meta device (no memory), and above what transformers reported in the issue."""
    config = _real_omni_config()
    auto: Any = transformers.AutoConfig
    full = auto.from_pretrained(str(real_files(QWEN3_OMNI))).get_text_config()  # the thinker's
    assert (full.num_hidden_layers, full.num_key_value_heads, full.head_dim) == (48, 4, 128)

    config["thinker_config"]["text_config"]["num_hidden_layers"] = 2
    model_dir = tmp_path / "omni-2-layers"  # the config, and no weights
    model_dir.mkdir()
    (model_dir / "config.json").write_text(json.dumps(config))
    (model_dir / "model.safetensors").write_bytes(struct.pack("<Q", 2) + b"{}")
    settings = RuntimeSettings(model_dir=model_dir, max_model_len=40_960, memory_limit_bytes=LIMIT)
    need = estimate(model_dir, settings, False, cb_config_kwargs)

    thinker_config = auto.from_pretrained(str(model_dir)).thinker_config
    thinker_class: Any = transformers.Qwen3OmniMoeThinkerForConditionalGeneration
    with torch.device("meta"):
        thinker = thinker_class._from_config(
            thinker_config, attn_implementation="sdpa", dtype=torch.float32
        )
    manager = thinker.init_continuous_batching(
        generation_config=GenerationConfig(eos_token_id=[0]),
        continuous_batching_config=transformers.ContinuousBatchingConfig(
            **cb_config_kwargs(settings, 40_960, False)
        ),
    )

    cache = _cache_made_by(manager, monkeypatch)
    assert cache.num_sectors == 20_484
    assert [(c.footprint, c.max_batch_tokens, c.num_sectors) for c in checks] == [
        (need.batching, 512, cache.num_sectors)
    ]
    assert need.batching == 29_856_130_048 > ISSUE_FOOTPRINT
    assert (need.kv_cache, need.kv_tokens) == (5_370_281_984, 655_488)
    with pytest.raises(ModelDoesNotFit, match=r"buffers 22\.8 GiB"):
        check_fit(settings, cb_config_kwargs, on_gpu=False)


# ------------------------------------- the GPU case: one full-length sequence
def test_on_gpu_the_estimate_is_the_footprint_of_one_full_length_sequence(
    qwen3_dir: Path, checks: list[Checked], monkeypatch: pytest.MonkeyPatch
) -> None:
    """On GPU transformers fills free memory with cache; the least the server needs is
    one sequence of max_model_len. The estimate equals transformers' footprint of a cache
    asked for exactly those pages (num_blocks), at its default of 8192 batch tokens."""
    settings = RuntimeSettings(model_dir=qwen3_dir, dtype="bfloat16")
    need = estimate(qwen3_dir, settings, True, cb_config_kwargs)
    config: Any = transformers.AutoConfig.from_pretrained(str(qwen3_dir))
    model_class: Any = transformers.AutoModelForCausalLM
    with torch.device("meta"):
        model = model_class.from_config(config, attn_implementation="sdpa", dtype=torch.bfloat16)
    kwargs = cb_config_kwargs(settings, 512, True)
    page_size = transformers.ContinuousBatchingConfig().page_size
    kwargs.update(num_blocks=math.ceil(512 / page_size))
    manager = model.init_continuous_batching(
        generation_config=GenerationConfig(
            do_sample=True, temperature=0.7, top_k=50, top_p=0.9, eos_token_id=[0]
        ),
        continuous_batching_config=transformers.ContinuousBatchingConfig(**kwargs),
    )
    assert manager.continuous_batching_config.max_memory_percent == need.max_memory_percent

    cache = _cache_made_by(manager, monkeypatch)
    assert [(c.footprint, c.max_batch_tokens) for c in checks] == [(need.batching, 8192)]
    assert need.kv_tokens == cache.num_blocks * page_size == 512
    assert need.max_memory_percent == 0.8  # transformers' GPU share with logits processors
