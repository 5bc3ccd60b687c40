"""In-memory cache of the watched objects, fed by kopf's watch events.

Reconciles read only from here, so a reconcile with nothing to change sends no
request at all. Bodies are kept slim (no managedFields) to bound memory.

Children come from two sources: watch events and the operator's own apply
responses. A watch stream lags, so an event can arrive after the operator stored
the answer to its own later write; such an event is older than what is stored and
is not kept (``_older``). Otherwise the next reconcile would see the drift it had
just repaired, and write it again.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from .builders.names import LABEL_INSTANCE
from .spec import API_VERSION, KIND

Key = tuple[str, str]  # (namespace, name)


def slim(body: Any) -> dict[str, Any]:
    """The object without the fields the operator never reads (managedFields, last-applied).

    Shallow: each watch event brings a new body, and the store never changes one.
    """
    out = dict(body)
    meta = dict(out.get("metadata", {}))
    meta.pop("managedFields", None)
    annotations = meta.get("annotations")
    if annotations and "kubectl.kubernetes.io/last-applied-configuration" in annotations:
        meta["annotations"] = {
            k: v
            for k, v in annotations.items()
            if k != "kubectl.kubernetes.io/last-applied-configuration"
        }
    out["metadata"] = meta
    return out


def _version(body: Any) -> int | None:
    value = body["metadata"].get("resourceVersion")
    return int(value) if isinstance(value, str) and value.isdigit() else None


def _older(body: Any, stored: Any | None) -> bool:
    """Whether ``body`` is an older version of the very object ``stored`` (same uid, a
    lower resourceVersion). resourceVersions are compared only within one object,
    where the API server's are etcd revisions; anything else counts as newer."""
    if stored is None or body["metadata"].get("uid") != stored["metadata"].get("uid"):
        return False
    new, old = _version(body), _version(stored)
    return new is not None and old is not None and new < old


def owner(body: Any) -> str | None:
    """Name of the QwenModelServer that controls this object, if one does."""
    for ref in body["metadata"].get("ownerReferences") or []:
        if (
            ref.get("controller")
            and ref.get("kind") == KIND
            and ref.get("apiVersion") == API_VERSION
        ):
            return str(ref["name"])
    return None


class Store:
    """Servers by key; children and pods by (namespace, server name)."""

    def __init__(self) -> None:
        self.servers: dict[Key, dict[str, Any]] = {}
        self._children: dict[Key, dict[str, dict[str, Any]]] = defaultdict(dict)
        self._pods: dict[Key, dict[str, dict[str, Any]]] = defaultdict(dict)

    def put_server(self, body: Any, deleted: bool = False) -> Key:
        key = (body["metadata"]["namespace"], body["metadata"]["name"])
        if deleted:
            self.servers.pop(key, None)
        else:
            self.servers[key] = slim(body)
        return key

    def put_child(self, body: Any, deleted: bool = False) -> Key | None:
        """Record a child (or a pod); returns the key of the server it belongs to.

        Children are found by their controller reference, so one whose labels were
        edited away is still seen (and repaired); pods by their instance label.
        """
        meta = body["metadata"]
        is_pod = body.get("kind") == "Pod"
        server = (meta.get("labels") or {}).get(LABEL_INSTANCE) if is_pod else owner(body)
        if not server:
            return None
        key = (meta["namespace"], server)
        table = self._pods if is_pod else self._children
        slot = meta["name"] if is_pod else body["kind"]
        if not is_pod and meta["name"] != server:
            return None  # not one of the server's children (they share its name)
        stored = table.get(key, {}).get(slot)
        if deleted:
            if stored is not None and stored["metadata"].get("uid") != meta.get("uid"):
                return key  # an earlier object of that name: its successor stays
            table[key].pop(slot, None)
            if not table[key]:
                del table[key]
        elif not _older(body, stored):
            table[key][slot] = slim(body)
        return key

    def children(self, key: Key) -> dict[str, dict[str, Any]]:
        return dict(self._children.get(key, {}))

    def pods(self, key: Key) -> list[dict[str, Any]]:
        return list(self._pods.get(key, {}).values())
