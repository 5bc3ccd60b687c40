"""Tiny OCI images made by hand: one layer, written without any image tool.

Used for the real node's sandbox (pause) image and for the signing tests.
Deterministic: the same files give the same digests.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


def _blob(layout: Path, data: bytes) -> dict[str, Any]:
    digest = f"sha256:{hashlib.sha256(data).hexdigest()}"
    path = layout / "blobs" / "sha256" / digest.split(":", 1)[1]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return {"digest": digest, "size": len(data)}


def write_image(layout: Path, files: Mapping[str, bytes]) -> dict[str, Any]:
    """Write the blobs of a one-layer linux/amd64 image into ``layout``; its descriptor.

    Deterministic: the same files give the same digest.
    """
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for name, data in sorted(files.items()):
            info = tarfile.TarInfo(name.lstrip("/"))
            info.size, info.mode, info.mtime = len(data), 0o755, 0
            tf.addfile(info, io.BytesIO(data))
    layer = gzip.compress(raw.getvalue(), mtime=0)
    config = {
        "architecture": "amd64",
        "os": "linux",
        "config": {"Cmd": ["/" + sorted(files)[0].lstrip("/")]},
        "rootfs": {
            "type": "layers",
            "diff_ids": [f"sha256:{hashlib.sha256(raw.getvalue()).hexdigest()}"],
        },
    }
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json"}
        | _blob(layout, json.dumps(config, sort_keys=True).encode()),
        "layers": [
            {"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip"} | _blob(layout, layer)
        ],
    }
    return {"mediaType": OCI_MANIFEST} | _blob(
        layout, json.dumps(manifest, sort_keys=True).encode()
    )


def tiny_image(path: Path, files: Mapping[str, bytes] | None = None, tag: str = "latest") -> str:
    """Write a tiny OCI archive (a tar of an OCI layout) to ``path``; returns its digest."""
    files = files if files is not None else {"hello.txt": b"hello from qms\n"}
    with tempfile.TemporaryDirectory(prefix="qms-tiny-") as tmp:
        layout = Path(tmp)
        desc = write_image(layout, files)
        desc["annotations"] = {"org.opencontainers.image.ref.name": tag}
        (layout / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
        index = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json"}
        (layout / "index.json").write_text(json.dumps(index | {"manifests": [desc]}))
        with tarfile.open(path, "w") as tf:
            for p in sorted(layout.rglob("*")):
                tf.add(p, arcname=str(p.relative_to(layout)), recursive=False)
    return str(desc["digest"])
