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

import argparse
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
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import build
from .oci import OCI_MANIFEST, tiny_image, write_image

Log = Callable[[str], None]

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


# Loopback only: never through a proxy named in the environment.
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _quiet(_: str) -> None:
    pass


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


def _env(password: str = "") -> dict[str, str]:
    env = dict(os.environ, COSIGN_PASSWORD=password)
    # Nothing of the public Sigstore instance is used; keep any TUF cache out of $HOME.
    env.setdefault("TUF_ROOT", str(Path(tempfile.gettempdir()) / "qms-cosign-tuf"))
    for proxy in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
        env.pop(proxy, None)  # loopback only
    return env


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


# --- a registry on loopback -------------------------------------------------------------


class LocalRegistry:
    """``crane registry serve`` on 127.0.0.1 with a free port; removed with all it held on exit.

    Manifests are kept in memory, blobs in a temporary directory.
    """

    def __init__(self, log: Log = _quiet) -> None:
        self._log = log
        self._proc: subprocess.Popen[bytes] | None = None
        self._dir: tempfile.TemporaryDirectory[str] | None = None
        self.host = ""

    def __enter__(self) -> LocalRegistry:
        self._dir = tempfile.TemporaryDirectory(prefix="qms-registry-")
        logfile = Path(self._dir.name) / "registry.log"
        blobs = Path(self._dir.name) / "blobs"  # on disk: a runtime image is gigabytes
        blobs.mkdir()
        argv = [str(build.binary("crane")), "registry", "serve", "--address", "127.0.0.1:0"]
        argv += ["--disk", str(blobs)]
        self._log("$ " + shlex.join(["crane", *argv[1:]]))
        with logfile.open("wb") as out:
            self._proc = subprocess.Popen(
                argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=_env()
            )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            m = re.search(rb"serving on port (\d+)", logfile.read_bytes())
            if m:
                self.host = f"127.0.0.1:{int(m.group(1))}"
                if self._ping():
                    self._log(f"registry on {self.host}")
                    return self
            if self._proc.poll() is not None:
                break
            time.sleep(0.05)
        text = logfile.read_text(errors="replace")
        self.__exit__(None, None, None)
        raise RuntimeError(f"crane registry did not start on 127.0.0.1:\n{text}")

    def _ping(self) -> bool:
        try:
            with _DIRECT.open(f"http://{self.host}/v2/", timeout=2) as r:
                return bool(r.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def __exit__(self, *_: object) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._proc = None
        if self._dir is not None:
            self._dir.cleanup()
            self._dir = None

    def url(self, path: str) -> str:
        return f"http://{self.host}{path}"


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


# --- CLI: python -m qms_cluster.signing keygen | sign | verify | tiny-image ----------------


def add_commands(sub: Any) -> None:
    """Add ``keygen``, ``sign``, ``verify`` and ``tiny-image`` to an argparse subparsers.

    Each sets ``run`` (a function of the parsed namespace, returning the exit code).
    """
    p = sub.add_parser("keygen", help="make a cosign key pair in a directory (kept if present)")
    p.add_argument("--key-dir", type=Path, required=True)
    p.set_defaults(run=_cmd_keygen)
    p = sub.add_parser(
        "sign",
        help="sign an OCI image archive (loopback registry) and save it signed as an OCI layout",
    )
    p.add_argument("archive", type=Path, help="OCI layout dir, OCI archive tar or docker save tar")
    p.add_argument("--key-dir", type=Path, required=True, help="key pair here, made if absent")
    p.add_argument(
        "--out", type=Path, required=True, help="OCI layout to write (image + signature)"
    )
    p.add_argument("--repository", default="qms/image", help="repository name in the registry")
    p.add_argument("--tag", default="latest")
    p.set_defaults(run=_cmd_sign)
    p = sub.add_parser(
        "verify", help="verify a signed OCI layout (from `sign`) offline with a public key"
    )
    p.add_argument("layout", type=Path)
    group = p.add_mutually_exclusive_group(required=True)
    group.add_argument("--key-dir", type=Path, help="directory holding cosign.pub")
    group.add_argument("--key", type=Path, help="a public key file")
    p.set_defaults(run=_cmd_verify)
    p = sub.add_parser("tiny-image", help="write a tiny one-file OCI archive (for trying this out)")
    p.add_argument("path", type=Path)
    p.add_argument("--text", default="hello from qms\n", help="content of /hello.txt")
    p.set_defaults(run=_cmd_tiny_image)


def _stderr(msg: str) -> None:
    print(f"qms-cluster: {msg}", file=sys.stderr, flush=True)


def _cmd_keygen(args: argparse.Namespace) -> int:
    ensure_tools(_stderr)
    kp = key_pair(args.key_dir, log=_stderr)
    print(kp.public_key)
    return 0


def _cmd_sign(args: argparse.Namespace) -> int:
    ensure_tools(_stderr)
    kp = key_pair(args.key_dir, log=_stderr)
    s = sign_archive(args.archive, kp, args.out, args.repository, args.tag, log=_stderr)
    print(s.digest)
    return 0


def _cmd_verify(args: argparse.Namespace) -> int:
    ensure_tools(_stderr)
    pub = args.key if args.key else args.key_dir / f"{KEY_PREFIX}.pub"
    try:
        digest = verify_layout(args.layout, pub, log=_stderr)
    except VerificationError as e:
        print(f"qms-cluster: verification FAILED: {e.message}", file=sys.stderr)
        return 1
    print(f"Verified OK: {digest}")
    return 0


def _cmd_tiny_image(args: argparse.Namespace) -> int:
    print(tiny_image(args.path, {"hello.txt": args.text.encode()}))
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m qms_cluster.signing",
        description=f"Sign and verify OCI images offline with cosign {build.COSIGN_VERSION} "
        "(a registry on 127.0.0.1 while signing). See docs/signing.md.",
    )
    add_commands(p.add_subparsers(dest="command", required=True))
    args = p.parse_args(argv)
    try:
        return int(args.run(args))
    except (RuntimeError, ValueError, OSError) as e:
        print(f"qms-cluster: error: {e}", file=sys.stderr)
        return 1


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
