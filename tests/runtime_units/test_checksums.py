"""Model checksums (models/checksums.py): SHA256SUMS in sha256sum format, every
mismatch, missing or unlisted file named."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from qms_runtime.models.checksums import ChecksumError, verify_model_dir, write_sha256sums

pytestmark = pytest.mark.runtime


# --------------------------------------------------------------------- checksums
def _model_dir(tmp_path: Path) -> Path:
    (tmp_path / "model.safetensors").write_bytes(b"weights-1")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "extra.bin").write_bytes(b"weights-2")
    (tmp_path / "config.json").write_text("{}")
    write_sha256sums(tmp_path)
    return tmp_path


def test_sha256sums_is_sha256sum_format(tmp_path: Path) -> None:
    model = _model_dir(tmp_path)
    digest = hashlib.sha256(b"weights-1").hexdigest()
    lines = (model / "SHA256SUMS").read_text().splitlines()
    assert f"{digest}  model.safetensors" in lines
    assert len(lines) == 3
    assert (
        verify_model_dir(model).entries["sub/extra.bin"] == hashlib.sha256(b"weights-2").hexdigest()
    )


def test_mismatch_names_the_file(tmp_path: Path) -> None:
    model = _model_dir(tmp_path)
    (model / "sub" / "extra.bin").write_bytes(b"tampered")
    with pytest.raises(ChecksumError) as caught:
        verify_model_dir(model)
    assert caught.value.path == "sub/extra.bin"
    assert "sha256 mismatch" in str(caught.value)


def test_missing_listed_file_names_the_file(tmp_path: Path) -> None:
    model = _model_dir(tmp_path)
    (model / "config.json").unlink()
    with pytest.raises(ChecksumError) as caught:
        verify_model_dir(model)
    assert (caught.value.path, caught.value.reason) == (
        "config.json",
        "listed in SHA256SUMS but missing",
    )


def test_unlisted_weight_file_is_refused(tmp_path: Path) -> None:
    model = _model_dir(tmp_path)
    (model / "model-00002.safetensors").write_bytes(b"more")
    with pytest.raises(ChecksumError) as caught:
        verify_model_dir(model)
    assert caught.value.path == "model-00002.safetensors"
    assert caught.value.reason == "weight file is not listed in SHA256SUMS"


def test_no_manifest_is_refused(tmp_path: Path) -> None:
    model = _model_dir(tmp_path)
    (model / "SHA256SUMS").unlink()
    with pytest.raises(ChecksumError, match="no SHA256SUMS or MD5SUMS manifest"):
        verify_model_dir(model)


def test_md5sums_is_accepted(tmp_path: Path) -> None:
    model = _model_dir(tmp_path)
    (model / "SHA256SUMS").unlink()
    lines = [
        f"{hashlib.md5(path.read_bytes()).hexdigest()}  {path.relative_to(model)}"
        for path in sorted(model.rglob("*"))
        if path.is_file()
    ]
    (model / "MD5SUMS").write_text("\n".join(lines) + "\n")
    assert verify_model_dir(model).algorithm == "md5"
    (model / "model.safetensors").write_bytes(b"x")
    with pytest.raises(ChecksumError, match="md5 mismatch"):
        verify_model_dir(model)
