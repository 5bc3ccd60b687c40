"""The real node's names, addresses and paths (NodeLayout), and the commands it runs
(run, ctr): what the other node modules share."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from . import build, packages

NAME = "qms-node"
HOST_IP = "10.241.0.1"  # the control plane and the node: a /32 on lo
BRIDGE = "qms-br0"
POD_SUBNET = "10.245.0.0/24"
POD_GATEWAY = "10.245.0.1"
SERVICE_CIDR = "10.96.0.0/16"
KWOK_POD_CIDR = "10.244.0.0/16"  # kwok's pod addresses: no process behind any of them
CNI_NETWORK = "qms-node"
CHAIN = "QMS-NODE-FORWARD"
TAINT_KEY = "qms.io/real-node"
LABELS = {
    "qms.io/node": "real",
    "type": "real",
    "topology.kubernetes.io/zone": "zone-real",
}
PAUSE_IMAGE = "localhost/qms-pause:3.10"
CNI_DIR = packages.CNI_DIR
# What the node runs, each declared with its Debian package in packages.NEEDS.
COMMANDS = (
    "containerd",
    "ctr",
    "runc",
    "iptables",
    "iptables-save",
    "iptables-restore",
    "ip",
    "gcc",
    *(str(CNI_DIR / p) for p in ("bridge", "host-local", "loopback", "portmap")),
)
CLAIM = Path("/run/qms-real-node")  # which cluster holds this machine's real node
CACHE = build.CACHE_ROOT / "node"
Log = Callable[[str], None]


@dataclass(frozen=True)
class NodeLayout:
    """Paths of the real node under a cluster's state directory."""

    root: Path  # <state dir>/node

    @property
    def sock(self) -> Path:
        return self.root / "containerd.sock"

    @property
    def containerd_config(self) -> Path:
        return self.root / "containerd.toml"

    @property
    def containerd_state(self) -> Path:
        return self.root / "containerd-state"

    @property
    def cni_conf(self) -> Path:
        return self.root / "cni"

    @property
    def ipam(self) -> Path:
        return self.root / "ipam"

    @property
    def kubelet_dir(self) -> Path:
        return self.root / "kubelet"

    @property
    def kubelet_config(self) -> Path:
        return self.root / "kubelet.yaml"

    @property
    def proxy_config(self) -> Path:
        return self.root / "kube-proxy.yaml"

    @property
    def volumes(self) -> Path:
        """hostPath volumes of the tests and the demo (weights)."""
        return self.root / "volumes"


def containerd_root() -> Path:
    return CACHE / "containerd"


# ---- commands -----------------------------------------------------------------


def run(*argv: str, check: bool = True, input: str | None = None) -> str:
    r = subprocess.run(argv, input=input, capture_output=True, text=True)
    if check and r.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed (rc={r.returncode}): {r.stderr.strip()}")
    return r.stdout


def ctr(lay: NodeLayout, *args: str, check: bool = True) -> str:
    return run("ctr", f"--address={lay.sock}", "--namespace=k8s.io", *args, check=check)
