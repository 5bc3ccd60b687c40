"""Sign container images with cosign and verify them, offline, on loopback only.

cosign (built by ``qms-cluster build`` from tests/cluster/cosign) signs an
image that sits in a registry, so signing runs a throwaway registry on
127.0.0.1 (``crane registry serve``, from the same wrapper module, gone afterwards),
pushes the image archive to it, signs the pushed digest with a key pair made by
``cosign generate-key-pair`` (ECDSA P-256; the public key is a PEM
``PUBLIC KEY``), verifies it there, and saves the image with its signature as an
OCI layout (``cosign save``). That layout is the signed artifact: it outlives
the registry and verifies offline with ``cosign verify --local-image``.

Signatures use cosign's classic format: a simple-signing payload stored under
the tag ``sha256-<digest>.sig``, no transparency log (there is no network).
That is the format the admission policies in deploy/signing verify with a key
(sigstore policy-controller's ``key`` authority, Kyverno's ``keys`` attestor);
neither verifies key-signed cosign v3 bundles reliably yet. See docs/signing.md.

Python API (CLI: ``python -m qms_cluster.signing keygen | sign | verify | tiny-image``)::

    key = signing.key_pair(key_dir)                     # made once, then reused
    img = signing.sign_archive(archive, key, out_dir)   # -> SignedImage(digest=...)
    signing.verify_layout(out_dir, key.public_key)      # raises VerificationError

``archive`` is any OCI image: an OCI layout directory, an OCI archive (a tar of
a layout: ``buildah push IMG oci-archive:X.tar``) or a ``docker save`` tarball.
From an OCI layout or archive the manifest is pushed byte for byte, so the
signed digest is the one ``ctr images import`` of the same archive reports.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import re
import shlex
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import build
from .oci import OCI_MANIFEST, tiny_image, write_image
from .registry import LocalRegistry as LocalRegistry
from .registry import Log as Log
from .registry import _quiet
from .registry import tool_env as _env

KEY_PREFIX = "cosign"  # cosign generate-key-pair writes cosign.key and cosign.pub
# The SubjectPublicKeyInfo prefix of every ECDSA P-256 key (id-ecPublicKey, prime256v1).
P256_SPKI_PREFIX = bytes.fromhex("3059301306072a8648ce3d020106082a8648ce3d030107034200")
SIGN_FLAGS = (
    # Classic .sig-tag signature, no Rekor upload, no TUF signing config: offline.
    "--new-bundle-format=false",
    "--use-signing-config=false",
    "--tlog-upload=false",
    "--yes",
)
VERIFY_FLAGS = ("--insecure-ignore-tlog=true",)
KIND_IMAGE = "dev.cosignproject.cosign/image"  # cosign save's annotation in index.json


class SigningError(RuntimeError):
    """A cosign or crane command failed; ``message`` is the tool's own error line."""

    def __init__(self, argv: list[str], returncode: int, output: str) -> None:
        self.argv, self.returncode, self.output = argv, returncode, output
        errors = [
            ln.removeprefix("Error: ") for ln in output.splitlines() if ln.startswith("Error: ")
        ]
        self.message = (
            errors[-1] if errors else (output.strip().splitlines() or ["(no output)"])[-1]
        )
        super().__init__(f"{Path(argv[0]).name} failed (rc={returncode}): {self.message}")


class VerificationError(SigningError):
    """cosign refused the image: no signature, or none that verifies with the key."""


@dataclass(frozen=True)
class KeyPair:
    private_key: Path  # cosign's encrypted private key (ENCRYPTED SIGSTORE PRIVATE KEY)
    public_key: Path  # PEM PUBLIC KEY, ECDSA P-256: what the policies in deploy/signing hold
    password: str = ""


@dataclass(frozen=True)
class SignedImage:
    digest: str  # sha256:... of the signed manifest (or index)
    layout: Path  # OCI layout with the image and its signature (cosign save)
    reference: str  # where it was signed: 127.0.0.1:PORT/REPO@DIGEST (gone with the registry)


def _run(
    tool: str,
    args: list[str],
    *,
    password: str = "",
    log: Log = _quiet,
    error: type[SigningError] = SigningError,
    timeout: float = 1800,  # pushing or saving a runtime image moves gigabytes
) -> str:
    argv = [str(build.binary(tool)), *args]
    log("$ " + shlex.join([tool, *args]))
    try:
        r = subprocess.run(
            argv, env=_env(password), capture_output=True, text=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired as e:
        raise SigningError(argv, -1, f"timed out after {timeout:.0f}s") from e
    if r.returncode != 0:
        raise error(argv, r.returncode, r.stdout + r.stderr)
    return r.stdout


def ensure_tools(log: Log = _quiet) -> None:
    """Build cosign and crane when they are not cached yet (minutes, once)."""
    for s in build.SIGNING:
        if not build.is_built(s):
            build.build_set(s, log)


# --- keys -------------------------------------------------------------------------------


def key_pair(key_dir: Path, password: str | None = None, log: Log = _quiet) -> KeyPair:
    """The key pair in ``key_dir``, made on the spot with ``cosign generate-key-pair`` if absent.

    The password defaults to $COSIGN_PASSWORD, else empty (a throwaway local key).
    """
    pw = os.environ.get("COSIGN_PASSWORD", "") if password is None else password
    key_dir.mkdir(parents=True, exist_ok=True)
    kp = KeyPair(key_dir / f"{KEY_PREFIX}.key", key_dir / f"{KEY_PREFIX}.pub", pw)
    if kp.private_key.exists() != kp.public_key.exists():
        raise FileExistsError(f"{key_dir} holds only half of a cosign key pair")
    if not kp.private_key.exists():
        _run(
            "cosign",
            ["generate-key-pair", "--output-key-prefix", str(key_dir / KEY_PREFIX)],
            password=pw,
            log=log,
        )
    check_public_key(kp.public_key)
    return kp


def check_public_key(path: Path) -> None:
    """Raise ValueError unless ``path`` is the key format the policies expect (PEM, P-256)."""
    text = path.read_text()
    m = re.fullmatch(
        r"-----BEGIN PUBLIC KEY-----\n([A-Za-z0-9+/=\n]+)-----END PUBLIC KEY-----\n?", text
    )
    if not m or not base64.b64decode(m.group(1)).startswith(P256_SPKI_PREFIX):
        raise ValueError(f"{path} is not a PEM ECDSA P-256 public key")


PLACEHOLDER = "REPLACE-WITH-cosign.pub"
_PLACEHOLDER_PEM = re.compile(
    r"^(?P<indent>[ \t]*)-----BEGIN PUBLIC KEY-----\n[ \t]*"
    + re.escape(PLACEHOLDER)
    + r"\n[ \t]*-----END PUBLIC KEY-----$",
    re.M,
)


def policy_with_key(policy: Path, public_key: Path) -> str:
    """A deploy/signing policy's text with its placeholder key replaced by ``public_key``."""
    check_public_key(public_key)
    lines = public_key.read_text().strip().splitlines()
    text = policy.read_text()
    if not _PLACEHOLDER_PEM.search(text):
        raise ValueError(f"{policy} has no {PLACEHOLDER} key to fill in")
    return _PLACEHOLDER_PEM.sub(lambda m: "\n".join(m["indent"] + ln for ln in lines), text)


# --- images -----------------------------------------------------------------------------


@contextlib.contextmanager
def _pushable(archive: Path) -> Iterator[tuple[Path, bool]]:
    """(path crane can push, whether it holds several images) for any OCI image archive."""
    if archive.is_dir():
        if not (archive / "index.json").exists():
            raise ValueError(f"{archive} is a directory but not an OCI layout (no index.json)")
        yield archive, _image_count(archive) > 1
        return
    with tarfile.open(archive) as tf:
        names = {n.removeprefix("./") for n in tf.getnames()}
        if "index.json" not in names:
            if "manifest.json" in names:
                yield archive, False  # docker save tarball: crane reads it as is
                return
            raise ValueError(f"{archive}: neither an OCI archive nor a docker save tarball")
        with tempfile.TemporaryDirectory(prefix="qms-oci-") as tmp:
            tf.extractall(tmp, filter="data")
            yield Path(tmp), _image_count(Path(tmp)) > 1


def _image_count(layout: Path) -> int:
    return len(json.loads((layout / "index.json").read_text()).get("manifests", []))


def push(archive: Path, reference: str, log: Log = _quiet) -> str:
    """Push an OCI image archive to ``reference`` (REGISTRY/REPO:TAG); returns REPO@DIGEST."""
    with _pushable(archive) as (path, several):
        out = _run(
            "crane", ["push", *(["--index"] if several else []), str(path), reference], log=log
        )
    pushed = out.strip().splitlines()[-1]
    if "@sha256:" not in pushed:
        raise RuntimeError(f"crane push printed no digest: {out!r}")
    return pushed


def digest_of(reference: str, log: Log = _quiet) -> str:
    return _run("crane", ["digest", reference], log=log).strip()


def copy(src: str, dst: str, log: Log = _quiet) -> None:
    """``crane copy`` between references (in the loopback registry)."""
    _run("crane", ["copy", src, dst], log=log)


def sign(image: str, key: KeyPair, log: Log = _quiet) -> None:
    """Sign ``image`` (REGISTRY/REPO@DIGEST, pushed) with ``key``: a ``.sig`` tag beside it."""
    if "@sha256:" not in image:
        raise ValueError(f"sign an image by digest, not by tag: {image}")
    _run(
        "cosign",
        ["sign", "--key", str(key.private_key), *SIGN_FLAGS, image],
        password=key.password,
        log=log,
    )


def _claims(out: str) -> list[dict[str, Any]]:
    # cosign verify prints one JSON list of the verified simple-signing payloads.
    return list(json.loads(out.strip().splitlines()[-1]))


def verify(image: str, public_key: Path, log: Log = _quiet) -> list[dict[str, Any]]:
    """``cosign verify`` against the registry; the verified claims, or VerificationError."""
    out = _run(
        "cosign",
        ["verify", "--key", str(public_key), *VERIFY_FLAGS, image],
        log=log,
        error=VerificationError,
    )
    return _claims(out)


def save(image: str, layout: Path, log: Log = _quiet) -> None:
    """``cosign save``: the image and its signatures into an OCI layout directory."""
    _run("cosign", ["save", "--dir", str(layout), image], log=log)


def verify_layout(layout: Path, public_key: Path, log: Log = _quiet) -> str:
    """Verify a signed OCI layout offline; returns the verified image digest.

    ``cosign verify --local-image`` checks the signature over the image's manifest
    digest; the manifest names its config and layers by digest, and this also
    re-hashes every blob the image uses, so a changed layer fails here too.
    """
    out = _run(
        "cosign",
        ["verify", "--local-image", "--key", str(public_key), *VERIFY_FLAGS, str(layout)],
        log=log,
        error=VerificationError,
    )
    (digest,) = {c["critical"]["image"]["docker-manifest-digest"] for c in _claims(out)}
    check_blobs(layout, digest)
    return str(digest)


def check_blobs(layout: Path, digest: str) -> None:
    """Raise VerificationError if a blob of the image ``digest`` does not match its name."""
    todo, seen = [digest], set[str]()
    while todo:
        d = todo.pop()
        if d in seen:
            continue
        seen.add(d)
        blob = layout / "blobs" / Path(*d.split(":", 1))
        h = hashlib.sha256()
        try:
            with blob.open("rb") as f:
                while chunk := f.read(1 << 20):
                    h.update(chunk)
        except FileNotFoundError:
            raise VerificationError(["check_blobs"], 1, f"Error: blob {d} is missing") from None
        if f"sha256:{h.hexdigest()}" != d:
            raise VerificationError(
                ["check_blobs"], 1, f"Error: blob {d} does not match its digest"
            )
        if d == digest or blob.stat().st_size < (1 << 20):
            with contextlib.suppress(ValueError, UnicodeDecodeError):
                doc = json.loads(blob.read_bytes())
                if isinstance(doc, dict) and "schemaVersion" in doc:  # manifest or index
                    todo += [m["digest"] for m in doc.get("manifests", [])]
                    todo += [doc["config"]["digest"]] if "config" in doc else []
                    todo += [layer["digest"] for layer in doc.get("layers", [])]


def sign_archive(
    archive: Path,
    key: KeyPair,
    out: Path,
    repository: str = "qms/image",
    tag: str = "latest",
    log: Log = _quiet,
) -> SignedImage:
    """Push ``archive`` to a loopback registry, sign it, verify it, save it to ``out``."""
    ensure_tools(log)
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out} exists and is not empty")
    with LocalRegistry(log) as reg:
        ref = push(archive, f"{reg.host}/{repository}:{tag}", log)
        sign(ref, key, log)
        verify(ref, key.public_key, log)
        save(ref, out, log)
    digest = ref.split("@", 1)[1]
    if verify_layout(out, key.public_key, log) != digest:
        raise VerificationError(["verify_layout"], 1, f"Error: {out} does not hold {digest}")
    return SignedImage(digest=digest, layout=out, reference=ref)


def main(argv: list[str] | None = None) -> int:
    """The command line (signing_cli.py)."""
    from .signing_cli import run

    return run(argv)


__all__ = [
    "OCI_MANIFEST",
    "KeyPair",
    "LocalRegistry",
    "SignedImage",
    "SigningError",
    "VerificationError",
    "check_blobs",
    "check_public_key",
    "copy",
    "digest_of",
    "ensure_tools",
    "key_pair",
    "main",
    "policy_with_key",
    "push",
    "save",
    "sign",
    "sign_archive",
    "tiny_image",
    "verify",
    "verify_layout",
    "write_image",
]

if __name__ == "__main__":
    sys.exit(main())
