"""The watch cache: a watch event older than the operator's own write is not kept."""

from __future__ import annotations

from typing import Any

from qms_operator.store import Store

OWNER = {
    "apiVersion": "serving.qms.io/v1alpha1",
    "kind": "QwenModelServer",
    "name": "s",
    "controller": True,
}


def deployment(version: str, image: str, uid: str = "uid-1") -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": "s",
            "namespace": "ns",
            "uid": uid,
            "resourceVersion": version,
            "ownerReferences": [OWNER],
            "managedFields": [{"manager": "kubectl"}],
        },
        "spec": {"template": {"spec": {"containers": [{"name": "runtime", "image": image}]}}},
    }


def image(store: Store) -> tuple[str, str, str]:
    live = store.children(("ns", "s"))["Deployment"]
    meta = live["metadata"]
    return (
        meta["uid"],
        meta["resourceVersion"],
        live["spec"]["template"]["spec"]["containers"][0]["image"],
    )


def test_an_event_older_than_the_operators_write_is_not_kept() -> None:
    store = Store()
    assert store.put_child(deployment("100", "evil:1")) == ("ns", "s")  # edited by hand
    store.put_child(deployment("103", "good:1"))  # the operator's revert, as applied
    # The deployment controller's status writes of the edited object, still in flight
    # on the watch when the revert was stored:
    assert store.put_child(deployment("101", "evil:1")) == ("ns", "s")
    assert store.put_child(deployment("102", "evil:1")) == ("ns", "s")
    assert image(store) == ("uid-1", "103", "good:1")
    store.put_child(deployment("103", "good:1"))  # the revert's own event
    store.put_child(deployment("104", "good:1"))  # later writes are kept
    assert image(store) == ("uid-1", "104", "good:1")
    assert "managedFields" not in store.children(("ns", "s"))["Deployment"]["metadata"]


def test_a_new_object_of_the_same_name_always_replaces_the_old() -> None:
    store = Store()
    store.put_child(deployment("500", "good:1", uid="uid-1"))
    store.put_child(deployment("20", "good:2", uid="uid-2"))  # uid differs: not compared
    assert image(store) == ("uid-2", "20", "good:2")


def test_the_deletion_of_an_earlier_object_keeps_its_successor() -> None:
    store = Store()
    store.put_child(deployment("100", "good:1", uid="uid-1"))
    store.put_child(deployment("105", "good:1", uid="uid-2"))  # recreated by the operator
    assert store.put_child(deployment("104", "good:1", uid="uid-1"), deleted=True) == ("ns", "s")
    assert image(store) == ("uid-2", "105", "good:1")
    store.put_child(deployment("106", "good:1", uid="uid-2"), deleted=True)
    assert store.children(("ns", "s")) == {}


def test_versions_that_are_not_numbers_are_not_compared() -> None:
    store = Store()
    store.put_child(deployment("b", "good:1"))
    store.put_child(deployment("a", "good:2"))
    assert image(store) == ("uid-1", "a", "good:2")
