"""Third-party CRDs the operator builds children of, from their Go modules' zips.

Gateway API (``sigs.k8s.io/gateway-api``, standard channel: Gateway, GatewayClass,
HTTPRoute, ReferenceGrant) and the Gateway API Inference Extension
(``sigs.k8s.io/gateway-api-inference-extension``: InferencePool v1) ship their CRD
manifests inside their Go modules. They are taken from the module zips on the Go
module proxy at pinned versions, each file checked against a pinned SHA-256, and
cached under ``~/.cache/qms/crds-<module>-<version>/`` like the binaries; ``install``
applies them (server-side: HTTPRoute's CRD is larger than a client-side apply's
annotation may be) and waits until they are Established.
"""

from __future__ import annotations

import hashlib
import io
import os
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from .build import CACHE_ROOT, Log, _stderr

GATEWAY_API_VERSION = "v1.4.1"
INFERENCE_EXTENSION_VERSION = "v1.3.0"


@dataclass(frozen=True)
class CrdSet:
    """CRD files taken from one Go module's zip, each with its SHA-256."""

    module: str
    version: str
    files: dict[str, str]  # path inside the module -> sha256 of its content

    @property
    def cache_dir(self) -> Path:
        return CACHE_ROOT / f"crds-{self.module.rsplit('/', 1)[1]}-{self.version}"

    def paths(self) -> list[Path]:
        return [self.cache_dir / Path(f).name for f in self.files]

    def zip_url(self, proxy: str) -> str:
        return f"{proxy.rstrip('/')}/{self.module}/@v/{self.version}.zip"


_STANDARD = "config/crd/standard/gateway.networking.k8s.io_"
GATEWAY_API = CrdSet(
    "sigs.k8s.io/gateway-api",
    GATEWAY_API_VERSION,
    {
        f"{_STANDARD}gatewayclasses.yaml": (
            "7d958ad3965ea4a4996616846d9ecaf1fededbf9351b9752b8b85973936ae8c8"
        ),
        f"{_STANDARD}gateways.yaml": (
            "a02ea425fc901f197b668c9ddd56375e1f6896994914c6e6b9b4fdb85cf3ba6e"
        ),
        f"{_STANDARD}httproutes.yaml": (
            "98c6777c22309d319292e9c288ee632006c9ffdd4272383d6f9dffa3fbccaf14"
        ),
        f"{_STANDARD}referencegrants.yaml": (
            "d74fc2f8e90094f4c4d6dc13a2d720011a40e30e5640b3e2a2051fac820f6584"
        ),
    },
)
INFERENCE_EXTENSION = CrdSet(
    "sigs.k8s.io/gateway-api-inference-extension",
    INFERENCE_EXTENSION_VERSION,
    {
        "config/crd/bases/inference.networking.k8s.io_inferencepools.yaml": (
            "c400827662b46cfc58ec62b8bc779906c878e316750c0b45cb0e82210d063370"
        ),
    },
)
ALL = (GATEWAY_API, INFERENCE_EXTENSION)
# The CRD objects' names, for `kubectl wait`.
NAMES = (
    "gatewayclasses.gateway.networking.k8s.io",
    "gateways.gateway.networking.k8s.io",
    "httproutes.gateway.networking.k8s.io",
    "referencegrants.gateway.networking.k8s.io",
    "inferencepools.inference.networking.k8s.io",
)


class Kubectl(Protocol):
    def kubectl(self, *args: str, check: bool = True, input: str | None = None) -> object: ...


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def is_fetched(s: CrdSet) -> bool:
    return all(
        p.exists() and _sha256(p.read_bytes()) == want
        for p, want in zip(s.paths(), s.files.values(), strict=True)
    )


def _proxy() -> str:
    """The first proxy of GOPROXY (its default: proxy.golang.org)."""
    for entry in os.environ.get("GOPROXY", "https://proxy.golang.org").replace("|", ",").split(","):
        if entry.startswith(("http://", "https://")):
            return entry
    return "https://proxy.golang.org"


def fetch(s: CrdSet, log: Log = _stderr) -> list[Path]:
    """Download the module zip, take its CRD files (checked), cache them."""
    url = s.zip_url(_proxy())
    log(f"fetching the CRDs of {s.module} {s.version} from {url}")
    with urllib.request.urlopen(url, timeout=120) as rsp:
        archive = zipfile.ZipFile(io.BytesIO(rsp.read()))
    s.cache_dir.mkdir(parents=True, exist_ok=True)
    prefix = f"{s.module}@{s.version}/"
    for (inner, want), path in zip(s.files.items(), s.paths(), strict=True):
        data = archive.read(prefix + inner)
        got = _sha256(data)
        if got != want:
            raise RuntimeError(f"{s.module}@{s.version}/{inner}: sha256 {got}, pinned {want}")
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(data)
        tmp.replace(path)
    return s.paths()


def ensure_fetched(log: Log = _stderr) -> list[Path]:
    """Every pinned CRD file, fetched if not cached yet."""
    paths: list[Path] = []
    for s in ALL:
        paths += s.paths() if is_fetched(s) else fetch(s, log)
    return paths


def install(cluster: Kubectl, log: Log = _stderr) -> None:
    """Apply the CRDs to a running cluster (idempotent) and wait until served."""
    args = [arg for p in ensure_fetched(log) for arg in ("-f", str(p))]
    cluster.kubectl("apply", "--server-side", "--force-conflicts", *args)
    cluster.kubectl(
        "wait", "--for=condition=Established", "--timeout=60s", *(f"crd/{n}" for n in NAMES)
    )
