"""The runtime pod template: container, probes, volumes, security and placement."""

from __future__ import annotations

import hashlib
import json
import math
from typing import Any

from ..spec import QwenModelServerSpec
from ..spec.model import MODEL_MOUNT_PATH, HuggingFaceSource
from ..spec.quantity import parse_quantity
from .names import (
    HTTP_PORT,
    LABEL_REVISION,
    SPEC_HASH_ANNOTATION,
    child_labels,
    quantity,
    selector_labels,
)

CONTAINER = "runtime"
# Qwen3-Omni's talker and code2wav, loaded only for speech output (about 3B
# parameters in bf16, with headroom).
AUDIO_OUTPUT_MEMORY = 8 * 2**30
API_KEY_DIR = "/var/run/secrets/qms"
PRESTOP_SLEEP_SECONDS = 5
RUN_AS_USER = 65532  # the runtime image's user
# Where the runtime writes its last words (the Kubernetes default, set explicitly).
TERMINATION_MESSAGE_PATH = "/dev/termination-log"
# Weights from the Hugging Face Hub: the init container that downloads them.
DOWNLOAD_CONTAINER = "download"
HUB_TOKEN_DIR = "/var/run/secrets/huggingface"
DOWNLOAD_RESOURCES = {
    "requests": {"cpu": "500m", "memory": "512Mi"},
    "limits": {"cpu": "2", "memory": "2Gi"},
}


def spec_hash(spec: QwenModelServerSpec) -> str:
    """Hash of what the pods run (model and runtime); a change rolls the pods.

    A field added later (the image and huggingFace sources, model.preset) is left out
    while unset, so that upgrading the operator does not roll the pods of every server.
    """
    payload = spec.model_dump(mode="json", by_alias=True, include={"model", "runtime"})
    for added in ("image", "huggingFace"):
        if payload["model"]["source"][added] is None:
            del payload["model"]["source"][added]
    if payload["model"]["preset"] is None:
        del payload["model"]["preset"]
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def model_dir(spec: QwenModelServerSpec) -> str:
    source = spec.model.source
    if source.pvc is not None:
        return f"{MODEL_MOUNT_PATH}/{source.pvc.sub_path}".rstrip("/")
    if source.image is not None:
        return f"{MODEL_MOUNT_PATH}/{source.image.sub_path}".rstrip("/")
    if source.hugging_face is not None:
        return hub_snapshot_dir(source.hugging_face)
    assert source.image_path is not None
    return source.image_path


def hub_repo(hub: HuggingFaceSource) -> str:
    """The Hub repository: the spec's, or its preset's (catalog/presets.py fills it in
    before the builders run; the CRD refuses a source with neither)."""
    if hub.repo_id is None:
        raise ValueError(
            "source.huggingFace.repoId is required unless model.preset names the model"
        )
    return hub.repo_id


def hub_snapshot_dir(hub: HuggingFaceSource) -> str:
    """Where `qms-runtime download` puts the snapshot in the cache claim (mounted at
    /models): <namespace>--<name>/<revision>, '/' written as '--' (its models/hub.py)."""
    repo = hub_repo(hub).replace("/", "--")
    return f"{MODEL_MOUNT_PATH}/{repo}/{hub.revision.replace('/', '--')}"


def _env(spec: QwenModelServerSpec) -> list[dict[str, str]]:
    batching = spec.runtime.batching
    env = {
        "QMS_MODEL_DIR": model_dir(spec),
        "QMS_SERVED_MODEL_NAME": spec.model.name,
        "QMS_HOST": "0.0.0.0",
        "QMS_PORT": str(HTTP_PORT),
        "QMS_DTYPE": spec.runtime.dtype,
        "QMS_QUANTIZATION": spec.runtime.quantization,
        "QMS_MAX_BATCH_SIZE": str(batching.max_batch_size),
        "QMS_MAX_BATCHED_TOKENS": str(batching.max_batched_tokens),
        "QMS_MAX_QUEUED_REQUESTS": str(batching.max_queued_requests),
        "QMS_MAX_MODEL_LEN": str(batching.max_model_len),
        "QMS_VERIFY_CHECKSUMS": str(spec.model.verify_checksums).lower(),
        "QMS_DRAIN_TIMEOUT_SECONDS": str(spec.runtime.drain_timeout_seconds),
        "QMS_AUDIO_OUTPUT": str(spec.runtime.audio_output).lower(),
        "QMS_ALLOW_REMOTE_MEDIA": str(spec.runtime.remote_media.enabled).lower(),
        "QMS_LOG_FORMAT": "json",
        "HF_HOME": "/tmp/hf-home",
        "HF_HUB_OFFLINE": "1",
    }
    if spec.runtime.remote_media.allowed_domains:
        env["QMS_ALLOWED_MEDIA_DOMAINS"] = ",".join(spec.runtime.remote_media.allowed_domains)
    if spec.api_key_secret is not None:
        env["QMS_API_KEY_FILE"] = f"{API_KEY_DIR}/api-key"
    listed = [{"name": k, "value": v} for k, v in env.items()]
    return listed + [{"name": e.name, "value": e.value} for e in spec.runtime.env]


def _memory(value: int | str, spec: QwenModelServerSpec) -> str:
    """Memory as given, plus the talker's share when speech output is on."""
    if not spec.runtime.audio_output:
        return quantity(value)
    total = parse_quantity(quantity(value))
    assert total is not None  # the spec's pattern admits only quantities
    total += AUDIO_OUTPUT_MEMORY
    gib = total / 2**30
    return f"{gib.normalize():f}Gi" if gib == gib.to_integral_value() else str(int(total))


def _resources(spec: QwenModelServerSpec) -> dict[str, Any]:
    res = spec.resources
    requests = {"cpu": quantity(res.requests.cpu), "memory": _memory(res.requests.memory, spec)}
    limits = {"cpu": quantity(res.limits.cpu), "memory": _memory(res.limits.memory, spec)}
    if res.gpu.count > 0:
        requests[res.gpu.resource_name] = str(res.gpu.count)
        limits[res.gpu.resource_name] = str(res.gpu.count)
    return {"requests": requests, "limits": limits}


def _probes(spec: QwenModelServerSpec) -> dict[str, Any]:
    probes = spec.probes

    def http(path: str, period: int, timeout: int, failures: int) -> dict[str, Any]:
        return {
            "httpGet": {"path": path, "port": "http", "scheme": "HTTP"},
            "periodSeconds": period,
            "timeoutSeconds": timeout,
            "failureThreshold": failures,
            "successThreshold": 1,
        }

    startup = probes.startup
    return {
        "startupProbe": http(
            "/health",
            startup.period_seconds,
            5,
            math.ceil(startup.budget_seconds / startup.period_seconds),
        ),
        "livenessProbe": http(
            "/health",
            probes.liveness.period_seconds,
            probes.liveness.timeout_seconds,
            probes.liveness.failure_threshold,
        ),
        "readinessProbe": http(
            "/ready",
            probes.readiness.period_seconds,
            probes.readiness.timeout_seconds,
            probes.readiness.failure_threshold,
        ),
    }


def _volumes(spec: QwenModelServerSpec) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Volumes and mounts: the weights, writable scratch for a read-only root, the API key."""
    volumes: list[dict[str, Any]] = [
        {"name": "tmp", "emptyDir": {"sizeLimit": "8Gi"}},
        {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "2Gi"}},
    ]
    mounts: list[dict[str, Any]] = [
        {"name": "tmp", "mountPath": "/tmp"},
        {"name": "dshm", "mountPath": "/dev/shm"},
    ]
    pvc = spec.model.source.pvc
    if pvc is not None:
        volumes.append(
            {
                "name": "model",
                "persistentVolumeClaim": {"claimName": pvc.claim_name, "readOnly": True},
            }
        )
        mounts.append({"name": "model", "mountPath": MODEL_MOUNT_PATH, "readOnly": True})
    image = spec.model.source.image
    if image is not None:
        # An image volume (KEP-4639): the node pulls the weights image, read-only.
        volumes.append(
            {
                "name": "model",
                "image": {"reference": image.reference, "pullPolicy": image.pull_policy},
            }
        )
        mounts.append({"name": "model", "mountPath": MODEL_MOUNT_PATH, "readOnly": True})
    hub = spec.model.source.hugging_face
    if hub is not None:
        # The cache claim: the download container writes it, the runtime only reads.
        volumes.append({"name": "model", "persistentVolumeClaim": {"claimName": hub.cache_claim}})
        mounts.append({"name": "model", "mountPath": MODEL_MOUNT_PATH, "readOnly": True})
        if hub.token_secret is not None:
            volumes.append(
                {
                    "name": "hub-token",
                    "secret": {
                        "secretName": hub.token_secret.name,
                        "items": [{"key": hub.token_secret.key, "path": "token"}],
                        "defaultMode": 0o440,
                    },
                }
            )
    if spec.api_key_secret is not None:
        volumes.append(
            {
                "name": "api-key",
                "secret": {
                    "secretName": spec.api_key_secret.name,
                    "items": [{"key": spec.api_key_secret.key, "path": "api-key"}],
                    "defaultMode": 0o440,
                },
            }
        )
        mounts.append({"name": "api-key", "mountPath": API_KEY_DIR, "readOnly": True})
    return volumes, mounts


def _security_context() -> dict[str, Any]:
    return {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def _download_container(spec: QwenModelServerSpec, hub: HuggingFaceSource) -> dict[str, Any]:
    """The init container: `qms-runtime download` into the cache claim, once per
    revision (a lock and a completion marker there); the runtime starts after it."""
    command = [
        "qms-runtime",
        "download",
        "--repo-id",
        hub_repo(hub),
        "--revision",
        hub.revision,
        "--cache-dir",
        MODEL_MOUNT_PATH,
    ]
    mounts: list[dict[str, Any]] = [
        {"name": "tmp", "mountPath": "/tmp"},
        {"name": "model", "mountPath": MODEL_MOUNT_PATH},
    ]
    if hub.token_secret is not None:
        command += ["--token-file", f"{HUB_TOKEN_DIR}/token"]
        mounts.append({"name": "hub-token", "mountPath": HUB_TOKEN_DIR, "readOnly": True})
    env = [{"name": "HF_HOME", "value": "/tmp/hf-home"}]
    return {
        "name": DOWNLOAD_CONTAINER,
        "image": spec.runtime.image,
        "imagePullPolicy": spec.runtime.image_pull_policy,
        "command": command,
        "env": env + [{"name": e.name, "value": e.value} for e in spec.runtime.env],
        "resources": json.loads(json.dumps(DOWNLOAD_RESOURCES)),
        "terminationMessagePath": TERMINATION_MESSAGE_PATH,
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "securityContext": _security_context(),
        "volumeMounts": mounts,
    }


def _container(spec: QwenModelServerSpec, mounts: list[dict[str, Any]]) -> dict[str, Any]:
    container: dict[str, Any] = {
        "name": CONTAINER,
        "image": spec.runtime.image,
        "imagePullPolicy": spec.runtime.image_pull_policy,
        "command": ["qms-runtime", "serve"],
        "env": _env(spec),
        "ports": [{"name": "http", "containerPort": HTTP_PORT, "protocol": "TCP"}],
        "resources": _resources(spec),
        **_probes(spec),
        # Let endpoints drop the pod before the runtime starts draining.
        "lifecycle": {"preStop": {"sleep": {"seconds": PRESTOP_SLEEP_SECONDS}}},
        # The runtime writes a fatal start-up error here (one line); a crash without
        # one leaves the log's tail instead. Status and a Warning Event carry either.
        "terminationMessagePath": TERMINATION_MESSAGE_PATH,
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "securityContext": _security_context(),
        "volumeMounts": mounts,
    }
    if spec.runtime.args:
        container["args"] = list(spec.runtime.args)
    return container


def _affinity(spec: QwenModelServerSpec) -> dict[str, Any]:
    """The user's affinity, with the accelerator rule added to its required node terms."""
    affinity = json.loads(json.dumps(spec.scheduling.affinity))
    gpu = spec.resources.gpu
    if not gpu.accelerator_types:
        return dict(affinity)
    expression = {
        "key": gpu.accelerator_label_key,
        "operator": "In",
        "values": list(gpu.accelerator_types),
    }
    node = affinity.setdefault("nodeAffinity", {})
    required = node.setdefault("requiredDuringSchedulingIgnoredDuringExecution", {})
    terms = required.setdefault("nodeSelectorTerms", [])
    if not terms:
        terms.append({"matchExpressions": []})
    # Terms are ORed: the accelerator rule must hold in each of them.
    for term in terms:
        term.setdefault("matchExpressions", []).append(expression)
    return dict(affinity)


def _spread(server: str, spec: QwenModelServerSpec) -> list[dict[str, Any]]:
    spread = spec.scheduling.topology_spread
    if not spread.enabled:
        return []
    return [
        {
            "maxSkew": spread.max_skew,
            "topologyKey": key,
            "whenUnsatisfiable": spread.when_unsatisfiable,
            "labelSelector": {"matchLabels": selector_labels(server)},
            # Count only pods of the same rollout, so a rollout spreads too.
            "matchLabelKeys": ["pod-template-hash"],
        }
        for key in spread.topology_keys
    ]


def pod_template(server: str, spec: QwenModelServerSpec) -> dict[str, Any]:
    """The Deployment's pod template."""
    labels = child_labels(server)
    if spec.model.revision:
        labels[LABEL_REVISION] = spec.model.revision
    annotations = {SPEC_HASH_ANNOTATION: spec_hash(spec)}
    if spec.monitoring.scrape_annotations:
        annotations |= {
            "prometheus.io/scrape": "true",
            "prometheus.io/port": str(HTTP_PORT),
            "prometheus.io/path": "/metrics",
        }
    volumes, mounts = _volumes(spec)
    scheduling = spec.scheduling
    pod: dict[str, Any] = {
        "containers": [_container(spec, mounts)],
        "volumes": volumes,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": RUN_AS_USER,
            "runAsGroup": RUN_AS_USER,
            "fsGroup": RUN_AS_USER,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "terminationGracePeriodSeconds": spec.runtime.drain_timeout_seconds
        + PRESTOP_SLEEP_SECONDS
        + 10,
    }
    optional: dict[str, Any] = {
        "imagePullSecrets": [{"name": n} for n in spec.runtime.image_pull_secrets],
        "nodeSelector": dict(scheduling.node_selector),
        "affinity": _affinity(spec),
        "tolerations": [
            t.model_dump(by_alias=True, exclude_none=True, exclude_defaults=True)
            | {"operator": t.operator}
            for t in scheduling.tolerations
        ],
        "priorityClassName": scheduling.priority_class_name,
        "topologySpreadConstraints": _spread(server, spec),
    }
    hub = spec.model.source.hugging_face
    if hub is not None:
        optional["initContainers"] = [_download_container(spec, hub)]
    pod.update({k: v for k, v in optional.items() if v})
    return {"metadata": {"labels": labels, "annotations": annotations}, "spec": pod}
