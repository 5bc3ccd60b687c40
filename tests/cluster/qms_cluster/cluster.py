"""Bring the local control plane up, report on it, and take it down."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from . import build, components, crds, node, pki, procs
from .components import Layout, Ports

MARKER = ".qms-cluster"
ORDER = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok")
Log = Callable[[str], None]


def _stderr(msg: str) -> None:
    print(f"qms-cluster: {msg}", file=sys.stderr, flush=True)


def default_state_dir() -> Path:
    env = os.environ.get("QMS_CLUSTER_DIR")
    return Path(env).expanduser() if env else build.CACHE_ROOT / "cluster"


def _layout(state_dir: Path | None) -> Layout:
    return Layout((state_dir or default_state_dir()).expanduser().resolve())


class ClusterError(RuntimeError):
    pass


class KubectlError(subprocess.CalledProcessError):
    def __str__(self) -> str:
        return f"{super().__str__()}\nstdout:\n{self.stdout}\nstderr:\n{self.stderr}"


@dataclass(frozen=True)
class Cluster:
    """A running local control plane."""

    kubeconfig: Path
    bin_dir: Path  # the Kubernetes binaries: kubectl, kube-apiserver, ...
    server: str
    token: str
    state_dir: Path
    real_node: bool = False  # a kubelet-run node (node.NAME) beside the kwok nodes

    def kubectl(
        self, *args: str, check: bool = True, input: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        argv = [str(self.bin_dir / "kubectl"), f"--kubeconfig={self.kubeconfig}", *args]
        r = subprocess.run(argv, input=input, capture_output=True, text=True, check=False)
        if check and r.returncode != 0:
            raise KubectlError(r.returncode, argv, r.stdout, r.stderr)
        return r


@dataclass(frozen=True)
class ComponentStatus:
    name: str
    pid: int
    running: bool
    log: Path
    log_tail: str  # last lines of the log when not running, else ""


@dataclass(frozen=True)
class ClusterStatus:
    state_dir: Path
    components: list[ComponentStatus] = field(default_factory=list)
    server: str | None = None
    api_ready: bool = False

    @property
    def exists(self) -> bool:
        return bool(self.components)

    @property
    def running(self) -> bool:
        return self.exists and self.api_ready and all(c.running for c in self.components)


def _load(lay: Layout) -> dict[str, Any] | None:
    try:
        data: dict[str, Any] = json.loads(lay.state.read_text())
    except (OSError, ValueError):
        return None
    return data


def _save(lay: Layout, state: dict[str, Any]) -> None:
    tmp = lay.state.with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=2) + "\n")
    tmp.replace(lay.state)


def _procs(state: dict[str, Any]) -> list[procs.Proc]:
    return [procs.Proc.from_json(c) for c in state.get("components", [])]


def _ssl(ca: Path | None) -> ssl.SSLContext:
    if ca is None:
        return ssl._create_unverified_context()
    return ssl.create_default_context(cafile=str(ca))


def _get(url: str, token: str | None, ctx: ssl.SSLContext | None, timeout: float = 5) -> Any:
    req = urllib.request.Request(url)
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(req, timeout=timeout, context=ctx) as resp:
        body = resp.read().decode()
    with contextlib.suppress(ValueError):
        return json.loads(body)
    return body


def _ok(url: str, token: str | None, ctx: ssl.SSLContext | None) -> bool:
    try:
        _get(url, token, ctx, timeout=2)
    except (OSError, urllib.error.URLError, ssl.SSLError):
        return False
    return True


def _api_ready(state: dict[str, Any], lay: Layout) -> bool:
    ca = lay.ca if lay.ca.exists() else None
    return _ok(f"{state['server']}/readyz", state["token"], _ssl(ca))


def node_layout(c: Cluster) -> node.NodeLayout:
    return Layout(c.state_dir).node


def kubeconfig_path(state_dir: Path | None = None) -> Path:
    return _layout(state_dir).kubeconfig


def _cluster(lay: Layout, state: dict[str, Any]) -> Cluster:
    return Cluster(
        lay.kubeconfig,
        build.K8S.bin_dir,
        state["server"],
        state["token"],
        lay.root,
        bool(state.get("real_node")),
    )


def current(state_dir: Path | None = None) -> Cluster | None:
    """The cluster running in state_dir, or None when none is fully up."""
    lay = _layout(state_dir)
    state = _load(lay)
    if not state or not state.get("ready"):
        return None
    if not all(procs.alive(p) for p in _procs(state)) or not _api_ready(state, lay):
        return None
    return _cluster(lay, state)


def status(state_dir: Path | None = None, tail_lines: int = 20) -> ClusterStatus:
    lay = _layout(state_dir)
    state = _load(lay)
    if not state:
        return ClusterStatus(lay.root)
    comps = []
    for p in _procs(state):
        up = procs.alive(p)
        comps.append(
            ComponentStatus(p.name, p.pid, up, p.log, "" if up else procs.tail(p.log, tail_lines))
        )
    ready = bool(state.get("server")) and _api_ready(state, lay)
    return ClusterStatus(lay.root, comps, state.get("server"), ready)


def down(state_dir: Path | None = None, log: Log = _stderr) -> None:
    """Stop every process of the cluster in state_dir and remove its state."""
    lay = _layout(state_dir)
    state = _load(lay)
    if state:
        ps = _procs(state)
        if state.get("real_node"):
            _drain_real_node(lay, state, log)
        live = [p.name for p in ps if procs.alive(p)]
        procs.stop(list(reversed(ps)))
        log(f"stopped {', '.join(live) or 'nothing (no process was running)'}")
        if state.get("real_node"):
            node.cleanup(lay.node, log)
            node.release(lay.root)
    if (lay.root / MARKER).exists():
        shutil.rmtree(lay.root)
        log(f"removed {lay.root}")
    elif lay.root.exists() and not state:
        log(f"no cluster in {lay.root}")


def _drain_real_node(lay: Layout, state: dict[str, Any], log: Log) -> None:
    """Let the kubelet stop the real node's pods (network and volumes torn down)."""
    running = {p.name for p in _procs(state) if procs.alive(p)}
    if not {"kube-apiserver", "kubelet", "containerd"} <= running:
        return
    c = _cluster(lay, state)
    c.kubectl("cordon", node.NAME, check=False)
    c.kubectl(
        "delete",
        "pods",
        "--all-namespaces",
        f"--field-selector=spec.nodeName={node.NAME}",
        "--grace-period=0",
        "--force",
        "--wait=false",
        check=False,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if node.idle(lay.node):
            log(f"{node.NAME}: every pod stopped by the kubelet, its network torn down")
            return
        time.sleep(0.5)
    log(f"{node.NAME}: pods still running after 60s; cleaning up by force")


def restart_component(
    state_dir: Path | None, name: str, sig: int = signal.SIGKILL, log: Log = _stderr
) -> procs.Proc:
    """Kill one component (the kubelet, say) with ``sig`` and start it again as before:
    a fault for the tests. Its state entry follows the new process."""
    lay = _layout(state_dir)
    state = _load(lay)
    if state is None:
        raise ClusterError(f"no cluster in {lay.root}")
    running = _procs(state)
    [old] = [p for p in running if p.name == name]
    with contextlib.suppress(OSError):
        os.kill(old.pid, sig)
    deadline = time.monotonic() + 30
    while procs.alive(old) and time.monotonic() < deadline:
        time.sleep(0.05)
    env = dict(os.environ, PATH=f"{os.environ.get('PATH', '')}:/usr/sbin:/sbin")
    new = procs.spawn(name, list(old.argv), old.log, env)
    state["components"] = [(new if p.name == name else p).to_json() for p in running]
    _save(lay, state)
    log(f"{name} restarted: pid {old.pid} -> {new.pid}")
    return new


def node_names() -> list[str]:
    return re.findall(r"^  metadata:\n    name: (\S+)$", nodes_yaml(), re.M)


def nodes_yaml() -> str:
    return resources.files("qms_cluster").joinpath("nodes.yaml").read_text()


def _wait(what: str, pred: Callable[[], bool], running: list[procs.Proc], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        for p in running:
            if not procs.alive(p):
                raise ClusterError(
                    f"{p.name} exited (code {procs.exit_code(p)}) while waiting for {what}; "
                    f"log {p.log}:\n{procs.tail(p.log, 30)}"
                )
        if pred():
            return
        if time.monotonic() > deadline:
            logs = "\n".join(f"--- {p.name}:\n{procs.tail(p.log, 10)}" for p in running)
            raise ClusterError(f"timed out after {timeout:.0f}s waiting for {what}\n{logs}")
        time.sleep(0.1)


def _nodes_ready(server: str, token: str, ctx: ssl.SSLContext, names: list[str]) -> bool:
    try:
        items = _get(f"{server}/api/v1/nodes", token, ctx)["items"]
    except (OSError, urllib.error.URLError, KeyError, TypeError):
        return False
    ready = set()
    for n in items:
        conds = {c["type"]: c["status"] for c in n.get("status", {}).get("conditions", [])}
        taints = {t["key"] for t in n.get("spec", {}).get("taints", [])}
        if conds.get("Ready") == "True" and "node.kubernetes.io/not-ready" not in taints:
            ready.add(n["metadata"]["name"])
    return set(names) <= ready


def up(
    state_dir: Path | None = None,
    log: Log = _stderr,
    timeout: float = 120.0,
    real_node: bool | None = None,
) -> Cluster:
    """Start the control plane (building binaries if needed); a no-op if it runs.

    real_node: True starts the kubelet-run node (an error where it cannot run),
    False does not, None (default) starts it where node.available() and no other
    cluster on this machine holds it.
    """
    lay = _layout(state_dir)
    existing = current(lay.root)
    if existing is not None:
        log(f"already running: {existing.server} (kubeconfig {existing.kubeconfig})")
        return existing
    if _load(lay) is not None:
        log(f"cluster in {lay.root} is not healthy; stopping it and starting afresh")
        down(lay.root, log)
    build.ensure_built(log)
    crds.ensure_fetched(log)
    with_node = _want_real_node(lay, real_node, log)
    for attempt in (1, 2):
        try:
            return _start(lay, log, timeout, with_node)
        except ClusterError as e:
            if attempt == 2 or "address already in use" not in str(e):
                raise
            log("a port was taken meanwhile; starting again on fresh ports")
            shutil.rmtree(lay.root)
    raise AssertionError("unreachable")


def _want_real_node(lay: Layout, wanted: bool | None, log: Log) -> bool:
    if wanted is False:
        return False
    ok, reason = node.available()
    if not ok:
        if wanted:
            raise ClusterError(f"the real node cannot run here: {reason}")
        log(f"no real node: {reason}")
        return False
    if not node.claim(lay.root):
        if wanted:
            raise ClusterError("another cluster on this machine holds the real node")
        log("no real node: another cluster on this machine holds it")
        return False
    node.ensure_packages(log)
    build.ensure_node_built(log)
    return True


def _start(lay: Layout, log: Log, timeout: float, with_node: bool = False) -> Cluster:
    t0 = time.monotonic()
    if (lay.root / MARKER).exists():
        shutil.rmtree(lay.root)  # leftovers of a failed start: begin clean
    lay.root.mkdir(parents=True, exist_ok=True)
    (lay.root / MARKER).touch()
    token = pki.new_token()
    pki.write_secret(
        lay.tokens, f'{token},{components.ADMIN},{components.ADMIN},"system:masters"\n'.encode()
    )
    pki.write_secret(lay.sa_key, pki.rsa_private_key_pem())
    lay.kwok_config.write_text(components.KWOK_CONFIG)
    ports = Ports(*procs.free_ports(6))
    host = node.HOST_IP if with_node else "127.0.0.1"
    server = f"https://{host}:{ports.apiserver}"
    state: dict[str, Any] = {
        "server": server,
        "token": token,
        "ports": vars(ports),
        "components": [],
        "real_node": with_node,
    }
    running: list[procs.Proc] = []

    def start(name: str, argv: list[str]) -> None:
        env = dict(os.environ, PATH=f"{os.environ.get('PATH', '')}:/usr/sbin:/sbin")
        running.append(procs.spawn(name, argv, lay.log(name), env))
        state["components"] = [p.to_json() for p in running]
        _save(lay, state)

    def lap(msg: str) -> None:
        log(f"{msg} ({time.monotonic() - t0:.1f}s)")

    try:
        if with_node:
            node.network_up(lay.node)
        start("etcd", components.etcd(lay, ports))
        etcd_health = f"http://127.0.0.1:{ports.etcd_client}/health"
        _wait("etcd /health", lambda: _ok(etcd_health, None, None), running, 30)
        lap(f"etcd {build.ETCD_VERSION} up on 127.0.0.1:{ports.etcd_client}")
        start("kube-apiserver", components.kube_apiserver(lay, ports, host))
        anyssl = _ssl(None)
        _wait("kube-apiserver /readyz", lambda: _ok(f"{server}/readyz", token, anyssl), running, 90)
        lay.kubeconfig.touch(mode=0o600)
        lay.kubeconfig.write_text(components.kubeconfig_text(server, lay.ca.read_bytes(), token))
        lap(f"kube-apiserver {build.K8S_VERSION} ready on {server}")
        start("kube-controller-manager", components.kube_controller_manager(lay, ports))
        start("kube-scheduler", components.kube_scheduler(lay, ports))
        start("kwok", components.kwok(lay, ports))
        cluster = _cluster(lay, state)
        cluster.kubectl("create", "-f", "-", input=nodes_yaml())
        ctx, names = _ssl(lay.ca), node_names()
        if with_node:
            _start_node(lay, state, start, running)
            names.append(node.NAME)
        _wait(
            f"nodes {', '.join(names)} to be Ready",
            lambda: _nodes_ready(server, token, ctx, names),
            running,
            timeout,
        )
        sched = f"https://127.0.0.1:{ports.scheduler}/readyz"
        _wait("kube-scheduler /readyz", lambda: _ok(sched, None, anyssl), running, timeout)
        sa = f"{server}/api/v1/namespaces/default/serviceaccounts/default"
        _wait("the default ServiceAccount", lambda: _ok(sa, token, ctx), running, timeout)
        kinds = (
            f"{len(names) - 1} kwok nodes and {node.NAME}"
            if with_node
            else f"{len(names)} kwok nodes"
        )
        lap(f"{kinds} Ready; controller-manager, scheduler and kwok running")
        crds.install(cluster, log)
        lap(
            f"CRDs of Gateway API {crds.GATEWAY_API_VERSION} and the Inference Extension "
            f"{crds.INFERENCE_EXTENSION_VERSION} established"
        )
    except BaseException:
        log(f"startup failed; stopping what was started (logs kept in {lay.root / 'logs'})")
        procs.stop(list(reversed(running)))
        if with_node:
            node.cleanup(lay.node, log)
            node.release(lay.root)
        raise
    state["ready"] = True
    _save(lay, state)
    return cluster


def _start_node(
    lay: Layout,
    state: dict[str, Any],
    start: Callable[[str, list[str]], None],
    running: list[procs.Proc],
) -> None:
    """containerd, the sandbox image, kubelet and kube-proxy of the real node."""
    ports = node.NodePorts(*procs.free_ports(4))
    state["node_ports"] = vars(ports)
    node.prepare(lay.node, ports, lay.kubeconfig)
    start("containerd", node.containerd_argv(lay.node))
    node.wait_containerd(lay.node, lambda: procs.alive(running[-1]))
    node.import_pause(lay.node, _stderr)
    start("kubelet", node.kubelet_argv(lay.node, lay.kubeconfig))
    start("kube-proxy", node.proxy_argv(lay.node))
