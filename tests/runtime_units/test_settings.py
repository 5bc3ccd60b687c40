"""Runtime settings from flags, environment and files; the GPU kernel check (which torch
builds run on which GPUs); an invalid setting never prints the API key."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from qms_runtime.models.loading import torch_supports_capability
from qms_runtime.settings import RuntimeSettings, load_settings

pytestmark = pytest.mark.runtime


# ---------------------------------------------------------------------- settings
def test_settings_from_env_ignore_unknown_qms_vars(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("QMS_MODEL_DIR", str(tmp_path / "my-model"))
    monkeypatch.setenv("QMS_MAX_BATCH_SIZE", "8")
    monkeypatch.setenv("QMS_VERIFY_CHECKSUMS", "false")
    monkeypatch.setenv("QMS_SOMETHING_NEW", "whatever")
    settings = load_settings(port="9000")
    assert (settings.max_batch_size, settings.verify_checksums, settings.port) == (8, False, 9000)
    assert settings.model_name == "my-model"
    assert settings.required_api_key is None


def test_api_key_file_wins_over_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    key_file = tmp_path / "key"
    key_file.write_text("from-file\n")
    monkeypatch.setenv("QMS_API_KEY", "from-env")
    settings = RuntimeSettings(model_dir=tmp_path, api_key_file=key_file)
    assert settings.required_api_key == "from-file"


def test_bad_setting_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValidationError):
        RuntimeSettings(model_dir=tmp_path, quantization="int4")  # type: ignore[arg-type]


def test_mm_processor_kwargs_from_flag_and_env(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    kwargs = '{"videos_kwargs": {"size": {"shortest_edge": 256, "longest_edge": 4096}}}'
    from_flag = load_settings(model_dir=str(tmp_path), mm_processor_kwargs=kwargs)
    monkeypatch.setenv("QMS_MM_PROCESSOR_KWARGS", kwargs)
    from_env = load_settings(model_dir=str(tmp_path))
    expected = {"videos_kwargs": {"size": {"shortest_edge": 256, "longest_edge": 4096}}}
    assert from_flag.mm_processor_kwargs == from_env.mm_processor_kwargs == expected
    with pytest.raises(ValueError, match="mm_processor_kwargs is not JSON"):
        load_settings(model_dir=str(tmp_path), mm_processor_kwargs="{bad")


# --------------------------------------------------------------- GPU kernel check
@pytest.mark.parametrize(
    ("archs", "capability", "expected"),
    [
        (["sm_80", "sm_90"], (9, 0), True),
        (["sm_80", "sm_86"], (8, 9), True),
        (["sm_50", "sm_60", "sm_70"], (9, 0), False),
        (["sm_70", "compute_70"], (9, 0), True),
        (["sm_90", "sm_100"], (12, 0), False),
    ],
)
def test_torch_supports_capability(
    archs: list[str], capability: tuple[int, int], expected: bool
) -> None:
    assert torch_supports_capability(archs, *capability) is expected


def test_invalid_settings_never_print_the_api_key(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    secret = "sk-do-not-print-" + "S" * 16
    env = {k: v for k, v in os.environ.items() if not k.startswith("QMS_")}
    env.update(QMS_API_KEY=secret, QMS_ALLOW_REMOTE_MEDIA="true")
    done = subprocess.run(
        [sys.executable, "-m", "qms_runtime.cli", "serve", "--model-dir", str(tmp_path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    assert "allow_remote_media needs allowed_media_domains" in done.stderr
    # pydantic's own message would show the input, the key cut to its first 12 characters
    assert secret[:8] not in done.stderr + done.stdout
