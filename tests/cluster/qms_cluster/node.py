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
import re
import shlex
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from . import build, oci, packages

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


# ---- commands -----------------------------------------------------------------


def run(*argv: str, check: bool = True, input: str | None = None) -> str:
    r = subprocess.run(argv, input=input, capture_output=True, text=True)
    if check and r.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed (rc={r.returncode}): {r.stderr.strip()}")
    return r.stdout


def ctr(lay: NodeLayout, *args: str, check: bool = True) -> str:
    return run("ctr", f"--address={lay.sock}", "--namespace=k8s.io", *args, check=check)


# ---- network ------------------------------------------------------------------


def _link_exists(name: str) -> bool:
    return subprocess.run(["ip", "link", "show", name], capture_output=True).returncode == 0


def network_up(lay: NodeLayout) -> None:
    """The host-only address, the CNI config and the FORWARD guard."""
    # A host address that is not loopback (the kubelet refuses 127.0.0.1 as node
    # IP) yet exists only on this machine: a /32 on lo (this kernel has no dummy
    # links). Pods reach it through their gateway; nothing routes it outside.
    run("ip", "addr", "replace", f"{HOST_IP}/32", "dev", "lo")
    # The CNI bridge plugin turns on ip_forward for its gateway; remember the
    # machine's value so down() can put it back.
    lay.root.mkdir(parents=True, exist_ok=True)
    saved = lay.root / "ip_forward.saved"
    if not saved.exists():
        saved.write_text(Path("/proc/sys/net/ipv4/ip_forward").read_text())
    known = lay.root / "netns.before"
    if not known.exists():
        known.write_text("".join(f"{name}\n" for name in _named_netns()))
    _contain_ranges()
    if run("iptables", "-w", "-n", "-L", CHAIN, check=False) == "":
        run("iptables", "-w", "-N", CHAIN)
    run("iptables", "-w", "-F", CHAIN)
    run("iptables", "-w", "-A", CHAIN, "-i", BRIDGE, "!", "-o", BRIDGE, "-j", "DROP")
    run("iptables", "-w", "-A", CHAIN, "-o", BRIDGE, "!", "-i", BRIDGE, "-j", "DROP")
    if (
        subprocess.run(
            ["iptables", "-w", "-C", "FORWARD", "-j", CHAIN], capture_output=True
        ).returncode
        != 0
    ):
        run("iptables", "-w", "-I", "FORWARD", "1", "-j", CHAIN)
    lay.cni_conf.mkdir(parents=True, exist_ok=True)
    conf = {
        "cniVersion": "1.0.0",
        "name": CNI_NETWORK,
        "plugins": [
            {
                "type": "bridge",
                "bridge": BRIDGE,
                "isGateway": True,
                "isDefaultGateway": False,
                "ipMasq": False,
                "hairpinMode": True,
                "ipam": {
                    "type": "host-local",
                    "dataDir": str(lay.ipam),
                    "ranges": [[{"subnet": POD_SUBNET, "gateway": POD_GATEWAY}]],
                    # No default route: pods reach services and the API server only.
                    "routes": [{"dst": SERVICE_CIDR}, {"dst": f"{HOST_IP}/32"}],
                },
            },
            {"type": "portmap", "capabilities": {"portMappings": True}, "snat": False},
        ],
    }
    (lay.cni_conf / "10-qms-node.conflist").write_text(json.dumps(conf, indent=2) + "\n")


def _contain_ranges() -> None:
    """Route every cluster range so that it ends on this machine, never on the uplink.

    The host's default route goes out through its uplink, so without these a packet
    to a ClusterIP that kube-proxy has no rule for (stopped, restarting, a Service
    with no endpoints yet), to a kwok pod's address, or to the pod subnet before the
    first pod made the bridge would leave the machine. The bridge is made here (the
    CNI bridge plugin adopts it: same name, same gateway address); the service range
    is routed onto it, where kube-proxy's DNAT in nat OUTPUT still applies and an
    address without a rule finds no neighbour; kwok's range is unreachable.
    _release_ranges (in network_down) removes exactly these.
    """
    if not _link_exists(BRIDGE):
        run("ip", "link", "add", BRIDGE, "type", "bridge")
    run("ip", "addr", "replace", f"{POD_GATEWAY}/{POD_SUBNET.split('/')[1]}", "dev", BRIDGE)
    run("ip", "link", "set", BRIDGE, "up")
    run("ip", "route", "replace", SERVICE_CIDR, "dev", BRIDGE, "src", POD_GATEWAY)
    run("ip", "route", "replace", "unreachable", KWOK_POD_CIDR)


def _release_ranges() -> None:
    """Undo _contain_ranges: the bridge (its address and both of its routes go with it)."""
    if _link_exists(BRIDGE):
        run("ip", "link", "delete", BRIDGE, check=False)
    run("ip", "route", "del", "unreachable", KWOK_POD_CIDR, check=False)


def _mounts_under(paths: list[Path]) -> list[str]:
    found = []
    for line in Path("/proc/mounts").read_text().splitlines():
        target = line.split()[1].replace("\\040", " ")
        if any(target == str(p) or target.startswith(f"{p}/") for p in paths):
            found.append(target)
    return found


def _bridge_ports() -> tuple[list[str], list[str]]:
    """The veths on the pod bridge and the named network namespaces of their peers."""
    if not _link_exists(BRIDGE):
        return [], []
    veths, names, ids = [], set(), set()
    for line in run("ip", "-o", "link", "show", "master", BRIDGE, check=False).splitlines():
        veths.append(line.split(":")[1].strip().split("@")[0])
        # iproute2 names the peer's namespace when it has a name, else gives its id.
        if m := re.search(r"link-netns (\S+)", line):
            names.add(m.group(1))
        if m := re.search(r"link-netnsid (\d+)", line):
            ids.add(m.group(1))
    for line in run("ip", "netns", "list", check=False).splitlines():
        parts = line.split()  # "cni-<uuid> (id: N)"
        if len(parts) >= 3 and parts[1] == "(id:" and parts[2].rstrip(")") in ids:
            names.add(parts[0])
    return veths, sorted(names)


def _named_netns() -> list[str]:
    """The names under /run/netns ("ip netns list" prints "name (id: N)")."""
    return [line.split()[0] for line in run("ip", "netns", "list", check=False).splitlines()]


def _sandbox_netns(lay: NodeLayout) -> list[str]:
    """The cni-* namespaces containerd made for this node's sandboxes.

    containerd removes a sandbox's namespace after CNI DEL has taken its veth off the
    bridge, so a node stopped in between leaves the namespace with no port to find it by.
    """
    known = lay.root / "netns.before"
    before = set(known.read_text().split()) if known.exists() else set()
    return [n for n in _named_netns() if n.startswith("cni-") and n not in before]


def idle(lay: NodeLayout) -> bool:
    """No container runs and no pod network is left (CNI DEL done, each namespace gone)."""
    return (
        not ctr(lay, "tasks", "ls", "-q", check=False).split()
        and not _bridge_ports()[0]
        and not _sandbox_netns(lay)
    )


def network_down(lay: NodeLayout) -> None:
    veths, namespaces = _bridge_ports()
    for veth in veths:
        run("ip", "link", "delete", veth, check=False)
    for ns in sorted({*namespaces, *_sandbox_netns(lay)}):
        run("ip", "netns", "delete", ns, check=False)
    (lay.root / "netns.before").unlink(missing_ok=True)
    _release_ranges()
    run("ip", "addr", "del", f"{HOST_IP}/32", "dev", "lo", check=False)
    while (
        subprocess.run(
            ["iptables", "-w", "-C", "FORWARD", "-j", CHAIN], capture_output=True
        ).returncode
        == 0
    ):
        run("iptables", "-w", "-D", "FORWARD", "-j", CHAIN, check=False)
    run("iptables", "-w", "-F", CHAIN, check=False)
    run("iptables", "-w", "-X", CHAIN, check=False)
    saved = lay.root / "ip_forward.saved"
    if saved.exists():
        Path("/proc/sys/net/ipv4/ip_forward").write_text(saved.read_text())


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


# ---- configuration ------------------------------------------------------------------


def containerd_toml(lay: NodeLayout) -> str:
    cri = 'plugins."io.containerd.grpc.v1.cri"'
    return f"""\
version = 2
root = "{containerd_root()}"
state = "{lay.containerd_state}"
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs",
  "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs",
  "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]

[grpc]
  address = "{lay.sock}"
[ttrpc]
  address = "{lay.sock}.ttrpc"
[debug]
  address = ""
[metrics]
  address = ""

# Collect an image's blobs and snapshots as soon as a new build replaces it under
# the same name (the default waits for 100 mutations): a runtime image is 6 GB.
[plugins."io.containerd.gc.v1.scheduler"]
  mutation_threshold = 1
  deletion_threshold = 1

[plugins."io.containerd.internal.v1.opt"]
  path = "{containerd_root()}/opt"

[{cri}]
  sandbox_image = "{PAUSE_IMAGE}"
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  enable_selinux = false
  # The VM's root lacks CAP_SYS_RESOURCE: lowering oom_score_adj (the sandbox
  # asks for -998) is refused, so containerd must not try.
  restrict_oom_score_adj = true
  disable_apparmor = true
  [{cri}.containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [{cri}.containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [{cri}.containerd.runtimes.runc.options]
        SystemdCgroup = false
  [{cri}.cni]
    bin_dir = "{CNI_DIR}"
    conf_dir = "{lay.cni_conf}"
    max_conf_num = 1
"""


@dataclass(frozen=True)
class NodePorts:
    kubelet: int
    kubelet_healthz: int
    proxy_healthz: int
    proxy_metrics: int


def kubelet_config(lay: NodeLayout, ports: NodePorts) -> dict[str, object]:
    return {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "address": HOST_IP,
        "port": ports.kubelet,
        "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1",
        "healthzPort": ports.kubelet_healthz,
        # The API server reaches the kubelet (logs, exec, port-forward) without a
        # client certificate; the kubelet listens on the host-only address.
        "authentication": {"anonymous": {"enabled": True}, "webhook": {"enabled": False}},
        "authorization": {"mode": "AlwaysAllow"},
        "containerRuntimeEndpoint": f"unix://{lay.sock}",
        "imageServiceEndpoint": f"unix://{lay.sock}",
        # cgroup v1 on this VM, no systemd: cgroupfs, no QoS hierarchy.
        "cgroupDriver": "cgroupfs",
        "failCgroupV1": False,
        "cgroupsPerQOS": False,
        # Without pod cgroups, a restarted kubelet's in-place resize check of the pods
        # it finds running dereferences the missing pod cgroup and panics
        # (kuberuntime_manager.go:839 doPodResizeAction, seen in the fault tier).
        "featureGates": {"InPlacePodVerticalScaling": False},
        "enforceNodeAllocatable": [],
        "failSwapOn": False,
        "oomScoreAdj": 0,
        "protectKernelDefaults": False,
        "makeIPTablesUtilChains": False,
        "resolvConf": "",  # no DNS for pods: nothing to ask outside this machine
        "clusterDomain": "cluster.local",
        "podLogsDir": str(lay.root / "pod-logs"),
        "maxPods": 30,
        "serializeImagePulls": False,
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        "evictionHard": {
            "memory.available": "200Mi",
            "nodefs.available": "1%",
            "imagefs.available": "1%",
        },
        "nodeStatusUpdateFrequency": "4s",
        "syncFrequency": "10s",
        "fileCheckFrequency": "0s",
        "staticPodPath": "",
    }


def proxy_config(lay: NodeLayout, ports: NodePorts, kubeconfig: Path) -> dict[str, object]:
    return {
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        "clientConnection": {"kubeconfig": str(kubeconfig)},
        "hostnameOverride": NAME,
        "bindAddress": HOST_IP,
        "healthzBindAddress": f"127.0.0.1:{ports.proxy_healthz}",
        "metricsBindAddress": f"127.0.0.1:{ports.proxy_metrics}",
        "mode": "iptables",
        "clusterCIDR": POD_SUBNET,
        "nodePortAddresses": [f"{HOST_IP}/32"],
        "iptables": {
            "localhostNodePorts": False,
            "masqueradeAll": False,
            "syncPeriod": "30s",
            "minSyncPeriod": "0s",
        },
        # Leave the machine's conntrack settings alone.
        "conntrack": {
            "maxPerCore": 0,
            "min": 0,
            "tcpEstablishedTimeout": "0s",
            "tcpCloseWaitTimeout": "0s",
        },
    }


def kubelet_argv(lay: NodeLayout, kubeconfig: Path) -> list[str]:
    labels = ",".join(f"{k}={v}" for k, v in LABELS.items())
    return [
        str(build.binary("kubelet")),
        f"--config={lay.kubelet_config}",
        f"--kubeconfig={kubeconfig}",
        f"--root-dir={lay.kubelet_dir}",
        f"--cert-dir={lay.kubelet_dir}/pki",
        f"--hostname-override={NAME}",
        f"--node-ip={HOST_IP}",
        f"--node-labels={labels}",
        f"--register-with-taints={TAINT_KEY}=true:NoSchedule",
        "--v=1",
    ]


def proxy_argv(lay: NodeLayout) -> list[str]:
    return [str(build.binary("kube-proxy")), f"--config={lay.proxy_config}", "--v=1"]


def containerd_argv(lay: NodeLayout) -> list[str]:
    return ["containerd", f"--config={lay.containerd_config}", "--log-level=warn"]


def prepare(lay: NodeLayout, ports: NodePorts, kubeconfig: Path) -> None:
    """Write every config file of the node (before any of its processes starts)."""
    for d in (lay.root, lay.containerd_state, lay.kubelet_dir, lay.volumes, containerd_root()):
        d.mkdir(parents=True, exist_ok=True)
    lay.volumes.chmod(0o755)
    lay.containerd_config.write_text(containerd_toml(lay))
    lay.kubelet_config.write_text(json.dumps(kubelet_config(lay, ports), indent=2) + "\n")
    lay.proxy_config.write_text(json.dumps(proxy_config(lay, ports, kubeconfig), indent=2) + "\n")


def wait_containerd(lay: NodeLayout, alive: Callable[[], bool], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not alive():
            raise RuntimeError("containerd exited at start")
        if lay.sock.exists() and ctr(lay, "version", check=False):
            return
        time.sleep(0.1)
    raise RuntimeError(f"containerd did not answer on {lay.sock} within {timeout:.0f}s")


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
