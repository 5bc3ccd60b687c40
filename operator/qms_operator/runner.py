"""`qms-operator run`: kopf's operator loop, the resync loop, metrics, health, leadership."""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import logging
import os
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import kopf
from prometheus_client import start_http_server

from .apply import Api
from .builders import CHILD_KINDS
from .handlers import register
from .reconcile import Reconciler
from .spec import API_VERSION, KIND
from .store import Store
from .workqueue import WorkQueue, resync

log = logging.getLogger("qms_operator")
LEASE_NAME = "qms-operator"


def _settings(settings: kopf.OperatorSettings) -> None:
    # Events are posted by the apply layer, on purpose and counted; not for each log line.
    settings.posting.enabled = False
    # Reconnect watches now and then; a stopped API server is retried, never fatal.
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.networking.error_backoffs = [1, 2, 5, 10, 10, 10]
    settings.networking.request_timeout = 30


class Health:
    """Liveness: the process runs, and once leading, kopf's operator task runs too."""

    def __init__(self) -> None:
        self.operator_task: asyncio.Task[None] | None = None

    def ok(self) -> bool:
        return self.operator_task is None or not self.operator_task.done()

    def serve(self, port: int) -> None:
        health = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                good = self.path == "/healthz" and health.ok()
                self.send_response(200 if good else 503)
                self.send_header("Content-Type", "text/plain")
                self.end_headers()
                self.wfile.write(b"ok\n" if good else b"not ok\n")

            def log_message(self, *args: Any) -> None:  # no access log
                pass

        server = ThreadingHTTPServer(("0.0.0.0", port), Handler)
        threading.Thread(target=server.serve_forever, name="health", daemon=True).start()


def _wait_for_leadership(namespace: str) -> None:
    """Block until this process holds the Lease; exit the process when it loses it."""
    from kubernetes import config
    from kubernetes.leaderelection import electionconfig, leaderelection
    from kubernetes.leaderelection.resourcelock.leaselock import LeaseLock

    try:
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config()
    identity = f"{socket.gethostname()}-{os.getpid()}"
    leading = threading.Event()

    def lost() -> None:
        log.error("lost the leader Lease %s/%s: exiting", namespace, LEASE_NAME)
        os._exit(1)

    cfg = electionconfig.Config(
        LeaseLock(LEASE_NAME, namespace, identity),
        lease_duration=15,
        renew_deadline=10,
        retry_period=2,
        onstarted_leading=leading.set,
        onstopped_leading=lost,
    )
    election = leaderelection.LeaderElection(cfg)
    threading.Thread(target=election.run, name="leader-election", daemon=True).start()
    log.info("waiting for the leader Lease %s/%s as %s", namespace, LEASE_NAME, identity)
    leading.wait()
    log.info("leading as %s", identity)


async def _main(args: argparse.Namespace, health: Health) -> None:
    loop = asyncio.get_running_loop()
    loop.set_default_executor(concurrent.futures.ThreadPoolExecutor(max_workers=32))
    store = Store()
    api = Api()
    # Where each child kind is served, once, before the first reconcile (a kind not
    # served, or an API server not up yet, is looked up again when needed).
    await asyncio.to_thread(
        api.prime, [*((c.api_version, c.kind) for c in CHILD_KINDS), (API_VERSION, KIND)]
    )
    reconciler = Reconciler(api, store)
    queue = WorkQueue(reconciler.reconcile, concurrency=args.workers)
    registry = kopf.OperatorRegistry()
    register(registry, store, queue)
    kopf.on.login(registry=registry)(kopf.login_via_client)

    @kopf.on.startup(registry=registry)
    def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
        _settings(settings)

    scope: dict[str, Any] = (
        {"namespaces": args.namespace} if args.namespace else {"clusterwide": True}
    )
    resync_task = asyncio.create_task(resync(store, queue, args.resync_seconds))
    health.operator_task = asyncio.create_task(
        kopf.operator(registry=registry, standalone=True, **scope)
    )
    try:
        await health.operator_task
    finally:
        resync_task.cancel()


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    logging.getLogger("kubernetes").setLevel(logging.WARNING)
    # The client's leader election logs every Lease renewal (every 2 s) at INFO; the
    # operator logs its own "waiting for the Lease" and "leading as" once.
    logging.getLogger("leaderelection").setLevel(logging.WARNING)
    if not args.verbose:  # kopf logs every handled watch event at INFO
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    start_http_server(args.metrics_port)
    health = Health()
    health.serve(args.health_port)
    if args.lease_namespace:
        _wait_for_leadership(args.lease_namespace)
    asyncio.run(_main(args, health))
    return 0
