"""No packet to the local cluster's address ranges leaves the machine (issue 25, point 4).

Run in a network namespace of its own that has what the host has: an uplink with a
default route. The real node's routing functions run there (as root: they change
routes), and ``ip route get`` says where a packet to each range would go.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator

import pytest

from qms_cluster import node

SERVICE_IP = "10.96.0.10"  # the service range
KWOK_POD_IP = "10.244.1.1"  # kwok's pod range
NODE_POD_IP = "10.245.0.5"  # the real node's pod subnet, before any pod made the bridge


def _ns_run(ns: str, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["ip", "netns", "exec", ns, *argv], capture_output=True, text=True, check=check
    )


@pytest.fixture
def host_like_netns() -> Iterator[str]:
    if os.geteuid() != 0:
        if os.environ.get("CI"):
            pytest.fail("CI machines run as root (routes, network namespaces)")
        pytest.skip("needs root: network namespaces and routes")
    ns = f"qms-routes-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        for argv in (
            ("ip", "link", "set", "lo", "up"),
            ("ip", "link", "add", "uplink0", "type", "veth", "peer", "name", "uplink1"),
            ("ip", "addr", "add", "192.0.2.2/24", "dev", "uplink0"),
            ("ip", "link", "set", "uplink0", "up"),
            ("ip", "link", "set", "uplink1", "up"),
            ("ip", "route", "add", "default", "via", "192.0.2.1", "dev", "uplink0"),
        ):
            _ns_run(ns, *argv)
        yield ns
    finally:
        subprocess.run(["ip", "netns", "delete", ns], check=False)


def _route(ns: str, address: str) -> str:
    r = _ns_run(ns, "ip", "route", "get", address, check=False)
    return (r.stdout + r.stderr).splitlines()[0].strip()


def _node_call(ns: str, function: str) -> None:
    code = f"from qms_cluster import node; node.{function}()"
    _ns_run(ns, sys.executable, "-c", code)


def _routes(ns: str) -> list[str]:
    return _ns_run(ns, "ip", "route", "show", "table", "all").stdout.splitlines()


def test_the_cluster_ranges_end_on_this_machine_and_down_restores_the_routes(
    host_like_netns: str,
) -> None:
    ns = host_like_netns
    before = _routes(ns)
    # What the host does without the cluster's routes: every range goes out the uplink.
    for address in (SERVICE_IP, KWOK_POD_IP, NODE_POD_IP):
        assert _route(ns, address).startswith(f"{address} via 192.0.2.1 dev uplink0")

    _node_call(ns, "_contain_ranges")
    # The service range lands on the pod bridge (kube-proxy's DNAT still applies;
    # an address it has no rule for finds no neighbour there), the node's pod subnet
    # is the bridge's own, and kwok's range is unreachable.
    assert _route(ns, SERVICE_IP) == f"{SERVICE_IP} dev {node.BRIDGE} src {node.POD_GATEWAY} uid 0"
    assert _route(ns, NODE_POD_IP) == (
        f"{NODE_POD_IP} dev {node.BRIDGE} src {node.POD_GATEWAY} uid 0"
    )
    assert _route(ns, KWOK_POD_IP) == "RTNETLINK answers: No route to host"
    # Twice is the same as once (up after a failed start).
    _node_call(ns, "_contain_ranges")
    main = _ns_run(ns, "ip", "-4", "route", "show").stdout.splitlines()
    assert sorted(line.strip() for line in main) == [
        f"{node.POD_SUBNET} dev {node.BRIDGE} proto kernel scope link src {node.POD_GATEWAY}",
        f"{node.SERVICE_CIDR} dev {node.BRIDGE} scope link src {node.POD_GATEWAY}",
        "192.0.2.0/24 dev uplink0 proto kernel scope link src 192.0.2.2",
        "default via 192.0.2.1 dev uplink0",
        f"unreachable {node.KWOK_POD_CIDR}",
    ]

    _node_call(ns, "_release_ranges")
    assert _routes(ns) == before
