"""kopf handlers: thin. Every watch event updates the store and queues the server.

Only ``on.event`` handlers are used, so kopf keeps no progress or diff-base in the
objects (no annotations, no status.kopf, no finalizers): the QwenModelServer a user
keeps in Git shows no drift, and deleting it never waits on the operator.
"""

from __future__ import annotations

from typing import Any

import kopf

from .builders import CHILD_KINDS
from .builders.names import LABEL_MANAGED_BY, MANAGER
from .spec import GROUP, PLURAL, VERSION
from .store import Store
from .workqueue import WorkQueue

# Every kind the builders make is watched, so drift of any child (a ServiceMonitor
# too, once its CRD is served: kopf watches CRDs and starts the watch) is repaired on
# its watch event, not at the next resync; and pods, for status.
CHILD_RESOURCES = [child.resource for child in CHILD_KINDS] + [("", "v1", "pods")]


def register(registry: kopf.OperatorRegistry, store: Store, queue: WorkQueue) -> None:
    """Register the handlers on a registry (no module-level state)."""

    # event["object"] is the raw watch-event body: a fresh dict per event, kept as is.
    async def on_server(event: kopf.RawEvent, type: str | None, **_: Any) -> None:
        queue.enqueue(store.put_server(event["object"], deleted=type == "DELETED"))

    kopf.on.event(GROUP, VERSION, PLURAL, registry=registry, id="modelserver")(on_server)

    async def on_child(event: kopf.RawEvent, type: str | None, **_: Any) -> None:
        key = store.put_child(event["object"], deleted=type == "DELETED")
        if key is not None and key in store.servers:
            queue.enqueue(key)

    for group, version, plural in CHILD_RESOURCES:
        # Children are matched by owner reference in the store (a label edited away
        # must not hide one); pods, owned by ReplicaSets, by the operator's label.
        labels = {LABEL_MANAGED_BY: MANAGER} if plural == "pods" else None
        kopf.on.event(
            group, version, plural, labels=labels, registry=registry, id=f"child-{plural}"
        )(on_child)
