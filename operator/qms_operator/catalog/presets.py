"""`spec.model.preset`: what a catalog model fills in where the spec leaves it out.

The CRD gives the fields a preset may fill no default (spec/base.py PRESET_KEY), so a
field present in the object is one the user wrote, and it wins. Filled: GPUs per replica
(the fewest that hold the model's least need on every accepted accelerator type the
catalog knows), runtime.batching.maxModelLen (the model's own context, capped to what
those GPUs hold beside the weights, in steps of 1024) and probes.startup.budgetSeconds
(600 s plus 30 s per GiB of weights: verifying and loading scale with them), and the
huggingFace source's repoId (the model's repository) when it has none. Pure: the
spec is never written; status.effective shows what was used."""

from __future__ import annotations

import math
from typing import Any

from ..spec import QwenModelServerSpec
from .fit import accepted_gpus, model_need
from .models import MODELS, QwenModel, find_model
from .sizing import GIB

MAX_GPUS = 8  # a preset never asks more per replica than a GPU node holds
STEP = 1024


class UnknownPreset(ValueError):
    """spec.model.preset names no model of the catalog."""


def _set(obj: Any, name: str) -> bool:
    return name in obj.model_fields_set


def _fits(model: QwenModel, spec: QwenModelServerSpec, context: int, room: int) -> bool:
    return model_need(model, spec, context).total <= room


def apply_preset(spec: QwenModelServerSpec) -> QwenModelServerSpec:
    """The spec with the preset's values where the spec leaves them out (raises
    UnknownPreset for a name the catalog lacks); the spec itself without a preset."""
    if spec.model.preset is None:
        return spec
    model = find_model(spec.model.preset)
    if model is None:
        raise UnknownPreset(
            f"model.preset {spec.model.preset!r} is not a model the operator knows: "
            f"{', '.join(MODELS)}"
        )
    gpu, batching = spec.resources.gpu, spec.runtime.batching
    count, context = gpu.count, batching.max_model_len
    user_context = _set(batching, "max_model_len")
    if not user_context:
        context = model.arch.max_positions
    accepted = accepted_gpus(spec)  # a pod may land on any: sized for the smallest
    weakest = min(accepted, key=lambda t: t.memory_bytes) if accepted else None
    if weakest is not None:  # accelerator types are set, so gpu.count > 0 (a CEL rule)
        if not _set(gpu, "count"):
            count = next(
                (c for c in range(1, MAX_GPUS + 1)
                 if _fits(model, spec, context, c * weakest.memory_bytes)),
                MAX_GPUS,
            )  # fmt: skip
        room = count * weakest.memory_bytes
        if not user_context and not _fits(model, spec, context, room):
            fitting = [c for c in range(STEP, context, STEP) if _fits(model, spec, c, room)]
            context = fitting[-1] if fitting else context  # nothing fits: the fit check says so
    probes = spec.probes
    budget = probes.startup.budget_seconds
    if not _set(probes.startup, "budget_seconds"):
        weights = model_need(model, spec, 1).weights
        budget = 600 + 60 * math.ceil(30 * weights / GIB / 60)  # 30 s per GiB, in minutes
    model_spec = spec.model
    hub = model_spec.source.hugging_face
    if hub is not None and hub.repo_id is None:
        source = model_spec.source.model_copy(
            update={"hugging_face": hub.model_copy(update={"repo_id": model.repo})}
        )
        model_spec = model_spec.model_copy(update={"source": source})
    return spec.model_copy(
        update={
            "model": model_spec,
            "resources": spec.resources.model_copy(
                update={"gpu": gpu.model_copy(update={"count": count})}
            ),
            "runtime": spec.runtime.model_copy(
                update={"batching": batching.model_copy(update={"max_model_len": context})}
            ),
            "probes": probes.model_copy(
                update={"startup": probes.startup.model_copy(update={"budget_seconds": budget})}
            ),
        }
    )
