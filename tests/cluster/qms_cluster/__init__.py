"""qms_cluster: a real local Kubernetes control plane for e2e tests and the demo.

etcd, kube-apiserver, kube-controller-manager, kube-scheduler and kwok (fake
GPU nodes) built from the Go module proxy at pinned versions, cached under
``~/.cache/qms/``, and run on 127.0.0.1. See ``qms-cluster --help``.
"""

from .build import ETCD_VERSION, K8S_VERSION, KWOK_VERSION, binaries_available, ensure_built
from .cluster import (
    Cluster,
    ClusterError,
    ClusterStatus,
    ComponentStatus,
    KubectlError,
    current,
    default_state_dir,
    down,
    node_names,
    status,
    up,
)

__all__ = [
    "ETCD_VERSION",
    "K8S_VERSION",
    "KWOK_VERSION",
    "Cluster",
    "ClusterError",
    "ClusterStatus",
    "ComponentStatus",
    "KubectlError",
    "binaries_available",
    "current",
    "default_state_dir",
    "down",
    "ensure_built",
    "node_names",
    "status",
    "up",
]
