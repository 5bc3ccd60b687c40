"""The Prometheus Operator's ServiceMonitor CRD (a stand-in with an open schema), for the
operator tests of a cluster without it, and with it installed mid-run."""

from __future__ import annotations

from qms_cluster import Cluster
from qms_testkit.polling import wait_for

NAME = "servicemonitors.monitoring.coreos.com"
CRD = f"""
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {{name: {NAME}}}
spec:
  group: monitoring.coreos.com
  scope: Namespaced
  names: {{kind: ServiceMonitor, plural: servicemonitors, singular: servicemonitor,
          listKind: ServiceMonitorList}}
  versions:
    - name: v1
      served: true
      storage: true
      schema:
        openAPIV3Schema: {{type: object, x-kubernetes-preserve-unknown-fields: true}}
"""


def served(cluster: Cluster) -> bool:
    """Whether discovery lists monitoring.coreos.com/v1 servicemonitors."""
    res = cluster.kubectl("get", "--raw", "/apis/monitoring.coreos.com/v1", check=False)
    return res.returncode == 0 and '"servicemonitors"' in res.stdout


def remove(cluster: Cluster) -> None:
    """Delete the CRD (an earlier test may have installed it) and wait until not served."""
    cluster.kubectl("delete", "crd", NAME, "--ignore-not-found", "--wait=true")
    wait_for("ServiceMonitor no longer served", lambda: not served(cluster), 60)


def install(cluster: Cluster) -> None:
    cluster.kubectl("apply", "--server-side", "-f", "-", input=CRD)
    cluster.kubectl("wait", "--for=condition=Established", f"crd/{NAME}", "--timeout=60s")
    wait_for("ServiceMonitor served", lambda: served(cluster), 60)
