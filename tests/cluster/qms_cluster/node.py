"""One real node beside the kwok nodes: kubelet + kube-proxy + containerd + CNI.

kubelet and kube-proxy are built from the same Kubernetes wrapper module as the
control plane; containerd, runc and the CNI plugins come from Debian's packages
(installed here with apt when missing). Everything the node writes lives under
the cluster's state directory, except containerd's content store, which is kept
under ``~/.cache/qms/node/`` so that imported images survive ``down``.

Network rule: pods get addresses on a bridge with no uplink (``qms-br0``,
``POD_SUBNET``), routes only to the service range and to the host address of the
control plane (``HOST_IP``, a /32 on lo), no masquerading, and a
FORWARD rule that drops anything between the bridge and another interface. On
the host, the service range is routed onto the bridge and kwok's pod range is
unreachable, so no packet to a cluster address leaves through the uplink (see
_contain_ranges). The machine's own interfaces are never touched. One real node
per machine: a second cluster started while one holds the node comes up with kwok
nodes only.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import shutil
import subprocess
import time
from pathlib import Path

from . import build, oci, packages
from .node_config import (
    NodePorts as NodePorts,
)
from .node_config import (
    containerd_argv as containerd_argv,
)
from .node_config import (
    containerd_toml as containerd_toml,
)
from .node_config import (
    kubelet_argv as kubelet_argv,
)
from .node_config import (
    kubelet_config as kubelet_config,
)
from .node_config import (
    prepare as prepare,
)
from .node_config import (
    proxy_argv as proxy_argv,
)
from .node_config import (
    proxy_config as proxy_config,
)
from .node_config import (
    wait_containerd as wait_containerd,
)
from .node_layout import (
    BRIDGE as BRIDGE,
)
from .node_layout import (
    CACHE as CACHE,
)
from .node_layout import (
    CHAIN as CHAIN,
)
from .node_layout import (
    CLAIM as CLAIM,
)
from .node_layout import (
    CNI_DIR as CNI_DIR,
)
from .node_layout import (
    CNI_NETWORK as CNI_NETWORK,
)
from .node_layout import (
    COMMANDS as COMMANDS,
)
from .node_layout import (
    HOST_IP as HOST_IP,
)
from .node_layout import (
    KWOK_POD_CIDR as KWOK_POD_CIDR,
)
from .node_layout import (
    LABELS as LABELS,
)
from .node_layout import (
    NAME as NAME,
)
from .node_layout import (
    PAUSE_IMAGE as PAUSE_IMAGE,
)
from .node_layout import (
    POD_GATEWAY as POD_GATEWAY,
)
from .node_layout import (
    POD_SUBNET as POD_SUBNET,
)
from .node_layout import (
    SERVICE_CIDR as SERVICE_CIDR,
)
from .node_layout import (
    TAINT_KEY as TAINT_KEY,
)
from .node_layout import (
    Log as Log,
)
from .node_layout import (
    NodeLayout as NodeLayout,
)
from .node_layout import (
    containerd_root as containerd_root,
)
from .node_layout import (
    ctr as ctr,
)
from .node_layout import (
    run as run,
)
from .node_network import (
    _bridge_ports as _bridge_ports,
)
from .node_network import (
    _contain_ranges as _contain_ranges,
)
from .node_network import (
    _link_exists as _link_exists,
)
from .node_network import (
    _mounts_under as _mounts_under,
)
from .node_network import (
    _named_netns as _named_netns,
)
from .node_network import (
    _release_ranges as _release_ranges,
)
from .node_network import (
    _sandbox_netns as _sandbox_netns,
)
from .node_network import (
    idle as idle,
)
from .node_network import (
    network_down as network_down,
)
from .node_network import (
    network_up as network_up,
)

# ---- can it run here ----------------------------------------------------------


def ensure_packages(log: Log) -> None:
    """apt-get install what the node needs, when it is missing (root only)."""
    packages.ensure(COMMANDS, "the real node", log)


def available() -> tuple[bool, str]:
    """Whether a real node can start on this machine, and why not if not."""
    if os.geteuid() != 0:
        return False, "needs root (containerd, network namespaces, iptables)"
    if not Path("/sys/fs/cgroup").exists():
        return False, "no /sys/fs/cgroup"
    missing = packages.missing(COMMANDS)
    if missing and not shutil.which("apt-get"):
        return False, f"missing Debian packages {' '.join(missing)} and no apt-get"
    return True, "root, cgroups and Debian's packages"


def claim(state_dir: Path) -> bool:
    """Take this machine's real node for the cluster in state_dir, if free."""
    try:
        holder = Path(CLAIM.read_text().strip())
    except OSError:
        holder = None
    if holder is not None and holder != state_dir and (holder / "state.json").exists():
        try:
            state = json.loads((holder / "state.json").read_text())
        except (OSError, ValueError):
            state = {}
        if any(_pid_alive(int(c["pid"])) for c in state.get("components", [])):
            return False
    CLAIM.write_text(f"{state_dir}\n")
    return True


def release(state_dir: Path) -> None:
    with contextlib.suppress(OSError):
        if Path(CLAIM.read_text().strip()) == state_dir:
            CLAIM.unlink()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    return True


# ---- the sandbox image ----------------------------------------------------------


def pause_binary(log: Log) -> Path:
    """Kubernetes' own pause.c (from the module cache), compiled static, cached."""
    out = CACHE / f"pause-{build.K8S_VERSION}" / "pause"
    if out.exists():
        return out
    gomodcache = run("go", "env", "GOMODCACHE").strip()
    src = Path(gomodcache) / f"k8s.io/kubernetes@{build.K8S_VERSION}/build/pause/linux/pause.c"
    if not src.exists():
        run("go", "mod", "download", f"k8s.io/kubernetes@{build.K8S_VERSION}")
    out.parent.mkdir(parents=True, exist_ok=True)
    log(f"compiling the sandbox (pause) binary from {src}")
    run(
        "gcc", "-Os", "-Wall", "-static", f"-DVERSION={build.K8S_VERSION}", "-o", str(out), str(src)
    )
    return out


def import_pause(lay: NodeLayout, log: Log) -> None:
    if PAUSE_IMAGE in ctr(lay, "images", "ls", "-q"):
        return
    binary = pause_binary(log).read_bytes()
    archive = lay.root / "pause.tar"
    oci.tiny_image(archive, {"pause": binary}, tag=PAUSE_IMAGE)
    ctr(lay, "images", "import", str(archive))
    archive.unlink()


# ---- teardown -----------------------------------------------------------------------


def _shims(lay: NodeLayout) -> list[int]:
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmd = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if cmd and cmd[0].endswith(b"containerd-shim-runc-v2") and str(lay.sock).encode() in cmd:
            pids.append(int(proc.name))
    return pids


def cleanup(lay: NodeLayout, log: Log) -> None:
    """After kubelet and containerd stopped: whatever they left on the machine."""
    with contextlib.suppress(KeyError, OSError):
        subprocess.run(
            [str(build.binary("kube-proxy")), "--cleanup"], capture_output=True, timeout=60
        )
    shims = _shims(lay)
    for pid in shims:
        with contextlib.suppress(OSError):
            os.killpg(os.getpgid(pid), 9)
        with contextlib.suppress(OSError):
            os.kill(pid, 9)
    if shims:
        log(f"killed {len(shims)} containerd shim(s) left running")
        time.sleep(0.5)
    roots = [lay.root, containerd_root()]
    for target in sorted(_mounts_under(roots), key=len, reverse=True):
        subprocess.run(["umount", "-l", target], capture_output=True)
    network_down(lay)
    # Anything kube-proxy's own cleanup left (a chain per table).
    for table in ("filter", "nat", "mangle"):
        rules = run("iptables-save", "-t", table, check=False)
        chains = [ln[1:].split()[0] for ln in rules.splitlines() if ln.startswith(":KUBE-")]
        for rule in [ln for ln in rules.splitlines() if ln.startswith("-A ") and "KUBE-" in ln]:
            argv = shlex.split(rule)[1:]
            if not argv[0].startswith("KUBE-"):
                subprocess.run(["iptables", "-w", "-t", table, "-D", *argv], capture_output=True)
        for c in chains:
            subprocess.run(["iptables", "-w", "-t", table, "-F", c], capture_output=True)
        for c in chains:
            subprocess.run(["iptables", "-w", "-t", table, "-X", c], capture_output=True)
