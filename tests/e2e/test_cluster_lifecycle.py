"""Acceptance of the local control plane (issue 3): versions, build, up/status/down."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

import qms_cluster
from qms_cluster import Cluster, node
from qms_testkit.polling import wait_for


def test_server_reports_pinned_version(cluster: Cluster) -> None:
    v = json.loads(cluster.kubectl("version", "-o", "json").stdout)
    assert v["serverVersion"]["gitVersion"] == "v1.34.4"
    assert (v["serverVersion"]["major"], v["serverVersion"]["minor"]) == ("1", "34")
    assert v["clientVersion"]["gitVersion"] == "v1.34.4"
    assert qms_cluster.K8S_VERSION == "v1.34.4"


def test_build_is_a_noop_when_cached() -> None:
    ok, reason = qms_cluster.binaries_available()
    if not ok:
        pytest.skip(f"control-plane binaries cannot exist here: {reason}")
    argv = [sys.executable, "-m", "qms_cluster.cli", "build"]
    r = subprocess.run(argv, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    assert r.stderr.splitlines() == [
        "qms-cluster: binaries cached (k8s v1.34.4, etcd v3.6.16, kwok v0.7.0) "
        f"under {Path.home() / '.cache' / 'qms'}"
    ]
    cache = Path.home() / ".cache" / "qms"
    expected = [
        f"k8s v1.34.4: {cache / 'k8s-v1.34.4' / 'bin'}",
        f"etcd v3.6.16: {cache / 'etcd-v3.6.16' / 'bin'}",
        f"kwok v0.7.0: {cache / 'kwok-v0.7.0' / 'bin'}",
    ]  # cosign and crane: only when the signing tier runs (tests/signing)
    if node.available()[0]:  # the real node's kubelet and kube-proxy, where it can run
        expected.append(f"k8s-node v1.34.4: {cache / 'k8s-node-v1.34.4' / 'bin'}")
    expected += [  # the pinned third-party CRDs, from their Go modules (qms_cluster.crds)
        f"CRDs sigs.k8s.io/gateway-api v1.4.1: {cache / 'crds-gateway-api-v1.4.1'}",
        "CRDs sigs.k8s.io/gateway-api-inference-extension v1.3.0: "
        f"{cache / 'crds-gateway-api-inference-extension-v1.3.0'}",
    ]
    assert r.stdout.splitlines() == expected


def _pid_gone(pid: int, start_time: int) -> bool:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    fields = raw[raw.rindex(")") + 2 :].split()
    return fields[0] in ("Z", "X") or int(fields[19]) != start_time


def test_lifecycle_up_twice_status_crash_and_down(tmp_path: Path) -> None:
    """Through the CLI, as a user would: the components outlive `up`."""
    ok, reason = qms_cluster.binaries_available()
    if not ok:
        pytest.skip(f"control-plane binaries cannot exist here: {reason}")
    state_dir = tmp_path / "cluster"

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        argv = [sys.executable, "-m", "qms_cluster.cli", "--state-dir", str(state_dir), *args]
        return subprocess.run(
            argv, capture_output=True, text=True, timeout=300, env=dict(os.environ)
        )

    # The kwok control plane's lifecycle; the real node's is test_real_node.py's.
    first = cli("up", "--no-real-node")
    assert first.returncode == 0, first.stderr
    try:
        before = json.loads((state_dir / "state.json").read_text())["components"]
        assert [c["name"] for c in before] == [
            "etcd",
            "kube-apiserver",
            "kube-controller-manager",
            "kube-scheduler",
            "kwok",
        ]
        second = cli("up", "--no-real-node")
        assert second.returncode == 0, second.stderr
        assert "already running" in second.stderr
        assert json.loads((state_dir / "state.json").read_text())["components"] == before
        assert cli("kubeconfig").stdout.strip() == str(state_dir.resolve() / "kubeconfig")
        st = qms_cluster.status(state_dir)
        assert st.running and [c.running for c in st.components] == [True] * 5

        sched = next(c for c in before if c["name"] == "kube-scheduler")
        os.kill(sched["pid"], signal.SIGKILL)
        wait_for("the kill", lambda: _pid_gone(sched["pid"], sched["start_time"]), 30)
        st = qms_cluster.status(state_dir)
        assert not st.running and st.api_ready
        assert {c.name: c.running for c in st.components} == {
            "etcd": True,
            "kube-apiserver": True,
            "kube-controller-manager": True,
            "kube-scheduler": False,
            "kwok": True,
        }
        crashed = next(c for c in st.components if c.name == "kube-scheduler")
        assert (
            crashed.log_tail
            and crashed.log_tail == qms_cluster.status(state_dir).components[3].log_tail
        )
        out = cli("status")
        assert out.returncode == 1
        lines = out.stdout.splitlines()
        assert any(
            line.split()[:2] == ["kube-scheduler", "crashed"] for line in lines if line.strip()
        )
        assert any(
            line.split()[:2] == ["kube-apiserver", "running"] for line in lines if line.strip()
        )
        assert crashed.log_tail.splitlines()[-1].strip() in out.stdout
    finally:
        gone = cli("down")
    assert gone.returncode == 0, gone.stderr
    for c in before:
        pid, start = c["pid"], c["start_time"]
        wait_for(f"{c['name']} to be gone", lambda: _pid_gone(pid, start), 30)  # noqa: B023
    assert not state_dir.exists()
    assert cli("status").returncode == 1
    assert not qms_cluster.status(state_dir).exists
