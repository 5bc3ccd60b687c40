"""``qms-cluster build | up | down | status | kubeconfig``."""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

from . import build, cluster


def _cmd_build(_: Path | None) -> int:
    build.ensure_built()
    for s in build.ALL:
        print(f"{s.name} {s.version}: {s.bin_dir}")
    return 0


def _cmd_up(state_dir: Path | None) -> int:
    t0 = time.monotonic()
    c = cluster.up(state_dir)
    print(f"server:     {c.server}")
    print(f"kubeconfig: {c.kubeconfig}")
    print(f"kubectl:    {c.bin_dir / 'kubectl'}")
    print(f"up in {time.monotonic() - t0:.1f}s; use: export KUBECONFIG={c.kubeconfig}")
    return 0


def _cmd_down(state_dir: Path | None) -> int:
    cluster.down(state_dir)
    return 0


def _cmd_status(state_dir: Path | None) -> int:
    st = cluster.status(state_dir)
    if not st.exists:
        print(f"no cluster in {st.state_dir}")
        return 1
    print(f"state dir: {st.state_dir}")
    print(f"server:    {st.server} ({'ready' if st.api_ready else 'NOT ready'})")
    for c in st.components:
        word = "running" if c.running else "crashed"
        print(f"{c.name:<24} {word:<8} pid {c.pid:<8} log {c.log}")
        if not c.running:
            print("    " + c.log_tail.replace("\n", "\n    "))
    return 0 if st.running else 1


def _cmd_kubeconfig(state_dir: Path | None) -> int:
    path = cluster.kubeconfig_path(state_dir)
    if not path.exists():
        print(f"no cluster in {path.parent} (run: qms-cluster up)", file=sys.stderr)
        return 1
    if cluster.current(state_dir) is None:
        print(
            "qms-cluster: warning: the cluster is not healthy (see: qms-cluster status)",
            file=sys.stderr,
        )
    print(path)
    return 0


COMMANDS = {
    "build": (_cmd_build, "build the pinned binaries into ~/.cache/qms (no-op when cached)"),
    "up": (_cmd_up, "build if needed, start the control plane and its fake nodes"),
    "down": (_cmd_down, "stop every component and remove the state directory"),
    "status": (_cmd_status, "report each component: running, or crashed with its log tail"),
    "kubeconfig": (_cmd_kubeconfig, "print the kubeconfig path of the running cluster"),
}


def main(argv: list[str] | None = None) -> int:
    versions = (
        f"Kubernetes {build.K8S_VERSION}, etcd {build.ETCD_VERSION}, kwok {build.KWOK_VERSION}"
    )
    p = argparse.ArgumentParser(
        prog="qms-cluster",
        description=f"Local Kubernetes control plane on 127.0.0.1 ({versions}).",
        epilog="State directory: $QMS_CLUSTER_DIR, default ~/.cache/qms/cluster.",
    )
    p.add_argument("--state-dir", type=Path, help="overrides $QMS_CLUSTER_DIR")
    sub = p.add_subparsers(dest="command", required=True)
    for name, (_, help_) in COMMANDS.items():
        sub.add_parser(name, help=help_)
    args = p.parse_args(argv)
    try:
        return COMMANDS[args.command][0](args.state_dir)
    except (RuntimeError, subprocess.CalledProcessError) as e:
        print(f"qms-cluster: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
