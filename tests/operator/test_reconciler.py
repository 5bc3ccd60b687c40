"""The reconciler against a recording stand-in for the apply layer (issues 16 and 18).

What the API server answers is set per kind: applied, refused (an ApiError), not
served (NotServed), or an exception no layer expects. The e2e tests do the same
against the real API server; these pin the exact requests, Events and status.
"""

from __future__ import annotations

import asyncio
import copy
import re
from typing import Any

import pytest

from qms_operator.apply import ApiError, NotServed
from qms_operator.builders import desired_children
from qms_operator.clock import utc_now
from qms_operator.reconcile import Reconciler
from qms_operator.store import Store

KEY = ("ns", "s")
SPEC = {
    "model": {"name": "m", "source": {"imagePath": "/models/m"}},
    "resources": {"gpu": {"count": 0}},
}
DONE = {
    "observedGeneration": 1,
    "replicas": 1,
    "updatedReplicas": 1,
    "readyReplicas": 1,
    "availableReplicas": 1,
}


class FakeApi:
    """Records every call; ``answers`` maps a kind to the exception its apply raises."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.answers: dict[str, Exception] = {}
        self.applied: list[str] = []
        self.attempts: list[str] = []
        self.statuses: list[dict[str, Any]] = []
        self.events: list[tuple[str, str, str]] = []
        self.version = 100  # the API server's resourceVersion of the last write
        self.drop_image_volumes = False
        self.pod_event_items: dict[str, list[dict[str, Any]]] = {}  # pod name -> its Events
        self.pod_event_lists: list[str] = []

    def apply(self, obj: dict[str, Any]) -> dict[str, Any]:
        self.attempts.append(obj["kind"])
        if obj["kind"] in self.answers:
            raise self.answers[obj["kind"]]
        self.applied.append(obj["kind"])
        live = copy.deepcopy(obj)
        if self.drop_image_volumes and obj["kind"] == "Deployment":
            # What an API server with the ImageVolume gate off does: the image volume and
            # its mounts go, the rest is accepted.
            pod = live["spec"]["template"]["spec"]
            pod["volumes"] = [v for v in pod["volumes"] if "image" not in v]
            for container in pod["containers"]:
                container["volumeMounts"] = [
                    m for m in container["volumeMounts"] if m["name"] != "model"
                ]
        self.version += 1
        live["metadata"].update(
            uid=f"uid-{obj['kind']}", generation=1, resourceVersion=str(self.version)
        )
        if obj["kind"] == "Deployment":
            live["status"] = DONE  # the cluster converged at once
        return live

    def delete(self, *args: Any) -> None:
        raise AssertionError(f"unexpected delete {args}")

    def patch_status(self, namespace: str, name: str, status: dict[str, Any]) -> None:
        self.statuses.append(status)
        server = self.store.servers[(namespace, name)]
        self.store.put_server({**server, "status": status})  # as the watch event would

    def event(self, server: dict[str, Any], type_: str, reason: str, message: str) -> None:
        self.events.append((type_, reason, message))

    def pod_events(self, namespace: str, pod: str) -> list[dict[str, Any]]:
        self.pod_event_lists.append(pod)
        return self.pod_event_items.get(pod, [])


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def setup(spec: dict[str, Any] = SPEC) -> tuple[Reconciler, FakeApi, Store, Clock]:
    store = Store()
    store.put_server(
        {
            "apiVersion": "serving.qms.io/v1alpha1",
            "kind": "QwenModelServer",
            "metadata": {"name": "s", "namespace": "ns", "uid": "uid-s", "generation": 1},
            "spec": spec,
        }
    )
    api = FakeApi(store)
    clock = Clock()
    return Reconciler(api, store, clock=clock), api, store, clock  # type: ignore[arg-type]


def reconcile(reconciler: Reconciler) -> bool:
    async def once() -> bool:
        ok = await reconciler.reconcile(KEY)
        await asyncio.gather(*list(reconciler.announce.events))
        return ok

    return asyncio.run(once())


def status(store: Store) -> dict[str, Any]:
    return store.servers[KEY]["status"]  # type: ignore[no-any-return]


def condition(store: Store, kind: str) -> tuple[str, str, str]:
    [c] = [c for c in status(store)["conditions"] if c["type"] == kind]
    return c["status"], c["reason"], c["message"]


def warnings(api: FakeApi) -> list[tuple[str, str]]:
    return [(reason, message) for type_, reason, message in api.events if type_ == "Warning"]


REFUSED = "apply NetworkPolicy s: 403 networkpolicies is forbidden"


def test_a_refused_child_holds_no_other_back_and_only_its_retry_backs_off() -> None:
    reconciler, api, store, clock = setup()
    api.answers["NetworkPolicy"] = ApiError(REFUSED, 403)
    assert reconcile(reconciler) is False
    assert sorted(api.applied) == ["Deployment", "PodDisruptionBudget", "Service"]
    assert condition(store, "Stalled") == ("True", "ApplyFailed", REFUSED)
    assert warnings(api) == [("ApplyFailed", REFUSED)]  # one Warning, not two

    # The Service deleted by hand, at once: repaired; the refused apply is not retried.
    store.put_child(store.children(KEY)["Service"], deleted=True)
    assert reconcile(reconciler) is False
    assert api.attempts.count("Service") == 2
    assert api.attempts.count("NetworkPolicy") == 1
    assert condition(store, "Stalled") == ("True", "ApplyFailed", REFUSED)  # still named
    assert len(warnings(api)) == 1  # the same error again: no new Event

    clock.now += 1.0  # its first backoff (1 s) is over: retried, refused again
    reconcile(reconciler)
    assert api.attempts.count("NetworkPolicy") == 2
    clock.now += 1.5  # within the second backoff (2 s): not retried
    reconcile(reconciler)
    assert api.attempts.count("NetworkPolicy") == 2
    clock.now += 0.5
    del api.answers["NetworkPolicy"]  # the policy that refused it was lifted
    assert reconcile(reconciler) is True
    assert api.attempts.count("NetworkPolicy") == 3
    assert condition(store, "Stalled")[0] == "False"
    reconcile(reconciler)  # the round after the last apply
    assert condition(store, "Ready")[0] == "True"


def test_a_field_the_api_server_does_not_keep_stalls_instead_of_a_write_per_reconcile() -> None:
    image = {"image": {"reference": "ghcr.io/acme/qwen3-weights:1"}}
    reconciler, api, store, clock = setup({**SPEC, "model": {"name": "m", "source": image}})
    api.drop_image_volumes = True
    assert reconcile(reconciler) is False
    message = (
        "apply Deployment s: the API server did not keep spec.template.spec.containers[0]"
        ".volumeMounts, spec.template.spec.volumes: model.source.image needs image "
        "volumes, behind the ImageVolume feature gate of the API server (and kubelet) "
        "before Kubernetes 1.35"
    )
    assert condition(store, "Stalled") == ("True", "ApplyFailed", message)
    assert warnings(api) == [("ApplyFailed", message)]
    for _ in range(3):  # within its backoff: not applied again, on any trigger
        reconcile(reconciler)
    assert api.attempts.count("Deployment") == 1
    clock.now += 1.0
    reconcile(reconciler)
    assert api.attempts.count("Deployment") == 2
    assert len(warnings(api)) == 1


def test_a_changed_spec_retries_a_refused_child_at_once() -> None:
    reconciler, api, store, _ = setup()
    api.answers["NetworkPolicy"] = ApiError(REFUSED, 403)
    reconcile(reconciler)
    server = store.servers[KEY]
    spec = {**SPEC, "networkPolicy": {"allowedPods": {"team": "a"}}}
    store.put_server({**server, "spec": spec, "metadata": {**server["metadata"], "generation": 2}})
    reconcile(reconciler)
    assert api.attempts.count("NetworkPolicy") == 2


MONITORED = {**SPEC, "monitoring": {"serviceMonitor": True}}


def test_a_service_monitor_not_served_leaves_the_server_ready() -> None:
    reconciler, api, store, clock = setup(MONITORED)
    api.answers["ServiceMonitor"] = NotServed("monitoring.coreos.com/v1", "ServiceMonitor")
    assert reconcile(reconciler) is False  # retried (backoff), to see the CRD arrive
    reconcile(reconciler)  # the Deployment's status now seen: Ready
    assert condition(store, "Ready")[:2] == ("True", "Ready")
    assert condition(store, "Stalled")[0] == "False"
    state, reason, message = condition(store, "MonitoringReady")
    assert (state, reason) == ("False", "ServiceMonitorNotServed")
    assert message.startswith("ServiceMonitor not created: monitoring.coreos.com/v1 is not")
    assert status(store)["phase"] == "Ready"
    assert status(store)["reason"] == f"1/1 replicas ready; {message}"
    [monitor] = [c for c in status(store)["children"] if c["kind"] == "ServiceMonitor"]
    assert (monitor["ready"], monitor["message"]) == (False, message)
    assert warnings(api) == [("ServiceMonitorNotServed", message)]
    patches = len(api.statuses)
    for _ in range(3):  # retries change nothing: no write, no Event
        clock.now += 60
        assert reconcile(reconciler) is False
    assert (len(api.statuses), len(warnings(api))) == (patches, 1)

    del api.answers["ServiceMonitor"]  # its CRD installed
    assert reconcile(reconciler) is True
    assert api.applied.count("ServiceMonitor") == 1
    assert condition(store, "MonitoringReady")[:2] == ("True", "ServiceMonitorCreated")
    reconcile(reconciler)  # the round after the apply
    assert status(store)["reason"] == "1/1 replicas ready"
    assert condition(store, "Ready")[0] == "True"


def test_a_required_kind_not_served_stalls() -> None:
    reconciler, api, store, _ = setup()
    api.answers["PodDisruptionBudget"] = NotServed("policy/v1", "PodDisruptionBudget")
    assert reconcile(reconciler) is False
    assert condition(store, "Stalled") == (
        "True",
        "ApplyFailed",
        "PodDisruptionBudget (policy/v1) is not served by this cluster",
    )


def test_an_unexpected_exception_becomes_one_event_and_a_stalled_reason() -> None:
    reconciler, api, store, _ = setup()
    api.answers["Deployment"] = KeyError("resources")  # what the discovery race raised
    for _ in range(3):
        assert reconcile(reconciler) is False
    message = (
        "reconcile failed unexpectedly (KeyError: 'resources'); retrying, see the operator log"
    )
    assert warnings(api) == [("ReconcileError", message)]  # once, not once per retry
    assert len(api.statuses) == 1
    assert condition(store, "Stalled") == ("True", "ReconcileError", message)
    assert condition(store, "Ready")[:2] == ("False", "ReconcileError")
    assert (status(store)["observedGeneration"], status(store)["reason"]) == (1, message)

    del api.answers["Deployment"]
    assert reconcile(reconciler) is True
    assert condition(store, "Stalled")[0] == "False"


def test_an_invalid_spec_is_reported_once() -> None:
    reconciler, api, store, _ = setup({**SPEC, "replicas": -1})
    for _ in range(3):
        assert reconcile(reconciler) is True
    assert len(api.statuses) == 1
    assert [reason for reason, _ in warnings(api)] == ["InvalidSpec"]
    assert condition(store, "Stalled")[:2] == ("True", "InvalidSpec")
    assert status(store)["phase"] == "Failed"


SEED_ON_T4 = {
    "model": {"name": "qwen3-omni-30b-a3b-instruct", "source": {"imagePath": "/models/omni"}},
    "resources": {"gpu": {"count": 1, "acceleratorTypes": ["nvidia-tesla-t4"]}},
}
DOES_NOT_FIT = (
    "qwen3-omni-30b-a3b-instruct does not fit: it needs at least 65.0 GiB per replica "
    "(weights 59.1 GiB at bfloat16, KV cache 3.0 GiB for 32,768 tokens, headroom 3.0 GiB) "
    "but 1 x T4 has 15.0 GiB; use resources.gpu.count: 5 (T4), or acceleratorTypes "
    "[nvidia-a100-80gb] (one A100 80GB holds it)"
)


def test_a_model_too_big_for_its_gpus_applies_nothing_and_stalls_once() -> None:
    """The seed article's example: Qwen3-Omni-30B-A3B-Instruct on one T4."""
    reconciler, api, store, _ = setup(SEED_ON_T4)
    for _ in range(3):
        assert reconcile(reconciler) is True
    assert api.attempts == []  # no child, so no pod pulls an image to find out
    assert len(api.statuses) == 1
    assert warnings(api) == [("DoesNotFit", DOES_NOT_FIT)]
    assert condition(store, "Stalled") == ("True", "DoesNotFit", DOES_NOT_FIT)
    assert condition(store, "Ready")[:2] == ("False", "DoesNotFit")
    assert (status(store)["phase"], status(store)["reason"]) == ("Failed", DOES_NOT_FIT)

    server = store.servers[KEY]
    gpu = {"count": 1, "acceleratorTypes": ["nvidia-tesla-t4", "nvidia-h200"]}
    spec = {**SEED_ON_T4, "resources": {"gpu": gpu}}
    store.put_server({**server, "spec": spec, "metadata": {**server["metadata"], "generation": 2}})
    assert reconcile(reconciler) is True  # an H200 holds it: everything is applied
    assert sorted(api.applied) == ["Deployment", "NetworkPolicy", "PodDisruptionBudget", "Service"]
    assert condition(store, "Stalled")[:2] == ("False", "NotStalled")
    assert len(warnings(api)) == 1


def test_fit_check_false_leaves_the_check_to_the_runtime() -> None:
    gpu = {**SEED_ON_T4["resources"]["gpu"], "fitCheck": False}  # type: ignore[index]
    reconciler, api, _, _ = setup({**SEED_ON_T4, "resources": {"gpu": gpu}})
    assert reconcile(reconciler) is True
    assert "Deployment" in api.applied
    assert warnings(api) == []


def test_a_preset_fills_the_children_and_the_status_shows_what_was_used() -> None:
    """The seed example with the preset and no gpu.count: five T4s hold it."""
    model = {**SEED_ON_T4["model"], "preset": "qwen3-omni-30b-a3b-instruct"}  # type: ignore[dict-item]
    gpu = {"acceleratorTypes": ["nvidia-tesla-t4"]}
    reconciler, api, store, _ = setup({"model": model, "resources": {"gpu": gpu}})
    assert reconcile(reconciler) is True
    assert warnings(api) == []
    live = store.children(KEY)["Deployment"]["spec"]["template"]["spec"]
    [runtime] = [c for c in live["containers"] if c["name"] == "runtime"]
    assert runtime["resources"]["limits"]["nvidia.com/gpu"] == "5"
    env = {e["name"]: e.get("value") for e in runtime["env"]}
    assert env["QMS_MAX_MODEL_LEN"] == "65536"
    assert status(store)["effective"] == {
        "preset": "qwen3-omni-30b-a3b-instruct",
        "gpuCount": 5,
        "maxModelLen": 65_536,
        "startupBudgetSeconds": 2400,
    }
    assert store.servers[KEY]["spec"]["resources"]["gpu"] == gpu  # never written


def test_an_unknown_preset_is_an_invalid_spec() -> None:
    model = {**SEED_ON_T4["model"], "preset": "llama-3-8b"}  # type: ignore[dict-item]
    reconciler, api, store, _ = setup({**SEED_ON_T4, "model": model})
    assert reconcile(reconciler) is True
    assert api.attempts == []
    [(reason, message)] = warnings(api)
    assert reason == "InvalidSpec" and message.startswith("model.preset 'llama-3-8b' is not")
    assert condition(store, "Stalled")[:2] == ("True", "InvalidSpec")


def test_the_children_are_built_once_per_reconcile(monkeypatch: pytest.MonkeyPatch) -> None:
    """The same desired children are applied and judged by status: built once."""
    calls: list[tuple[str, str]] = []

    def counted(server: str, namespace: str, *args: Any) -> list[dict[str, Any]]:
        calls.append((namespace, server))
        return desired_children(server, namespace, *args)

    monkeypatch.setattr("qms_operator.reconcile.desired_children", counted)
    reconciler, api, _, _ = setup()
    assert reconcile(reconciler) is True
    assert calls == [KEY]
    built = ["Deployment", "NetworkPolicy", "PodDisruptionBudget", "Service"]
    assert sorted(api.applied) == built
    assert reconcile(reconciler) is True  # nothing differs: built once more, nothing applied
    assert calls == [KEY, KEY]
    assert sorted(api.applied) == built


def test_condition_times_are_whole_seconds_in_utc() -> None:
    reconciler, _, store, _ = setup()
    reconcile(reconciler)
    stamps = {c["lastTransitionTime"] for c in status(store)["conditions"]}
    assert len(stamps) == 1
    [stamp] = stamps
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", stamp), stamp
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", utc_now())


def test_a_watch_event_older_than_the_repair_does_not_repeat_it() -> None:
    """The drift test's extra write: the repair of a hand edit is stored, then the
    watch delivers the hand-edited object's later status writes; they are older than
    the repair and bring back no drift to repair again."""
    reconciler, api, store, _ = setup()
    reconcile(reconciler)
    repaired = copy.deepcopy(store.children(KEY)["Deployment"])
    edited = copy.deepcopy(repaired)
    edited["spec"]["template"]["spec"]["containers"][0]["image"] = "evil.example.com/x:1"
    edit = api.version + 1  # the hand edit, then a status write of the controller
    edited["metadata"]["resourceVersion"] = str(edit)
    api.version = edit + 1
    store.put_child(edited)  # the hand edit's watch event
    assert reconcile(reconciler) is True
    assert api.applied.count("Deployment") == 2  # repaired once
    fixed = store.children(KEY)["Deployment"]
    assert (
        fixed["spec"]["template"]["spec"]["containers"][0]["image"]
        == (repaired["spec"]["template"]["spec"]["containers"][0]["image"])
    )
    late = copy.deepcopy(edited)  # the controller's status write of the edited object
    assert fixed["metadata"]["resourceVersion"] == str(edit + 2)
    late["metadata"]["resourceVersion"] = str(edit + 1)
    late["status"] = {**DONE, "observedGeneration": 2}
    store.put_child(late)
    assert reconcile(reconciler) is True
    assert api.applied.count("Deployment") == 2  # not written again


def crashing_pod(store: Store, name: str, message: str) -> dict[str, Any]:
    """A pod of the server's current template whose runtime crashes with ``message``."""
    template = store.children(KEY)["Deployment"]["spec"]["template"]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": "ns",
            "uid": f"uid-{name}",
            "labels": template["metadata"]["labels"],
            "annotations": template["metadata"]["annotations"],
        },
        "status": {
            "containerStatuses": [
                {
                    "name": "runtime",
                    "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                    "lastState": {
                        "terminated": {"exitCode": 1, "reason": "Error", "message": message}
                    },
                    "restartCount": 2,
                }
            ]
        },
    }


CHECKSUM = "checksum mismatch: model-00001-of-00002.safetensors (sha256 9f2c... != 0b7d...)"


def test_a_termination_message_is_announced_once_per_distinct_message() -> None:
    """issue 20: one Warning per distinct message, not per reconcile, crash or pod."""
    reconciler, api, store, _ = setup()
    reconcile(reconciler)
    store.put_child(crashing_pod(store, "s-1", CHECKSUM))
    for _ in range(3):
        reconcile(reconciler)
    said = f"pod s-1 keeps crashing (exit 1 Error): {CHECKSUM}"
    assert warnings(api) == [("CrashLoop", said)]
    assert condition(store, "Stalled") == ("True", "CrashLoop", said)
    assert status(store)["reason"] == said

    # The pod replaced by another saying the same: the message is not new.
    store.put_child(crashing_pod(store, "s-1", CHECKSUM), deleted=True)
    store.put_child(crashing_pod(store, "s-2", CHECKSUM))
    reconcile(reconciler)
    assert condition(store, "Stalled")[2] == f"pod s-2 keeps crashing (exit 1 Error): {CHECKSUM}"
    assert warnings(api) == [("CrashLoop", said)]

    # A restarted operator reads the status it wrote: still no second Event.
    restarted = Reconciler(api, store, clock=Clock())  # type: ignore[arg-type]
    reconcile(restarted)
    assert len(warnings(api)) == 1

    # A new message: a new Warning, once.
    store.put_child(crashing_pod(store, "s-2", "no space left on device"))
    reconcile(restarted)
    reconcile(restarted)
    assert warnings(api) == [
        ("CrashLoop", said),
        ("CrashLoop", "pod s-2 keeps crashing (exit 1 Error): no space left on device"),
    ]

    # Served again, then the first message again: said once more.
    store.put_child(crashing_pod(store, "s-2", ""), deleted=True)
    reconcile(restarted)
    assert condition(store, "Ready")[0] == "True"
    store.put_child(crashing_pod(store, "s-3", CHECKSUM))
    reconcile(restarted)
    reconcile(restarted)
    assert warnings(api)[2:] == [
        ("CrashLoop", f"pod s-3 keeps crashing (exit 1 Error): {CHECKSUM}")
    ]


# ---- issue 27: a restart that healed is reported once, with its cause -------------------

ACCESS_TAIL = (
    '{"ts": "2026-12-07T10:00:01.000Z", "level": "info", "logger": "qms_runtime.access", '
    '"message": "POST /v1/chat/completions 200", "status": 200}\n'
    '{"ts": "2026-12-07T10:00:02.000Z", "level": "info", "logger": "qms_runtime.access", '
    '"message": "GET /v1/models 200", "status": 200}\n'
)


def restarted_pod(
    store: Store, name: str, *, reason: str = "Error", ready: bool = True, count: int = 1
) -> dict[str, Any]:
    """A runtime container that was killed (exit 137) and runs again, Ready or not yet."""
    pod = crashing_pod(store, name, ACCESS_TAIL)
    [cs] = pod["status"]["containerStatuses"]
    cs.update(
        state={"running": {"startedAt": "2026-12-07T10:00:05Z"}},
        ready=ready,
        restartCount=count,
    )
    cs["lastState"]["terminated"].update(
        exitCode=137, reason=reason, finishedAt="2026-12-07T10:00:04Z"
    )
    return pod


LIVENESS_KILL = {
    "reason": "Killing",
    "type": "Normal",
    "message": "Container runtime failed liveness probe, will be restarted",
}


@pytest.mark.parametrize(
    ("reason", "events", "cause"),
    [
        ("Error", [], "it was killed (SIGKILL, exit 137)"),
        ("OOMKilled", [], "it ran out of memory (OOMKilled)"),
        ("Error", [LIVENESS_KILL], "its liveness probe failed"),
    ],
)
def test_a_single_restart_that_healed_is_ready_and_reported_once_with_its_cause(
    reason: str, events: list[dict[str, Any]], cause: str
) -> None:
    reconciler, api, store, _ = setup()
    reconcile(reconciler)
    api.pod_event_items["s-1"] = events
    store.put_child(restarted_pod(store, "s-1", reason=reason))
    for _ in range(3):
        reconcile(reconciler)
    assert condition(store, "Ready") == ("True", "Ready", "1/1 replicas ready")
    assert condition(store, "Stalled")[:2] == ("False", "NotStalled")
    # One Event, the cause named, no access-log line as "last words".
    assert warnings(api) == [
        ("Restarted", f"pod s-1: container runtime restarted (restart 1) because {cause}")
    ]
    assert api.pod_event_lists == ["s-1"]  # the pod's Events read once for this restart

    # Restarting once more, not Ready yet: progressing, not stalled, not reported yet
    # (a container that never gets Ready again is a crash loop: the Stalled Warning).
    store.put_child(restarted_pod(store, "s-1", reason=reason, ready=False, count=2))
    reconcile(reconciler)
    assert condition(store, "Stalled")[:2] == ("False", "NotStalled")
    assert len(warnings(api)) == 1
    assert api.pod_event_lists == ["s-1", "s-1"]  # its cause looked up at once
    # Ready again: reported, once.
    store.put_child(restarted_pod(store, "s-1", reason=reason, ready=True, count=2))
    reconcile(reconciler)
    reconcile(reconciler)
    assert len(warnings(api)) == 2 and warnings(api)[1][1].startswith(
        "pod s-1: container runtime restarted (restart 2) because"
    )
