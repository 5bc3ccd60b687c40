"""Build Dockerfile.operator and Dockerfile.runtime here, and load them into the real node.

The engine is whatever the machine has: docker or podman where a user has one
(their own registries and bases), else buildah with chroot isolation (this
project's CI machines: no Docker engine, no registry). Without a registry the
Dockerfiles' bases are swapped, through their ``BASE_IMAGE`` build argument,
for a local Debian base made with mmdebstrap (python3, python3-venv).

Image layers are cached by the engine (``--layers``): the dependency layer is
rebuilt only when pyproject.toml or .ci/constraints.txt change; pip's cache is
the Dockerfiles' cache mount. The images are loaded into the real node's
containerd with ``ctr images import`` (no registry); a stamp skips the import
when containerd already holds the same image.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from . import build, node, packages, procs

ROOT = build.GO_DIR.parent.parent  # the repository
TAG = "dev"
BASE_SUITE = "bookworm"
BASE_PACKAGES = ("python3", "python3-venv")
# Host files that build steps need to reach the package registries here (HTTPS is
# verified against the host's bundle); bound read-only into RUN steps, never
# copied into a layer.
BUILD_BINDS = ("/etc/ssl/certs/ca-certificates.crt", "/etc/pip.conf")
Log = Callable[[str], None]
# The engine of a machine without docker or podman, with its base-image maker.
BUILDAH_COMMANDS = ("buildah", "mmdebstrap")


def _stderr(msg: str) -> None:
    print(f"qms-cluster: {msg}", file=sys.stderr, flush=True)


@dataclass(frozen=True)
class Image:
    name: str  # operator | runtime
    dockerfile: str

    @property
    def ref(self) -> str:
        return f"localhost/qms-{self.name}:{TAG}"


OPERATOR = Image("operator", "Dockerfile.operator")
RUNTIME = Image("runtime", "Dockerfile.runtime")
IMAGES = {i.name: i for i in (OPERATOR, RUNTIME)}


def engine(log: Log = _stderr) -> str:
    """docker or podman when they work here, else buildah.

    buildah and mmdebstrap (the local base) are installed from Debian when missing
    (as root), or named in the error (packages.ensure).
    """
    for name in ("docker", "podman"):
        if (
            shutil.which(name)
            and subprocess.run([name, "info"], capture_output=True, timeout=30).returncode == 0
        ):
            return name
    packages.ensure(BUILDAH_COMMANDS, "building images", log)
    return "buildah"


def _buildah(*args: str, check: bool = True) -> str:
    r = subprocess.run(["buildah", *args], capture_output=True, text=True)
    if check and r.returncode != 0:
        raise RuntimeError(f"buildah {' '.join(args)} failed: {r.stderr.strip()[-2000:]}")
    return r.stdout


def image_id(ref: str) -> str | None:
    out = _buildah("images", "--json", "--no-trunc", ref, check=False)
    try:
        items = json.loads(out or "[]")
    except ValueError:
        return None
    return str(items[0]["id"]) if items else None


def image_size(ref: str) -> int:
    """Bytes of the image's layers as stored (uncompressed tars)."""
    manifest = json.loads(json.loads(_buildah("inspect", "--type", "image", ref))["Manifest"])
    return sum(int(layer["size"]) for layer in manifest["layers"])


def base_ref() -> str:
    key = hashlib.sha256(f"{BASE_SUITE} {' '.join(BASE_PACKAGES)}".encode()).hexdigest()[:8]
    return f"localhost/qms-base:{BASE_SUITE}-{key}"


def ensure_base(log: Log) -> str:
    """The local Debian base image (mmdebstrap --variant=minbase), made once."""
    ref = base_ref()
    if image_id(ref):
        return ref
    t0 = time.monotonic()
    log(f"making the local base {ref} with mmdebstrap (about a minute)")
    with tempfile.TemporaryDirectory(prefix="qms-base-") as tmp:
        tar = Path(tmp) / "base.tar"
        argv = [
            "mmdebstrap",
            "--variant=minbase",
            f"--include={','.join(BASE_PACKAGES)}",
            BASE_SUITE,
            str(tar),
        ]
        _stream(argv, log, "base")  # its lines are not steps: a tick every 30 s
        ctr = _buildah("from", "scratch").strip()
        try:
            _buildah("add", ctr, str(tar), "/")
            _buildah("config", "--cmd", "/bin/bash", "--env", "LANG=C.UTF-8", ctr)
            _buildah("commit", "--quiet", ctr, ref)
        finally:
            _buildah("rm", ctr, check=False)
    log(f"base {ref} made in {time.monotonic() - t0:.0f}s")
    return ref


STEP_LINES = ("STEP ", "COMMIT", "Successfully", "Error", "error", "Collecting ", "Installing")


def _step(line: str) -> str:
    return re.sub(r"^\[\d+/\d+\] ", "", line)  # "[1/2] STEP 3/9: ..." in multi-stage


def _stream(argv: list[str], log: Log, what: str) -> None:
    """Run a build, passing its step lines through and ticking on long steps."""

    def step(line: str) -> bool:
        return _step(line).startswith(
            (
                "STEP ",
                "COMMIT",
                "Successfully",
                "Error",
                "error",
                "Collecting ",
                "Installing collected",
            )
        )

    def show(line: str) -> str | None:
        if step(line) and not _step(line).startswith("Collecting "):
            return f"  {what}: {line[:160]}"
        return None

    procs.run_showing(argv, log, f"building {what}", show, step, cwd=ROOT)


def build_image(
    image: Image,
    log: Log = _stderr,
    base: str | None = None,
    single_stage: bool = False,
    tag: str | None = None,
) -> float:
    """Build one image with the machine's engine; returns the seconds it took.

    single_stage builds only the Dockerfile's builder stage (for the multi-stage
    comparison the seed asks for; never used by the cluster).
    """
    eng = engine(log)
    ref = tag or image.ref
    argv = [eng, "build" if eng != "buildah" else "bud", "-f", image.dockerfile, "-t", ref]
    if base:
        argv += ["--build-arg", f"BASE_IMAGE={base}"]
    if single_stage:
        argv += ["--target", "builder"]
    if eng == "buildah":
        argv += ["--isolation", "chroot", "--layers", "--format", "docker"]
        if base and base.startswith("localhost/"):
            argv += ["--pull-never"]
        for f in BUILD_BINDS:
            if Path(f).exists():
                argv += ["-v", f"{f}:{f}:ro"]
    argv.append(".")
    t0 = time.monotonic()
    log(f"building {ref} from {image.dockerfile} with {eng}")
    _stream(argv, log, image.name)
    took = time.monotonic() - t0
    log(f"built {ref} in {took:.0f}s")
    return took


def build_all(
    log: Log = _stderr, names: tuple[str, ...] = ("operator", "runtime")
) -> dict[str, str]:
    """Build the images (buildah here: on the local base); {name: ref}."""
    eng = engine(log)
    base = ensure_base(log) if eng == "buildah" else None
    refs = {}
    for n in names:
        build_image(IMAGES[n], log, base)
        refs[n] = IMAGES[n].ref
        if eng == "buildah":
            # Name the builder stage too (all cached: seconds), so that pruning
            # keeps the layer cache of this build and drops older builds' layers.
            build_image(IMAGES[n], lambda _: None, base, single_stage=True, tag=builder_ref(n))
            log(f"  {IMAGES[n].ref}: {image_size(IMAGES[n].ref) / 1e9:.2f} GB")
    if eng == "buildah":
        _buildah("rmi", "--prune", check=False)
    return refs


def builder_ref(name: str) -> str:
    return f"{IMAGES[name].ref}-builder"


def load(ref: str, lay: node.NodeLayout, log: Log = _stderr) -> None:
    """Put a buildah image into the real node's containerd (k8s.io namespace)."""
    want = image_id(ref)
    if want is None:
        raise RuntimeError(f"no image {ref} built here (qms-cluster images)")
    stamps = node.containerd_root() / "qms-imported"
    stamp = stamps / hashlib.sha256(ref.encode()).hexdigest()[:16]
    present = ref in node.ctr(lay, "images", "ls", "-q").split()
    if present and stamp.exists() and stamp.read_text() == want:
        log(f"{ref} already in the node's containerd ({want[:12]})")
        return
    t0 = time.monotonic()
    # docker-archive (uncompressed layers: nothing to gzip on 2 cores), streamed
    # into `ctr images import -`: no copy of a 6 GB image on disk in between.
    push = subprocess.Popen(
        ["buildah", "push", "--quiet", ref, f"docker-archive:/dev/stdout:{ref}"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    imp = subprocess.run(
        ["ctr", f"--address={lay.sock}", "--namespace=k8s.io", "images", "import", "-"],
        stdin=push.stdout,
        capture_output=True,
        text=True,
    )
    assert push.stdout is not None and push.stderr is not None
    push.stdout.close()
    push_err = push.stderr.read().decode(errors="replace")
    if push.wait() != 0 or imp.returncode != 0:
        raise RuntimeError(f"loading {ref} failed: {push_err.strip()} {imp.stderr.strip()}")
    # The CRI plugin also names each image by its ID; the previous build's ID
    # would keep its 6 GB alive after the tag moved on.
    old = stamp.read_text() if stamp.exists() else None
    if old and old != want:
        node.ctr(lay, "images", "rm", old, check=False)
    stamps.mkdir(parents=True, exist_ok=True)
    stamp.write_text(want)
    log(f"loaded {ref} into the node's containerd in {time.monotonic() - t0:.0f}s")
