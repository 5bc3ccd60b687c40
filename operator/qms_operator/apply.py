"""The only module that talks to the API server (besides kopf's own watches).

Server-side apply of children under one field manager, deletion of children no
longer wanted, the status patch and Events. Every request is counted by verb and
kind in ``qms_operator_api_requests_total``. Calls are blocking (kubernetes
client); the reconciler runs them in threads, many at once.

Kinds are addressed by their REST paths, found by discovery of the operator's few
group-versions (``Resources``), not through the dynamic client's shared discovery
cache, which is not thread-safe (issue 18). A kind the cluster does not serve is
``NotServed``, a named and expected answer.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kubernetes import client, config
from kubernetes.dynamic import DynamicClient

from .builders.names import MANAGER
from .clock import utc_now
from .metrics import API_REQUESTS
from .spec import API_VERSION, KIND

log = logging.getLogger("qms_operator")


class ApiError(Exception):
    """An API request failed; the message is one line for status and Events."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class NotServed(ApiError):
    """The API server does not serve this kind (its CRD is absent): expected, and named."""

    def __init__(self, api_version: str, kind: str) -> None:
        super().__init__(f"{kind} ({api_version}) is not served by this cluster", 404)
        self.api_version = api_version
        self.kind = kind


def _short(exc: Exception) -> str:
    body = getattr(exc, "body", None) or getattr(exc, "summary", lambda: "")() or str(exc)
    text = str(body)
    if '"message":"' in text:
        text = text.split('"message":"', 1)[1].split('","', 1)[0]
    status = getattr(exc, "status", "")
    return f"{status} {text}".strip()[:400]


@dataclass(frozen=True)
class Resource:
    """Where the API server serves one (namespaced) kind."""

    api_version: str
    kind: str
    plural: str

    def path(self, namespace: str, name: str, subresource: str = "") -> str:
        root = "/api/v1" if self.api_version == "v1" else f"/apis/{self.api_version}"
        tail = f"/{subresource}" if subresource else ""
        return f"{root}/namespaces/{namespace}/{self.plural}/{name}{tail}"


def discovery_path(api_version: str) -> str:
    return "/api/v1" if api_version == "v1" else f"/apis/{api_version}"


class Resources:
    """The REST paths of the operator's few kinds, from discovery of their group-versions.

    Safe under concurrency, with no shared mutable cache in the hot path: a lookup
    reads an immutable table, replaced whole (copy on write) under a lock. A
    group-version is discovered once (at start-up, see ``prime``) and again only
    when a kind of it was missing, at most once per ``recheck`` seconds, so a kind
    whose CRD is absent costs one discovery request per ``recheck``, whatever the
    number of reconciles asking, and is seen once its CRD is installed.

    ``fetch(api_version)`` returns the APIResourceList, or None where the
    group-version is not served (404).
    """

    def __init__(
        self,
        fetch: Callable[[str], dict[str, Any] | None],
        recheck: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._fetch = fetch
        self._recheck = recheck
        self._clock = clock
        self._lock = threading.Lock()
        self._known: dict[str, dict[str, Resource]] = {}  # group-version -> kind -> where
        self._checked: dict[str, float] = {}  # group-version -> when last discovered

    def prime(self, api_versions: list[str]) -> None:
        """Discover these group-versions now (start-up); errors are left to ``resolve``."""
        for api_version in dict.fromkeys(api_versions):
            with self._lock:
                self._discover(api_version)

    def resolve(self, api_version: str, kind: str) -> Resource:
        """Where ``kind`` is served; NotServed when it is not (ApiError when unknown)."""
        found = self._known.get(api_version, {}).get(kind)
        if found is not None:
            return found
        with self._lock:
            found = self._known.get(api_version, {}).get(kind)
            last = self._checked.get(api_version)
            if found is None and (last is None or self._clock() - last >= self._recheck):
                self._discover(api_version)
                found = self._known.get(api_version, {}).get(kind)
        if found is not None:
            return found
        if api_version not in self._known:
            raise ApiError(f"discovery of {api_version} has not answered yet")
        raise NotServed(api_version, kind)

    def forget(self, api_version: str, kind: str) -> None:
        """A request for this kind answered 404: look it up again (rate-limited)."""
        with self._lock:
            kinds = self._known.get(api_version)
            if kinds and kind in kinds:
                self._known = {
                    **self._known,
                    api_version: {k: v for k, v in kinds.items() if k != kind},
                }

    def _discover(self, api_version: str) -> None:
        """Under the lock: fetch one group-version's resources and publish them."""
        started = self._clock()
        try:
            document = self._fetch(api_version)
        except Exception as exc:  # the API server unreachable: known kinds stay known
            log.warning("discovery of %s failed: %s", api_version, _short(exc))
            if api_version in self._known:  # else asked again at the next lookup
                self._checked[api_version] = started
            return
        self._checked[api_version] = started
        kinds = {
            r["kind"]: Resource(api_version, r["kind"], r["name"])
            for r in (document or {}).get("resources", [])
            if "/" not in r["name"] and r.get("namespaced")
        }
        self._known = {**self._known, api_version: kinds}


class _NoDiscovery:
    """DynamicClient's discoverer slot, unused: the operator addresses kinds by path."""

    def __init__(self, client: Any, cache_file: Any) -> None:
        pass


class Api:
    """A thin client over the Kubernetes REST API, for the operator's fixed kinds."""

    def __init__(
        self, api_client: client.ApiClient | None = None, recheck_seconds: float = 10.0
    ) -> None:
        if api_client is None:
            try:
                config.load_incluster_config()
            except config.ConfigException:
                config.load_kube_config()
            cfg = client.Configuration.get_default_copy()
            cfg.connection_pool_maxsize = 32  # as many as reconciles run at once
            api_client = client.ApiClient(cfg)
        self._client = api_client
        # Only its request method is used: no discovery cache, no cache file.
        self._rest = DynamicClient(api_client, discoverer=_NoDiscovery)
        self.resources = Resources(self._discovery_document, recheck_seconds)

    def _request(self, method: str, path: str, **params: Any) -> dict[str, Any]:
        response = self._rest.request(method, path, serialize=False, **params)
        body: dict[str, Any] = json.loads(response.data or b"{}")
        return body

    def _discovery_document(self, api_version: str) -> dict[str, Any] | None:
        API_REQUESTS.labels(verb="discovery", kind="").inc()
        try:
            return self._request("get", discovery_path(api_version))
        except Exception as exc:
            if getattr(exc, "status", None) == 404:
                return None
            raise

    def prime(self, kinds: list[tuple[str, str]]) -> None:
        """Discover where the operator's kinds are served, once, at start-up."""
        self.resources.prime([api_version for api_version, _ in kinds])

    def apply(self, obj: dict[str, Any]) -> dict[str, Any]:
        """Server-side apply, forcing ownership of the fields the operator sets."""
        meta = obj["metadata"]
        resource = self.resources.resolve(obj["apiVersion"], obj["kind"])
        API_REQUESTS.labels(verb="apply", kind=obj["kind"]).inc()
        try:
            return self._request(
                "patch",
                resource.path(meta["namespace"], meta["name"]),
                body=obj,
                content_type="application/apply-patch+yaml",
                field_manager=MANAGER,
                force_conflicts=True,
            )
        except Exception as exc:
            status = getattr(exc, "status", None)
            if status == 404:  # the kind went away (its CRD deleted), or the namespace did
                self.resources.forget(obj["apiVersion"], obj["kind"])
            message = f"apply {obj['kind']} {meta['name']}: {_short(exc)}"
            raise ApiError(message, status) from exc

    def delete(self, api_version: str, kind: str, namespace: str, name: str, uid: str) -> None:
        """Delete a child, only if it is still the object that was seen (uid precondition)."""
        resource = self.resources.resolve(api_version, kind)
        API_REQUESTS.labels(verb="delete", kind=kind).inc()
        body = {"preconditions": {"uid": uid}, "propagationPolicy": "Background"}
        try:
            self._request("delete", resource.path(namespace, name), body=body)
        except Exception as exc:
            status = getattr(exc, "status", None)
            if status in (404, 409):
                return
            raise ApiError(f"delete {kind} {name}: {_short(exc)}", status) from exc

    def patch_status(self, namespace: str, name: str, status: dict[str, Any]) -> None:
        """Merge-patch the QwenModelServer's status subresource (never its spec)."""
        resource = self.resources.resolve(API_VERSION, KIND)
        API_REQUESTS.labels(verb="patch_status", kind=KIND).inc()
        try:
            self._request(
                "patch",
                resource.path(namespace, name, "status"),
                body={"status": status},
                content_type="application/merge-patch+json",
            )
        except Exception as exc:
            code = getattr(exc, "status", None)
            if code == 404:
                return
            raise ApiError(f"patch status {name}: {_short(exc)}", code) from exc

    def pod_events(self, namespace: str, pod: str) -> list[dict[str, Any]]:
        """The core/v1 Events about one pod (why the kubelet killed a container)."""
        API_REQUESTS.labels(verb="list", kind="Event").inc()
        try:
            body = self._request(
                "get",
                f"/api/v1/namespaces/{namespace}/events",
                query_params=[("fieldSelector", f"involvedObject.name={pod}")],
            )
        except Exception as exc:
            raise ApiError(f"list Events of pod {pod}: {_short(exc)}") from exc
        return list(body.get("items") or [])

    def event(self, server: dict[str, Any], type_: str, reason: str, message: str) -> None:
        """Post a core/v1 Event on a QwenModelServer; failures are not fatal."""
        meta = server["metadata"]
        now = utc_now()
        body: Any = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {
                "name": f"{meta['name']}.{uuid.uuid4().hex[:12]}",
                "namespace": meta["namespace"],
            },
            "involvedObject": {
                "apiVersion": API_VERSION,
                "kind": KIND,
                "name": meta["name"],
                "namespace": meta["namespace"],
                "uid": meta["uid"],
            },
            "type": type_,
            "reason": reason,
            "message": message[:1024],
            "source": {"component": MANAGER},
            "reportingComponent": MANAGER,
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        API_REQUESTS.labels(verb="create", kind="Event").inc()
        try:
            client.CoreV1Api(self._client).create_namespaced_event(meta["namespace"], body)
        except Exception:  # an Event lost is not worth failing a reconcile
            API_REQUESTS.labels(verb="create_failed", kind="Event").inc()
