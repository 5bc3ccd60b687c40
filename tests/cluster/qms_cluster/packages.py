"""What this machine must have: every Debian package that a script, a ``qms-cluster``
verb or a test tier runs, declared here and nowhere else.

A fresh machine of the CI kind has a minimal Debian system, Python, Go and git
(``BASE`` below) and nothing of what the local cluster and the images need. Each
user of a tool asks :func:`ensure` for the commands it is about to run; what is
missing is installed with apt (as root, with progress on stderr) or named in one
line with the ``apt-get install`` that would bring it. ``tests/repo/
test_machine_packages.py`` reads the commands the code runs and fails when one is
neither declared here nor part of ``BASE``.

``python3 -m qms_cluster.packages`` prints the list and what is missing here.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from . import procs

Log = Callable[[str], None]

CNI_DIR = Path("/usr/lib/cni")


@dataclass(frozen=True)
class Need:
    command: str  # a command looked up on PATH, or an absolute path to a file
    package: str  # the Debian package that provides it
    used_by: str


NEEDS: tuple[Need, ...] = (
    Need("buildah", "buildah", "qms-cluster images, where no docker or podman works"),
    Need("mmdebstrap", "mmdebstrap", "qms-cluster images: the local Debian base image"),
    Need("containerd", "containerd", "the real node's container runtime"),
    Need("ctr", "containerd", "the real node: image import, sandbox clean-up"),
    Need("runc", "runc", "the real node's OCI runtime (containerd, buildah)"),
    Need("iptables", "iptables", "the real node's FORWARD guard; kube-proxy"),
    Need("iptables-save", "iptables", "kube-proxy; the real node's clean-up"),
    Need("iptables-restore", "iptables", "kube-proxy"),
    Need("ip", "iproute2", "the real node's bridge, routes and network namespaces"),
    Need("gcc", "gcc", "the real node's sandbox (pause) binary"),
    *(
        Need(str(CNI_DIR / plugin), "containernetworking-plugins", "the real node's pod network")
        for plugin in ("bridge", "host-local", "loopback", "portmap")
    ),
)
# Packages fetched with `apt-get download` and unpacked into ~/.cache/qms, never
# installed (their maintainer scripts would start a service): package -> what for.
DOWNLOADED = {
    "prometheus": "promtool and prometheus for the monitoring tier and scripts/check-deploy.sh "
    "(tests/cluster/qms_testkit/prometheus_binaries.py)",
}
# Never installed by the project: a minimal Debian system's own tools, Python, Go, git.
BASE = frozenset(
    {
        "apt-get",
        "bash",
        "chmod",
        "cp",
        "dpkg-deb",
        "env",
        "flock",
        "git",
        "go",
        "kill",
        "mkdir",
        "mount",
        "python",
        "python3",
        "rm",
        "sh",
        "tar",
        "umount",
    }
)


def declared(command: str) -> Need:
    for need in NEEDS:
        if need.command == command or Path(need.command).name == Path(command).name:
            return need
    raise KeyError(f"{command} is not declared in qms_cluster.packages.NEEDS")


def _present(command: str) -> bool:
    return Path(command).exists() if command.startswith("/") else shutil.which(command) is not None


def missing(commands: Iterable[str]) -> list[str]:
    """The Debian packages to install for these commands (declared ones), sorted."""
    return sorted({declared(c).package for c in commands if not _present(c)})


def install_hint(packages: list[str]) -> str:
    return f"apt-get install --no-install-recommends {' '.join(packages)}"


def ensure(commands: Iterable[str], purpose: str, log: Log) -> None:
    """Install what ``commands`` need from Debian, or raise naming the packages.

    A no-op (a PATH lookup each) when everything is there.
    """
    packages = missing(commands)
    if not packages:
        return
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        why = "not root" if os.geteuid() != 0 else "no apt-get"
        raise RuntimeError(
            f"{purpose} needs the Debian packages {' '.join(packages)} ({why}): "
            f"{install_hint(packages)}"
        )
    t0 = time.monotonic()
    log(f"installing Debian packages for {purpose}: {' '.join(packages)}")
    _apt(["apt-get", "update", "-q"], log)
    _apt(["apt-get", "install", "-y", "-q", "--no-install-recommends", *packages], log)
    log(f"installed {' '.join(packages)} in {time.monotonic() - t0:.0f}s")


def _apt(argv: list[str], log: Log) -> None:
    """Run apt, passing its 'Setting up' lines through and ticking every 20 s."""
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")

    def show(line: str) -> str | None:
        return f"  {line}" if line.startswith("Setting up ") else None

    procs.run_showing(argv, log, " ".join(argv[:2]), show, tick=20, env=env)


def main() -> int:
    width = max(len(n.command) for n in NEEDS)
    for n in NEEDS:
        mark = "ok" if _present(n.command) else "MISSING"
        print(f"{n.command:<{width}}  {n.package:<28} {mark:<8} {n.used_by}")
    for package, what in DOWNLOADED.items():
        print(f"{'(download)':<{width}}  {package:<28} {'':<8} {what}")
    gone = missing(n.command for n in NEEDS)
    if gone:
        print(f"missing here: {install_hint(gone)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
