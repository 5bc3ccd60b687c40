"""e2e tier: tests against a real local control plane (qms-cluster).

Every test under tests/e2e is marked ``e2e``. The session fixture ``cluster``
reuses the control plane already up in $QMS_CLUSTER_DIR (default
~/.cache/qms/cluster) and leaves it running, or starts one (in a private temp
directory when QMS_CLUSTER_DIR is unset) and takes it down at the end; it sets
KUBECONFIG. ``namespace`` gives each test its own namespace.

The operator modules share three fixtures, defined here once: ``crd`` (the
QwenModelServer CRD; a module that needs more CRDs overrides it), ``op`` (an operator
process for the module's namespaces, ``NAMESPACE_PREFIX`` + "*", with the module's
``OPERATOR_ARGS``, default a 5 s resync) and ``ns`` (a fresh namespace with that prefix
for each test).
Tests skip only where the binaries cannot exist (no Go toolchain, ...).
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cluster_helpers import namespace_name
from operator_helpers import Operator, fresh_namespace, install_crd, operator

import qms_cluster
from qms_cluster import Cluster, build

HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.resolve().is_relative_to(HERE):
            item.add_marker(pytest.mark.e2e)


def pytest_collection_finish(session: pytest.Session) -> None:
    """Build missing binaries before the first test, outside any test's timeout.

    A cold build takes minutes; inside the session fixture it would count
    against the first test's pytest-timeout. Output goes to the terminal.
    """
    if not any(item.get_closest_marker("e2e") for item in session.items):
        return
    if all(build.is_built(s) for s in build.ALL):
        return
    ok, _ = qms_cluster.binaries_available()
    if not ok:
        return  # the fixture skips with the reason
    capman = session.config.pluginmanager.getplugin("capturemanager")
    if capman is None:
        qms_cluster.ensure_built()
        return
    with capman.global_and_fixture_disabled():
        qms_cluster.ensure_built()


@pytest.fixture(scope="session")
def cluster() -> Iterator[Cluster]:
    ok, reason = qms_cluster.binaries_available()
    if not ok:
        pytest.skip(f"control-plane binaries cannot exist here: {reason}")
    existing = qms_cluster.current()
    if existing is not None:
        c = existing
    else:
        # One this session starts goes in a private directory unless
        # QMS_CLUSTER_DIR names one, so that a concurrent pytest run never
        # reuses it and then loses it when this session tears it down.
        private = None if os.environ.get("QMS_CLUSTER_DIR") else tempfile.mkdtemp(prefix="qms-")
        # kwok nodes only: tests/e2e/test_real_node.py starts its own cluster with
        # the machine's one real node.
        c = qms_cluster.up(Path(private) if private else None, real_node=False)
    previous = os.environ.get("KUBECONFIG")
    os.environ["KUBECONFIG"] = str(c.kubeconfig)
    try:
        yield c
    finally:
        if previous is None:
            os.environ.pop("KUBECONFIG", None)
        else:
            os.environ["KUBECONFIG"] = previous
        if existing is None:
            qms_cluster.down(c.state_dir)


@pytest.fixture
def namespace(cluster: Cluster, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace for this test, deleted (without waiting) afterwards.

    Waits for its ``default`` ServiceAccount, without which pods are refused.
    """
    name = namespace_name(request.node.name)
    cluster.kubectl("create", "namespace", name)
    deadline = time.monotonic() + 30
    while cluster.kubectl("get", "serviceaccount", "default", "-n", name, check=False).returncode:
        if time.monotonic() > deadline:
            raise TimeoutError(f"no default ServiceAccount in namespace {name} after 30s")
        time.sleep(0.1)
    try:
        yield name
    finally:
        cluster.kubectl("delete", "namespace", name, "--wait=false", "--ignore-not-found")


@pytest.fixture(scope="module")
def crd(cluster: Cluster) -> None:
    """The QwenModelServer CRD, installed and Established."""
    install_crd(cluster)


@pytest.fixture(scope="module")
def op(
    cluster: Cluster,
    crd: None,
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Operator]:
    """A `qms-operator run` for the module's namespaces, with the module's arguments."""
    prefix = request.module.NAMESPACE_PREFIX
    args = getattr(request.module, "OPERATOR_ARGS", ("--resync-seconds=5",))
    log = tmp_path_factory.mktemp("operator") / "operator.log"
    with operator(cluster, [f"{prefix}*"], *args, log=log) as running:
        yield running


@pytest.fixture
def ns(cluster: Cluster, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace the module's operator watches."""
    prefix = request.module.NAMESPACE_PREFIX
    with fresh_namespace(cluster, namespace_name(prefix + request.node.name)) as name:
        yield name
