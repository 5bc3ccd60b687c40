"""``qms-cluster build | up | down | status | kubeconfig | images``."""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

from . import build, cluster, crds, images, node


def _cmd_build(args: argparse.Namespace) -> int:
    build.ensure_built()
    sets = list(build.ALL)
    if node.available()[0]:
        build.ensure_node_built()
        sets += build.NODE
    for s in sets:
        print(f"{s.name} {s.version}: {s.bin_dir}")
    crds.ensure_fetched()
    for c in crds.ALL:
        print(f"CRDs {c.module} {c.version}: {c.cache_dir}")
    return 0


def _cmd_up(args: argparse.Namespace) -> int:
    t0 = time.monotonic()
    c = cluster.up(args.state_dir, real_node=args.real_node)
    print(f"server:     {c.server}")
    if c.real_node:
        print(
            f"real node:  {node.NAME} (taint {node.TAINT_KEY}=true:NoSchedule, labels "
            + ", ".join(f"{k}={v}" for k, v in node.LABELS.items())
            + ")"
        )
    print(f"kubeconfig: {c.kubeconfig}")
    print(f"kubectl:    {c.bin_dir / 'kubectl'}")
    print(f"up in {time.monotonic() - t0:.1f}s; use: export KUBECONFIG={c.kubeconfig}")
    return 0


def _cmd_down(args: argparse.Namespace) -> int:
    cluster.down(args.state_dir)
    return 0


def _cmd_status(args: argparse.Namespace) -> int:
    st = cluster.status(args.state_dir)
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


def _cmd_kubeconfig(args: argparse.Namespace) -> int:
    state_dir = args.state_dir
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


def _cmd_images(args: argparse.Namespace) -> int:
    unknown = sorted(set(args.image) - set(images.IMAGES))
    if unknown:
        print(f"qms-cluster: error: no image {', '.join(unknown)}", file=sys.stderr)
        return 2
    refs = images.build_all(names=tuple(args.image or ("operator", "runtime")))
    if args.load:
        c = cluster.current(args.state_dir)
        if c is None or not c.real_node:
            print(
                "qms-cluster: error: --load needs a running cluster with a real node",
                file=sys.stderr,
            )
            return 1
        for ref in refs.values():
            images.load(ref, cluster.node_layout(c))
    for ref in refs.values():
        print(ref)
    return 0


COMMANDS = {
    "build": (
        _cmd_build,
        "build the pinned binaries and fetch the pinned CRDs into ~/.cache/qms (no-op when cached)",
    ),
    "up": (_cmd_up, "build if needed, start the control plane and its fake nodes"),
    "down": (_cmd_down, "stop every component and remove the state directory"),
    "status": (_cmd_status, "report each component: running, or crashed with its log tail"),
    "kubeconfig": (_cmd_kubeconfig, "print the kubeconfig path of the running cluster"),
    "images": (_cmd_images, "build Dockerfile.operator/.runtime here (--load: into the real node)"),
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
    parsers = {name: sub.add_parser(name, help=help_) for name, (_, help_) in COMMANDS.items()}
    real = parsers["up"].add_mutually_exclusive_group()
    real.add_argument(
        "--real-node",
        dest="real_node",
        action="store_true",
        default=None,
        help="start the kubelet-run node (fail where it cannot run)",
    )
    real.add_argument(
        "--no-real-node", dest="real_node", action="store_false", help="kwok nodes only"
    )
    parsers["images"].add_argument(
        "image", nargs="*", help=f"which of {', '.join(sorted(images.IMAGES))} (default: both)"
    )
    parsers["images"].add_argument(
        "--load", action="store_true", help="import them into the running real node's containerd"
    )
    args = p.parse_args(argv)
    try:
        return COMMANDS[args.command][0](args)
    except (RuntimeError, subprocess.CalledProcessError) as e:
        print(f"qms-cluster: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
