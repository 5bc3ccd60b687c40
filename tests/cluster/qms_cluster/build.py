"""Build the control-plane binaries from the Go module proxy, once, and cache them.

Each binary set comes from a small wrapper Go module next to this package
(``tests/cluster/{k8s,etcd,kwok}``) whose go.mod/go.sum pin every dependency.
Binaries live outside the repository, under ``~/.cache/qms/<name>-<version>/bin``.
A stamp file next to them records the exact build (command and go.sum hash),
so a warm ``build`` is a no-op and a changed wrapper module rebuilds.
"""

from __future__ import annotations

import hashlib
import os
import re
import shlex
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

K8S_VERSION = "v1.34.4"
ETCD_VERSION = "v3.6.16"
KWOK_VERSION = "v0.7.0"
COSIGN_VERSION = "v3.1.3"
CRANE_VERSION = "v0.21.7"  # go-containerregistry, the version cosign's go.mod requires

CACHE_ROOT = Path.home() / ".cache" / "qms"
GO_DIR = Path(__file__).resolve().parent.parent  # tests/cluster
STAMP = ".qms-build"

Log = Callable[[str], None]


def _stderr(msg: str) -> None:
    print(f"qms-cluster: {msg}", file=sys.stderr, flush=True)


def _k8s_ldflags() -> str:
    # Exactly hack/lib/version.sh's variables that the binaries report.
    major, minor = K8S_VERSION.lstrip("v").split(".")[:2]
    cb, cg = "k8s.io/component-base/version", "k8s.io/client-go/pkg/version"
    x = [
        f"{cb}.gitVersion={K8S_VERSION}",
        f"{cb}.gitMajor={major}",
        f"{cb}.gitMinor={minor}",
        f"{cg}.gitVersion={K8S_VERSION}",
        f"{cb}.gitTreeState=clean",
        f"{cg}.gitMajor={major}",
        f"{cg}.gitMinor={minor}",
    ]
    return "-s -w " + " ".join(f"-X {v}" for v in x)


@dataclass(frozen=True)
class BinarySet:
    """Binaries built by one ``go build`` from one wrapper module."""

    name: str
    version: str
    module: str  # directory name under tests/cluster
    packages: tuple[str, ...]
    binaries: tuple[str, ...]
    ldflags: str
    version_cmd: tuple[str, ...]  # argv after the binary; output must contain version_text
    version_text: str

    @property
    def bin_dir(self) -> Path:
        return CACHE_ROOT / f"{self.name}-{self.version}" / "bin"

    @property
    def module_dir(self) -> Path:
        return GO_DIR / self.module

    def go_build_argv(self) -> list[str]:
        # `-o DIR/` with several main packages writes one binary per package;
        # with one package, `-o DIR/` still names it after the package path.
        out = f"{self.bin_dir}/" if len(self.packages) > 1 else str(self.bin_dir / self.binaries[0])
        return ["go", "build", "-trimpath", "-ldflags", self.ldflags, "-o", out, *self.packages]

    def fingerprint(self) -> str:
        h = hashlib.sha256()
        for f in ("go.mod", "go.sum", "main.go"):
            p = self.module_dir / f
            if p.exists():
                h.update(f.encode() + b"\0" + p.read_bytes() + b"\0")
        return " ".join(self.go_build_argv()) + "\n" + h.hexdigest() + "\n"


K8S = BinarySet(
    name="k8s",
    version=K8S_VERSION,
    module="k8s",
    packages=tuple(
        f"k8s.io/kubernetes/cmd/{c}"
        for c in ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl")
    ),
    binaries=("kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl"),
    ldflags=_k8s_ldflags(),
    version_cmd=("--version",),
    version_text=f"Kubernetes {K8S_VERSION}",
)
# The real node's binaries, from the same wrapper module (a set of their own, so
# the control plane's cached build stays valid without them).
K8S_NODE = BinarySet(
    name="k8s-node",
    version=K8S_VERSION,
    module="k8s",
    packages=tuple(f"k8s.io/kubernetes/cmd/{c}" for c in ("kubelet", "kube-proxy")),
    binaries=("kubelet", "kube-proxy"),
    ldflags=_k8s_ldflags(),
    version_cmd=("--version",),
    version_text=f"Kubernetes {K8S_VERSION}",
)
ETCD = BinarySet(
    name="etcd",
    version=ETCD_VERSION,
    module="etcd",
    packages=(".",),
    binaries=("etcd",),
    ldflags="-s -w",
    version_cmd=("--version",),
    version_text=f"etcd Version: {ETCD_VERSION.lstrip('v')}",
)
KWOK = BinarySet(
    name="kwok",
    version=KWOK_VERSION,
    module="kwok",
    packages=("sigs.k8s.io/kwok/cmd/kwok",),
    binaries=("kwok",),
    ldflags="-s -w",
    version_cmd=("--version",),
    version_text=KWOK_VERSION.lstrip("v"),
)
# Image signing (qms_cluster.signing): cosign, and crane for a registry on loopback
# (`crane registry serve`) and pushing OCI archives. One wrapper module for both.
COSIGN = BinarySet(
    name="cosign",
    version=COSIGN_VERSION,
    module="cosign",
    packages=("github.com/sigstore/cosign/v3/cmd/cosign",),
    binaries=("cosign",),
    ldflags=f"-s -w -X sigs.k8s.io/release-utils/version.gitVersion={COSIGN_VERSION}",
    version_cmd=("version",),
    version_text=COSIGN_VERSION,
)
CRANE = BinarySet(
    name="crane",
    version=CRANE_VERSION,
    module="cosign",
    packages=("github.com/google/go-containerregistry/cmd/crane",),
    binaries=("crane",),
    ldflags="-s -w -X github.com/google/go-containerregistry/cmd/crane/cmd.Version="
    + CRANE_VERSION,
    version_cmd=("version",),
    version_text=CRANE_VERSION,
)
# What `qms-cluster build` and `up` need: the control plane. The node's set is built
# where a real node can run; cosign and crane only when the signing tier runs
# (signing.ensure_tools): about four minutes of a cold build that nothing else uses.
ALL = (K8S, ETCD, KWOK)
NODE = (K8S_NODE,)  # built only where a real node can run (see node.py)
SIGNING = (COSIGN, CRANE)


def binary(name: str) -> Path:
    for s in (*ALL, *NODE, *SIGNING):
        if name in s.binaries:
            return s.bin_dir / name
    raise KeyError(name)


def _versions_ok(s: BinarySet) -> bool:
    for b in s.binaries:
        path = s.bin_dir / b
        if not os.access(path, os.X_OK):
            return False
        argv = [str(path), *(("version", "--client") if b == "kubectl" else s.version_cmd)]
        try:
            out = subprocess.run(argv, capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            return False
        text = out.stdout + out.stderr
        want = s.version_text if b != "kubectl" else f"Client Version: {K8S_VERSION}"
        if out.returncode != 0 or want not in text:
            return False
    return True


def is_built(s: BinarySet) -> bool:
    """True when the set's binaries exist from this exact wrapper module.

    Binaries without a stamp (built by hand with the same command) are adopted
    when each one reports the pinned version.
    """
    stamp = s.bin_dir / STAMP
    if stamp.exists() and all(os.access(s.bin_dir / b, os.X_OK) for b in s.binaries):
        return stamp.read_text() == s.fingerprint()
    if not stamp.exists() and _versions_ok(s):
        stamp.write_text(s.fingerprint())
        return True
    return False


def _go_version() -> tuple[int, ...] | None:
    go = shutil.which("go")
    if go is None:
        return None
    try:
        out = subprocess.run([go, "env", "GOVERSION"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    m = re.match(r"go(\d+)\.(\d+)(?:\.(\d+))?", out.stdout.strip())
    return tuple(int(g or 0) for g in m.groups()) if m else None


def _required_go(s: BinarySet) -> tuple[int, ...]:
    m = re.search(r"^go (\d+)\.(\d+)(?:\.(\d+))?", (s.module_dir / "go.mod").read_text(), re.M)
    return tuple(int(g or 0) for g in m.groups()) if m else (1, 0, 0)


def binaries_available() -> tuple[bool, str]:
    """Whether the binaries exist or can be built here, and why not if not."""
    missing = [s for s in ALL if not is_built(s)]
    if not missing:
        return True, f"cached under {CACHE_ROOT}"
    for s in missing:
        if not (s.module_dir / "go.mod").exists():
            return False, (
                f"{s.name} {s.version} is not built and its wrapper Go module "
                f"{s.module_dir} is missing (install qms from a checkout, editable)"
            )
    have = _go_version()
    if have is None:
        names = ", ".join(s.name for s in missing)
        return False, f"{names} not built under {CACHE_ROOT} and no Go toolchain on PATH"
    for s in missing:
        need = _required_go(s)
        if have < need:
            v = ".".join(map(str, need))
            got = ".".join(map(str, have))
            return False, f"building {s.name} needs Go >= {v}, this machine has Go {got}"
    return True, "not built yet; will build from the Go module proxy"


def _build_env() -> dict[str, str]:
    env = dict(os.environ, GOTOOLCHAIN="local", CGO_ENABLED="0")
    # No VCS stamping: the wrapper modules sit in this repository's work tree,
    # whose git state must not change (or break) the build.
    flags = env.get("GOFLAGS", "")
    if "-buildvcs" not in flags:
        env["GOFLAGS"] = f"{flags} -buildvcs=false".strip()
    env.pop("GOOS", None)
    env.pop("GOARCH", None)
    return env


def _count_packages(s: BinarySet, env: dict[str, str]) -> int | None:
    argv = ["go", "list", "-deps", "-f", "{{.ImportPath}}", *s.packages]
    try:
        r = subprocess.run(
            argv, cwd=s.module_dir, env=env, capture_output=True, text=True, timeout=600
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return len(r.stdout.split()) if r.returncode == 0 else None


def build_set(s: BinarySet, log: Log = _stderr) -> None:
    """Run ``go build`` for one set, reporting progress every few seconds."""
    env = _build_env()
    s.bin_dir.mkdir(parents=True, exist_ok=True)
    (s.bin_dir / STAMP).unlink(missing_ok=True)
    names = ", ".join(s.binaries)
    log(f"building {s.name} {s.version} ({names}) from {s.module_dir} into {s.bin_dir}")
    log("  $ " + shlex.join(s.go_build_argv()))
    total = _count_packages(s, env)
    argv = s.go_build_argv()
    argv.insert(2, "-v")  # one line per package compiled: the progress signal
    start = time.monotonic()
    proc = subprocess.Popen(
        argv, cwd=s.module_dir, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    compiled, tail = 0, list[str]()
    lock, done = threading.Lock(), threading.Event()

    def ticker() -> None:
        while not done.wait(15):
            with lock:
                n = compiled
            of = f"/{total}" if total else ""
            log(f"  {s.name}: {n}{of} packages compiled, {time.monotonic() - start:.0f}s")

    threading.Thread(target=ticker, daemon=True).start()
    assert proc.stdout is not None
    for line in proc.stdout:
        line = line.rstrip("\n")
        tail = [*tail[-40:], line]
        if line.startswith("go: ") and not line.startswith("go: downloading"):
            log("  " + line)
        elif (" " not in line and "/" in line) or line.isidentifier():
            with lock:
                compiled += 1
    rc = proc.wait()
    done.set()
    elapsed = time.monotonic() - start
    if rc != 0:
        raise RuntimeError(f"go build of {s.name} failed (rc={rc}):\n" + "\n".join(tail))
    (s.bin_dir / STAMP).write_text(s.fingerprint())
    log(f"built {s.name} {s.version} in {elapsed:.0f}s ({compiled} packages compiled)")


def ensure_built(log: Log = _stderr) -> None:
    """Build every missing binary set; a no-op when all are cached."""
    ok, reason = binaries_available()
    if not ok:
        raise RuntimeError(f"cannot build the control plane: {reason}")
    missing = [s for s in ALL if not is_built(s)]
    for s in missing:
        build_set(s, log)
    if not missing:
        versions = ", ".join(f"{s.name} {s.version}" for s in ALL)
        log(f"binaries cached ({versions}) under {CACHE_ROOT}")


def ensure_node_built(log: Log = _stderr) -> None:
    """Build kubelet and kube-proxy for the real node; a no-op when cached."""
    for s in NODE:
        if not is_built(s):
            build_set(s, log)
