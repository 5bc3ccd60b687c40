"""Command lines of the control-plane components and the files they read."""

from __future__ import annotations

import base64
from dataclasses import dataclass
from pathlib import Path

from . import build
from .node import KWOK_POD_CIDR, SERVICE_CIDR, NodeLayout

POD_CIDR = KWOK_POD_CIDR.replace(".0/", ".1/")  # kwok hands out pod IPs from here
NODE_IP = "10.240.0.1"
ADMIN = "admin"


@dataclass(frozen=True)
class Layout:
    """Every path under the state directory."""

    root: Path

    @property
    def state(self) -> Path:
        return self.root / "state.json"

    @property
    def kubeconfig(self) -> Path:
        return self.root / "kubeconfig"

    @property
    def tokens(self) -> Path:
        return self.root / "tokens.csv"

    @property
    def sa_key(self) -> Path:
        return self.root / "sa.key"

    @property
    def cert_dir(self) -> Path:
        return self.root / "pki"

    @property
    def ca(self) -> Path:
        # kube-apiserver writes its self-signed serving cert and CA here.
        return self.cert_dir / "apiserver.crt"

    @property
    def etcd_data(self) -> Path:
        return self.root / "etcd"

    @property
    def kwok_config(self) -> Path:
        return self.root / "kwok.yaml"

    def log(self, name: str) -> Path:
        return self.root / "logs" / f"{name}.log"

    @property
    def node(self) -> NodeLayout:
        return NodeLayout(self.root / "node")


@dataclass(frozen=True)
class Ports:
    etcd_client: int
    etcd_peer: int
    apiserver: int
    controller_manager: int
    scheduler: int
    kwok: int


def etcd(lay: Layout, p: Ports) -> list[str]:
    client, peer = f"http://127.0.0.1:{p.etcd_client}", f"http://127.0.0.1:{p.etcd_peer}"
    return [
        str(build.binary("etcd")),
        "--name=qms",
        f"--data-dir={lay.etcd_data}",
        f"--listen-client-urls={client}",
        f"--advertise-client-urls={client}",
        f"--listen-peer-urls={peer}",
        f"--initial-advertise-peer-urls={peer}",
        f"--initial-cluster=qms={peer}",
        "--unsafe-no-fsync",  # test data: speed over durability
        "--log-level=warn",
    ]


APISERVER_FEATURE_GATES = ("ImageVolume=true",)


def kube_apiserver(lay: Layout, p: Ports, host: str = "127.0.0.1") -> list[str]:
    # On 127.0.0.1 (kwok nodes only) nothing in a pod needs the API server, and
    # the `kubernetes` Service cannot point at a loopback address: no endpoint
    # reconciler. With the real node it listens on the host-only address that
    # pods reach through the `kubernetes` Service (kube-proxy).
    reconciler = "none" if host == "127.0.0.1" else "lease"
    return [
        str(build.binary("kube-apiserver")),
        f"--etcd-servers=http://127.0.0.1:{p.etcd_client}",
        f"--bind-address={host}",
        f"--advertise-address={host}",
        f"--secure-port={p.apiserver}",
        f"--cert-dir={lay.cert_dir}",
        f"--token-auth-file={lay.tokens}",
        "--authorization-mode=RBAC",
        "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
        f"--service-account-key-file={lay.sa_key}",
        f"--service-account-signing-key-file={lay.sa_key}",
        f"--service-cluster-ip-range={SERVICE_CIDR}",
        "--allow-privileged=true",
        f"--endpoint-reconciler-type={reconciler}",
        "--kubelet-preferred-address-types=InternalIP",
        "--profiling=false",
        # Image volumes (KEP-4639, beta and off by default in 1.34): without the gate
        # the API server drops volumes[].image from pod templates, so a server whose
        # weights come from an OCI image (model.source.image) could not be tested.
        f"--feature-gates={','.join(APISERVER_FEATURE_GATES)}",
    ]


def _component_auth(lay: Layout) -> list[str]:
    # No --authentication/authorization-kubeconfig: this apiserver publishes no
    # extension-apiserver-authentication ConfigMap, and /healthz, /readyz and
    # /livez are always allowed, which is all anyone asks of these ports.
    return [
        f"--kubeconfig={lay.kubeconfig}",
        "--leader-elect=false",
        "--bind-address=127.0.0.1",
        "--profiling=false",
    ]


def kube_controller_manager(lay: Layout, p: Ports) -> list[str]:
    return [
        str(build.binary("kube-controller-manager")),
        *_component_auth(lay),
        f"--secure-port={p.controller_manager}",
        f"--service-account-private-key-file={lay.sa_key}",
        f"--root-ca-file={lay.ca}",
        f"--service-cluster-ip-range={SERVICE_CIDR}",
        "--node-monitor-period=1s",  # lift the new nodes' not-ready taint quickly
        # The default client limit (20 QPS) makes hundreds of Deployments take minutes
        # to get pods, which would hide the operator's own speed in its benchmark.
        "--kube-api-qps=100",
        "--kube-api-burst=200",
    ]


def kube_scheduler(lay: Layout, p: Ports) -> list[str]:
    return [
        str(build.binary("kube-scheduler")),
        *_component_auth(lay),
        f"--secure-port={p.scheduler}",
    ]


def kwok(lay: Layout, p: Ports) -> list[str]:
    # No Stage documents in the config: kwok v0.7 then uses its built-in
    # node-initialize, node-heartbeat, pod-ready, pod-complete and pod-delete.
    return [
        str(build.binary("kwok")),
        f"--kubeconfig={lay.kubeconfig}",
        f"--config={lay.kwok_config}",
        "--manage-all-nodes=false",
        "--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake",
        f"--cidr={POD_CIDR}",
        f"--node-ip={NODE_IP}",
        "--node-lease-duration-seconds=40",
        f"--server-address=127.0.0.1:{p.kwok}",
    ]


KWOK_CONFIG = """\
apiVersion: config.kwok.x-k8s.io/v1alpha1
kind: KwokConfiguration
options: {}
"""


def kubeconfig_text(server: str, ca_pem: bytes, token: str) -> str:
    ca = base64.b64encode(ca_pem).decode()
    return f"""\
apiVersion: v1
kind: Config
clusters:
- name: qms
  cluster:
    server: {server}
    certificate-authority-data: {ca}
users:
- name: {ADMIN}
  user:
    token: {token}
contexts:
- name: qms
  context:
    cluster: qms
    user: {ADMIN}
current-context: qms
preferences: {{}}
"""
