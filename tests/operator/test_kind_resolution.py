"""Resolution of the operator's kinds to REST paths (issue 18): safe from many threads,
one discovery request per group-version, a missing kind looked up again rate-limited."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from kind_helpers import PLURALS

from qms_operator.apply import ApiError, NotServed, Resource, Resources
from qms_operator.builders import CHILD_KINDS
from qms_operator.spec import API_VERSION, KIND

KINDS = [(child.api_version, child.kind) for child in CHILD_KINDS] + [(API_VERSION, KIND)]


class Discovery:
    """The API server's discovery documents; counts the requests."""

    def __init__(self, unserved: set[str]) -> None:
        self.unserved = unserved
        self.requests: dict[str, int] = {}
        self.lock = threading.Lock()
        self.down = False

    def __call__(self, api_version: str) -> dict[str, Any] | None:
        with self.lock:
            self.requests[api_version] = self.requests.get(api_version, 0) + 1
        if self.down:
            raise OSError("connection refused")
        if api_version in self.unserved:
            return None
        kinds = [k for v, k in KINDS if v == api_version]
        resources = [{"name": PLURALS[k], "kind": k, "namespaced": True} for k in kinds]
        resources += [
            {"name": f"{PLURALS[k]}/status", "kind": k, "namespaced": True} for k in kinds
        ]
        resources.append({"name": "componentstatuses", "kind": "Other", "namespaced": False})
        return {"kind": "APIResourceList", "groupVersion": api_version, "resources": resources}


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


MONITORING = "monitoring.coreos.com/v1"


def test_paths() -> None:
    svc = Resource("v1", "Service", "services")
    assert svc.path("ns", "s") == "/api/v1/namespaces/ns/services/s"
    server = Resource(API_VERSION, KIND, "modelservers")
    assert server.path("ns", "s", "status") == (
        "/apis/serving.qms.io/v1alpha1/namespaces/ns/modelservers/s/status"
    )


def test_many_threads_one_kind_not_served() -> None:
    """32 threads resolve every kind at once while ServiceMonitor is not served."""
    discovery, clock = Discovery({MONITORING}), Clock()
    resources = Resources(discovery, recheck=10.0, clock=clock)
    resources.prime([v for v, _ in KINDS])
    assert discovery.requests == {v: 1 for v, _ in KINDS}

    def lookup(i: int) -> str:
        api_version, kind = KINDS[i % len(KINDS)]
        try:
            return resources.resolve(api_version, kind).plural
        except NotServed as exc:
            return f"not served: {exc}"

    with ThreadPoolExecutor(32) as pool:
        answers = list(pool.map(lookup, range(32 * 200)))
    expected = [
        "not served: ServiceMonitor (monitoring.coreos.com/v1) is not served by this cluster"
        if kind == "ServiceMonitor"
        else PLURALS[kind]
        for _, kind in KINDS
    ]
    assert answers == expected * (32 * 200 // len(KINDS)) + expected[: 32 * 200 % len(KINDS)]
    assert discovery.requests == {v: 1 for v, _ in KINDS}  # no request in the hot path


def test_a_missing_kind_is_looked_up_again_rate_limited_and_found_once_served() -> None:
    discovery, clock = Discovery({MONITORING}), Clock()
    resources = Resources(discovery, recheck=10.0, clock=clock)
    resources.prime([MONITORING])
    clock.now = 9.9
    with pytest.raises(NotServed):
        resources.resolve(MONITORING, "ServiceMonitor")
    assert discovery.requests[MONITORING] == 1
    clock.now = 10.0
    with pytest.raises(NotServed):
        resources.resolve(MONITORING, "ServiceMonitor")
    assert discovery.requests[MONITORING] == 2
    discovery.unserved.clear()  # the CRD installed
    with pytest.raises(NotServed):  # within the window: not asked yet
        resources.resolve(MONITORING, "ServiceMonitor")
    clock.now = 20.0
    assert resources.resolve(MONITORING, "ServiceMonitor").plural == "servicemonitors"
    assert discovery.requests[MONITORING] == 3
    resources.resolve(MONITORING, "ServiceMonitor")
    assert discovery.requests[MONITORING] == 3

    # Its CRD deleted: a 404 makes it forgotten, looked up again once the window is over.
    discovery.unserved.add(MONITORING)
    resources.forget(MONITORING, "ServiceMonitor")
    with pytest.raises(NotServed):
        resources.resolve(MONITORING, "ServiceMonitor")
    assert discovery.requests[MONITORING] == 3
    clock.now = 30.0
    with pytest.raises(NotServed):
        resources.resolve(MONITORING, "ServiceMonitor")
    assert discovery.requests[MONITORING] == 4


def test_an_api_server_not_up_at_start_is_asked_again() -> None:
    discovery, clock = Discovery(set()), Clock()
    discovery.down = True
    resources = Resources(discovery, recheck=10.0, clock=clock)
    resources.prime(["apps/v1"])  # logged, not raised
    with pytest.raises(ApiError, match="discovery of apps/v1 has not answered yet") as info:
        resources.resolve("apps/v1", "Deployment")
    assert not isinstance(info.value, NotServed)  # unknown is not "not served"
    assert discovery.requests["apps/v1"] == 2  # never answered: no rate limit
    discovery.down = False
    assert resources.resolve("apps/v1", "Deployment").plural == "deployments"
    assert discovery.requests["apps/v1"] == 3
