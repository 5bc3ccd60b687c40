"""Helpers for the runtime tests: the API key, /metrics reading; the server process
itself is qms_testkit's (re-exported here for the test modules)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from qms_testkit.net import free_port as free_port
from qms_testkit.processes import RuntimeServer as RuntimeServer
from qms_testkit.processes import start_server as start_server
from qms_testkit.prom import sample_value, scrape

API_KEY = "test-key-0123456789"
ARCHS = ("qwen3", "qwen3_moe", "qwen3_omni_moe")


def text_model(arch: str, model_dir: Path) -> tuple[Any, list[int] | int]:
    """The module a server runs text on (Qwen3-Omni: its thinker) loaded plainly, and its
    EOS ids (the Omni thinker's own generation config has none: the owner's)."""
    import transformers

    if arch == "qwen3_omni_moe":
        owner = transformers.Qwen3OmniMoeForConditionalGeneration.from_pretrained(
            str(model_dir), enable_audio_output=False
        )
        return owner.thinker, owner.generation_config.eos_token_id
    model = transformers.AutoModelForCausalLM.from_pretrained(str(model_dir))
    return model, model.generation_config.eos_token_id


def auth() -> dict[str, str]:
    return {"Authorization": f"Bearer {API_KEY}"}


def metric_value(base_url: str, name: str, labels: dict[str, str] | None = None) -> float:
    """One sample of the server's /metrics (0 if absent)."""
    return sample_value(scrape(f"{base_url}/metrics"), name, labels)
