"""spec.model.preset: the catalog model fills what the spec leaves out (GPUs per replica,
maxModelLen, the startup budget), what the spec sets wins, and the status says what was
used. Pure (qms_operator.catalog.presets) and through the reconciler."""

from __future__ import annotations

import math
from typing import Any

import pytest

from qms_operator.catalog import UnknownPreset, apply_preset, does_not_fit
from qms_operator.spec import parse_spec

GIB = 1024**3
OMNI = "qwen3-omni-30b-a3b-instruct"


def _spec(preset: str | None, gpu: dict[str, Any], **parts: Any) -> Any:
    model = {"name": "served", "source": {"imagePath": "/models/m"}}
    if preset is not None:
        model["preset"] = preset
    return parse_spec({"model": model, "resources": {"gpu": gpu}, **parts})


def _effective(spec: Any) -> tuple[int, int, int]:
    return (
        spec.resources.gpu.count,
        spec.runtime.batching.max_model_len,
        spec.probes.startup.budget_seconds,
    )


def test_without_a_preset_the_spec_is_the_spec() -> None:
    spec = _spec(None, {"acceleratorTypes": ["nvidia-h200"]})
    assert apply_preset(spec) is spec
    assert _effective(spec) == (1, 32_768, 1800)  # the built-in defaults


def test_the_omni_preset_on_h200_and_on_t4() -> None:
    """One H200 holds Qwen3-Omni's whole 65,536-token context; T4s take five. The startup
    budget: 600 s + 30 s per GiB of its 59.1 GiB of weights, in whole minutes."""
    budget = 600 + 60 * math.ceil(30 * (2 * 31_719_205_488) / GIB / 60)
    assert budget == 2400
    h200 = apply_preset(_spec(OMNI, {"acceleratorTypes": ["nvidia-h200"]}))
    assert _effective(h200) == (1, 65_536, budget)
    assert does_not_fit(h200) is None
    t4 = apply_preset(_spec(OMNI, {"acceleratorTypes": ["nvidia-tesla-t4"]}))
    assert _effective(t4) == (5, 65_536, budget)
    assert does_not_fit(t4) is None
    mixed = apply_preset(_spec(OMNI, {"acceleratorTypes": ["nvidia-h200", "nvidia-l40s"]}))
    assert mixed.resources.gpu.count == 2  # a pod may land on an L40S: sized for it


def test_what_the_spec_sets_wins() -> None:
    spec = _spec(
        OMNI,
        {"count": 2, "acceleratorTypes": ["nvidia-h200"]},
        runtime={"batching": {"maxModelLen": 8192}},
        probes={"startup": {"budgetSeconds": 900}},
    )
    assert _effective(apply_preset(spec)) == (2, 8192, 900)
    # The user's one T4 stays one T4, and the fit check says why it cannot work.
    one_t4 = apply_preset(_spec(OMNI, {"count": 1, "acceleratorTypes": ["nvidia-tesla-t4"]}))
    assert one_t4.resources.gpu.count == 1
    assert (does_not_fit(one_t4) or "").startswith(f"{OMNI} does not fit")


def test_the_context_is_capped_to_what_the_gpus_hold() -> None:
    """Qwen3-30B-A3B-Instruct-2507 (262,144 tokens) on the one H100 the spec asks for:
    the cache gets what the weights and headroom leave, in steps of 1024 tokens."""
    spec = _spec("qwen3-30b-a3b-instruct-2507", {"count": 1, "acceleratorTypes":
                 ["nvidia-h100-80gb"]})  # fmt: skip
    weights = 2 * 30_532_646_912
    left = 81_559 * 2**20 - weights - int(0.05 * weights)
    expected = left // 98_304 // 1024 * 1024
    capped = apply_preset(spec)
    assert capped.runtime.batching.max_model_len == expected == 217_088
    assert does_not_fit(capped) is None
    # Without a count: two H100s hold the whole context instead.
    free = apply_preset(_spec("qwen3-30b-a3b-instruct-2507", {"acceleratorTypes":
                        ["nvidia-h100-80gb"]}))  # fmt: skip
    assert (free.resources.gpu.count, free.runtime.batching.max_model_len) == (2, 262_144)


def test_unknown_accelerators_and_unknown_presets() -> None:
    acme = apply_preset(_spec("qwen3-8b", {"acceleratorTypes": ["acme-npu"]}))
    assert acme.resources.gpu.count == 1  # nothing known of acme-npu's memory
    assert acme.runtime.batching.max_model_len == 40_960  # the model's own context
    with pytest.raises(UnknownPreset) as caught:
        apply_preset(_spec("llama-3-8b", {"count": 1}))
    assert str(caught.value).startswith(
        "model.preset 'llama-3-8b' is not a model the operator knows: "
        "qwen3-omni-30b-a3b-instruct, qwen3-omni-30b-a3b-thinking, "
    )


def test_the_hub_source_takes_the_presets_repository() -> None:
    from qms_operator.builders import desired_children

    hub = {"huggingFace": {"cacheClaim": "hub-cache", "revision": "main"}}
    spec = parse_spec({"model": {"name": "qwen", "preset": "qwen3-8b", "source": hub},
                       "resources": {"gpu": {"count": 0}}})  # fmt: skip
    assert spec.model.source.hugging_face.repo_id is None  # type: ignore[union-attr]
    filled = apply_preset(spec)
    assert filled.model.source.hugging_face.repo_id == "Qwen/Qwen3-8B"  # type: ignore[union-attr]
    deployment = next(
        c for c in desired_children("s", "ns", "uid", filled) if c["kind"] == "Deployment"
    )
    [download] = deployment["spec"]["template"]["spec"]["initContainers"]
    assert download["command"][:4] == ["qms-runtime", "download", "--repo-id", "Qwen/Qwen3-8B"]
    own = {**hub["huggingFace"], "repoId": "acme/qwen3-8b-tuned"}
    kept = apply_preset(parse_spec({"model": {"name": "q", "preset": "qwen3-8b",
                                              "source": {"huggingFace": own}}}))  # fmt: skip
    assert kept.model.source.hugging_face.repo_id == "acme/qwen3-8b-tuned"  # type: ignore[union-attr]
    with pytest.raises(ValueError, match=r"repoId is required unless model\.preset"):
        parse_spec({"model": {"name": "q", "source": hub}})
