"""The real node's network: the pod bridge, its routes and FORWARD rule, the cluster
address ranges kept on this machine, and taking it all down (see node.py's rule)."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

from .node_layout import (
    BRIDGE,
    CHAIN,
    CNI_NETWORK,
    HOST_IP,
    KWOK_POD_CIDR,
    POD_GATEWAY,
    POD_SUBNET,
    SERVICE_CIDR,
    NodeLayout,
    ctr,
    run,
)


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
