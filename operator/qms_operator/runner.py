"""`qms-operator run`: kopf's operator loop, the resync loop, metrics, health, leadership."""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import logging
import os
import socket
import threading
from typing import Any

import kopf
from prometheus_client import start_http_server

from .apply import Api
from .handlers import register
from .reconcile import Reconciler, WorkQueue, resync
from .store import Store

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


async def _main(args: argparse.Namespace) -> None:
    loop = asyncio.get_running_loop()
    loop.set_default_executor(concurrent.futures.ThreadPoolExecutor(max_workers=32))
    store = Store()
    reconciler = Reconciler(Api(), store)
    queue = WorkQueue(reconciler.reconcile)
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
    try:
        await kopf.operator(
            registry=registry,
            liveness_endpoint=f"http://0.0.0.0:{args.health_port}/healthz",
            standalone=True,
            **scope,
        )
    finally:
        resync_task.cancel()


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    logging.getLogger("kubernetes").setLevel(logging.WARNING)
    if not args.verbose:  # kopf logs every handled watch event at INFO
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    start_http_server(args.metrics_port)
    if args.lease_namespace:
        _wait_for_leadership(args.lease_namespace)
    asyncio.run(_main(args))
    return 0
