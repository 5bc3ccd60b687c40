"""The real node's configuration: containerd's config, kubelet's and kube-proxy's
configs and argv, written before they start."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from . import build
from .node_layout import (
    CNI_DIR,
    HOST_IP,
    LABELS,
    NAME,
    PAUSE_IMAGE,
    POD_SUBNET,
    TAINT_KEY,
    NodeLayout,
    containerd_root,
    ctr,
)


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
