"""Prometheus and promtool for the monitoring tests and scripts/check-deploy.sh.

Debian's `prometheus` package (2.42 on bookworm) brings both binaries. It is not
installed with `apt-get install`: its maintainer scripts add a system user and start
a Prometheus service on :9090 (the operator's metrics port) wherever a service
manager runs. Instead `apt-get download` fetches the .deb and `dpkg-deb -x` unpacks
it into the cache (`$QMS_CACHE`, default ~/.cache/qms, as the control plane's
binaries): nothing system-wide changes and no daemon starts. Both binaries are Go
programs linked against libc only.

    python3 tests/cluster/qms_testkit/prometheus_binaries.py  # prints the binaries' directory

`QMS_PROMETHEUS_BIN` names a directory that already holds both (no download).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

CACHE = Path(os.environ.get("QMS_CACHE") or Path.home() / ".cache" / "qms")
PACKAGE = "prometheus"
BINARIES = ("prometheus", "promtool")


def _has_both(bin_dir: Path) -> bool:
    return all(os.access(bin_dir / name, os.X_OK) for name in BINARIES)


def _cached() -> Path | None:
    ready = sorted(CACHE.glob(f"{PACKAGE}-*/.ready"))
    return ready[-1].parent / "usr" / "bin" if ready else None


def _download(into: Path) -> Path:
    """The package's .deb in `into`; `apt-get update` first only when needed (root)."""
    argv = ["apt-get", "download", "-q", PACKAGE]
    result = subprocess.run(argv, cwd=into, capture_output=True, text=True)
    if result.returncode != 0 and os.geteuid() == 0:
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        subprocess.run(["apt-get", "update", "-q"], env=env, check=True, capture_output=True)
        result = subprocess.run(argv, cwd=into, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"apt-get download {PACKAGE} failed:\n{result.stderr[-2000:]}")
    (deb,) = into.glob(f"{PACKAGE}_*.deb")
    return deb


def ensure() -> Path:
    """The directory holding `prometheus` and `promtool`, unpacked on first use."""
    given = os.environ.get("QMS_PROMETHEUS_BIN")
    if given:
        if not _has_both(Path(given)):
            raise RuntimeError(f"QMS_PROMETHEUS_BIN={given} lacks {' or '.join(BINARIES)}")
        return Path(given)
    cached = _cached()
    if cached is not None and _has_both(cached):
        return cached
    if not shutil.which("apt-get") or not shutil.which("dpkg-deb"):
        raise RuntimeError("Prometheus comes from Debian's package: no apt-get/dpkg-deb here")
    CACHE.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=CACHE) as work:
        deb = _download(Path(work))
        version = subprocess.run(
            ["dpkg-deb", "-f", str(deb), "Version"], capture_output=True, text=True, check=True
        ).stdout.strip()
        unpacked = Path(work) / "root"
        subprocess.run(["dpkg-deb", "-x", str(deb), str(unpacked)], check=True)
        if not _has_both(unpacked / "usr" / "bin"):
            raise RuntimeError(f"{deb.name} has no usr/bin/{' or usr/bin/'.join(BINARIES)}")
        (unpacked / ".ready").write_text(version + "\n")
        target = CACHE / f"{PACKAGE}-{version.replace(':', '_')}"
        if target.exists():  # a half-written one (no .ready): replace it
            shutil.rmtree(target)
        unpacked.rename(target)
    return target / "usr" / "bin"


if __name__ == "__main__":
    try:
        print(ensure())
    except (RuntimeError, subprocess.CalledProcessError) as error:
        print(f"prometheus_binaries: {error}", file=sys.stderr)
        sys.exit(1)
