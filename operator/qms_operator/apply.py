"""The only module that talks to the API server (besides kopf's own watches).

Server-side apply of children under one field manager, deletion of children no
longer wanted, the status patch and Events. Every request is counted by verb and
kind in ``qms_operator_api_requests_total``. Calls are blocking (kubernetes
client); the reconciler runs them in threads.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from kubernetes import client, config
from kubernetes.dynamic import DynamicClient
from kubernetes.dynamic.exceptions import ResourceNotFoundError

from .builders.names import MANAGER
from .metrics import API_REQUESTS
from .spec import API_VERSION, KIND


class ApiError(Exception):
    """An API request failed; the message is one line for status and Events."""


def _short(exc: Exception) -> str:
    body = getattr(exc, "body", None) or getattr(exc, "summary", lambda: "")() or str(exc)
    text = str(body)
    if '"message":"' in text:
        text = text.split('"message":"', 1)[1].split('","', 1)[0]
    status = getattr(exc, "status", "")
    return f"{status} {text}".strip()[:400]


class Api:
    """A thin client over the dynamic Kubernetes client."""

    def __init__(self, api_client: client.ApiClient | None = None) -> None:
        if api_client is None:
            try:
                config.load_incluster_config()
            except config.ConfigException:
                config.load_kube_config()
            cfg = client.Configuration.get_default_copy()
            cfg.connection_pool_maxsize = 32  # as many as reconciles run at once
            api_client = client.ApiClient(cfg)
        self._client = api_client
        self._dynamic: DynamicClient | None = None

    @property
    def dynamic(self) -> DynamicClient:
        if self._dynamic is None:
            API_REQUESTS.labels(verb="discovery", kind="").inc()
            self._dynamic = DynamicClient(self._client)
        return self._dynamic

    def _resource(self, api_version: str, kind: str) -> Any:
        try:
            return self.dynamic.resources.get(api_version=api_version, kind=kind)
        except ResourceNotFoundError as exc:
            raise ApiError(f"{kind} ({api_version}) is not served by this cluster") from exc

    def apply(self, obj: dict[str, Any]) -> dict[str, Any]:
        """Server-side apply, forcing ownership of the fields the operator sets."""
        meta = obj["metadata"]
        resource = self._resource(obj["apiVersion"], obj["kind"])
        API_REQUESTS.labels(verb="apply", kind=obj["kind"]).inc()
        try:
            result = self.dynamic.server_side_apply(
                resource,
                body=obj,
                name=meta["name"],
                namespace=meta["namespace"],
                field_manager=MANAGER,
                force_conflicts=True,
            )
        except Exception as exc:
            raise ApiError(f"apply {obj['kind']} {meta['name']}: {_short(exc)}") from exc
        applied: dict[str, Any] = result.to_dict()
        return applied

    def delete(self, api_version: str, kind: str, namespace: str, name: str, uid: str) -> None:
        """Delete a child, only if it is still the object that was seen (uid precondition)."""
        resource = self._resource(api_version, kind)
        API_REQUESTS.labels(verb="delete", kind=kind).inc()
        body = {"preconditions": {"uid": uid}, "propagationPolicy": "Background"}
        try:
            self.dynamic.delete(resource, name=name, namespace=namespace, body=body)
        except Exception as exc:
            if getattr(exc, "status", None) in (404, 409):
                return
            raise ApiError(f"delete {kind} {name}: {_short(exc)}") from exc

    def patch_status(self, namespace: str, name: str, status: dict[str, Any]) -> None:
        """Merge-patch the QwenModelServer's status subresource (never its spec)."""
        resource = self._resource(API_VERSION, KIND)
        API_REQUESTS.labels(verb="patch_status", kind=KIND).inc()
        try:
            self.dynamic.patch(
                resource.subresources["status"],
                body={"status": status},
                name=name,
                namespace=namespace,
                content_type="application/merge-patch+json",
            )
        except Exception as exc:
            if getattr(exc, "status", None) == 404:
                return
            raise ApiError(f"patch status {name}: {_short(exc)}") from exc

    def event(self, server: dict[str, Any], type_: str, reason: str, message: str) -> None:
        """Post a core/v1 Event on a QwenModelServer; failures are not fatal."""
        meta = server["metadata"]
        now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
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
