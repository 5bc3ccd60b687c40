"""Pure builders: exact children for exact specs."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from qms_operator.builders import desired_children, unwanted_kinds
from qms_operator.builders.pod import spec_hash
from qms_operator.spec import QwenModelServerSpec, parse_spec
from qms_testkit.examples import ROOT, load_yaml

HERE = Path(__file__).resolve().parent
SEED = load_yaml(ROOT / "deploy" / "examples" / "seed-faithful.yaml")
MINIMAL = {"model": {"name": "qwen3-small", "source": {"imagePath": "/models/q"}}}


def build(spec: dict[str, Any], name: str = "qwen3-omni") -> dict[str, dict[str, Any]]:
    children = desired_children(name, "models", "uid-1", parse_spec(spec))
    return {c["kind"]: c for c in children}


def deployment_pod(spec: dict[str, Any]) -> dict[str, Any]:
    pod: dict[str, Any] = build(spec)["Deployment"]["spec"]["template"]["spec"]
    return pod


def with_(base: dict[str, Any], **parts: Any) -> dict[str, Any]:
    return {**base, **parts}


def test_seed_example_gives_exactly_the_expected_children() -> None:
    expected = list(yaml.safe_load_all((HERE / "fixtures/seed-faithful-children.yaml").read_text()))
    actual = desired_children("qwen3-omni", "models", "uid-1", parse_spec(SEED["spec"]))
    assert [c["kind"] for c in actual] == [
        "Service",
        "Deployment",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
        "NetworkPolicy",
        "Ingress",
    ]
    for want, got in zip(expected, actual, strict=True):
        assert got == want, got["kind"]


def test_seed_values_reach_the_pod() -> None:
    pod = deployment_pod(SEED["spec"])
    container = pod["containers"][0]
    assert container["resources"] == {
        "requests": {"cpu": "4", "memory": "32Gi", "nvidia.com/gpu": "1"},
        "limits": {"cpu": "8", "memory": "64Gi", "nvidia.com/gpu": "1"},
    }
    assert container["livenessProbe"]["httpGet"] == {
        "path": "/health",
        "port": "http",
        "scheme": "HTTP",
    }
    assert container["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert container["ports"] == [{"name": "http", "containerPort": 8080, "protocol": "TCP"}]
    # Seed 4.2: no initialDelaySeconds; a startup probe with a 30 minute budget instead.
    assert "initialDelaySeconds" not in container["livenessProbe"]
    startup = container["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] == 1800
    assert pod["tolerations"] == [
        {"key": "spot", "operator": "Equal", "value": "true", "effect": "NoSchedule"}
    ]
    assert pod["affinity"] == {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [
                    {
                        "matchExpressions": [
                            {"key": "accelerator", "operator": "In", "values": ["nvidia-tesla-t4"]}
                        ]
                    }
                ]
            }
        }
    }


def test_autoscaling_owns_replicas() -> None:
    on = build(SEED["spec"])
    assert "replicas" not in on["Deployment"]["spec"]
    off = build(with_(SEED["spec"], autoscaling={"enabled": False}, replicas=3))
    assert off["Deployment"]["spec"]["replicas"] == 3
    assert "HorizontalPodAutoscaler" not in off


def test_optional_children_follow_their_switches() -> None:
    spec = with_(
        MINIMAL,
        networkPolicy={"enabled": False},
        podDisruptionBudget={"enabled": False},
    )
    assert sorted(build(spec)) == ["Deployment", "Service"]
    assert unwanted_kinds(parse_spec(spec)) == [
        ("autoscaling/v2", "HorizontalPodAutoscaler"),
        ("policy/v1", "PodDisruptionBudget"),
        ("networking.k8s.io/v1", "NetworkPolicy"),
        ("networking.k8s.io/v1", "Ingress"),
        ("inference.networking.k8s.io/v1", "InferencePool"),
        ("gateway.networking.k8s.io/v1", "HTTPRoute"),
        ("monitoring.coreos.com/v1", "ServiceMonitor"),
    ]
    monitored = build(with_(MINIMAL, monitoring={"serviceMonitor": True}))
    assert monitored["ServiceMonitor"]["spec"] == {
        "jobLabel": "app.kubernetes.io/name",
        "podTargetLabels": ["app.kubernetes.io/instance"],
        "selector": {
            "matchLabels": {
                "app.kubernetes.io/name": "qms-runtime",
                "app.kubernetes.io/instance": "qwen3-omni",
            }
        },
        "endpoints": [{"port": "http", "path": "/metrics", "interval": "30s"}],
    }


def test_defaults_are_the_seed_values() -> None:
    spec = parse_spec(MINIMAL)
    assert spec.resources.requests.cpu == "4" and spec.resources.requests.memory == "32Gi"
    assert spec.resources.limits.cpu == "8" and spec.resources.limits.memory == "64Gi"
    assert spec.resources.gpu.count == 1
    assert (spec.autoscaling.min_replicas, spec.autoscaling.max_replicas) == (2, 10)
    assert spec.autoscaling.target_cpu_utilization == 70
    assert spec.network_policy.enabled and spec.pod_disruption_budget.enabled


def test_safe_pod_defaults() -> None:
    pod = deployment_pod(MINIMAL)
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["automountServiceAccountToken"] is False
    sc = pod["containers"][0]["securityContext"]
    assert sc == {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    assert [m["mountPath"] for m in pod["containers"][0]["volumeMounts"]] == ["/tmp", "/dev/shm"]
    assert pod["topologySpreadConstraints"][0]["topologyKey"] == "kubernetes.io/hostname"
    assert pod["terminationGracePeriodSeconds"] == 45


def test_user_affinity_is_merged_with_the_accelerator_rule() -> None:
    zone = {"key": "topology.kubernetes.io/zone", "operator": "In", "values": ["zone-a"]}
    spec = with_(
        MINIMAL,
        resources={
            "gpu": {"count": 2, "acceleratorTypes": ["nvidia-h200"], "resourceName": "amd.com/gpu"}
        },
        scheduling={
            "affinity": {
                "nodeAffinity": {
                    "requiredDuringSchedulingIgnoredDuringExecution": {
                        "nodeSelectorTerms": [{"matchExpressions": [zone]}]
                    }
                }
            }
        },
    )
    pod = deployment_pod(spec)
    terms = pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][
        "nodeSelectorTerms"
    ]
    assert terms == [
        {
            "matchExpressions": [
                zone,
                {"key": "accelerator", "operator": "In", "values": ["nvidia-h200"]},
            ]
        }
    ]
    assert pod["containers"][0]["resources"]["limits"]["amd.com/gpu"] == "2"
    # The parsed spec is not changed by building.
    assert parse_spec(spec).scheduling.affinity["nodeAffinity"][
        "requiredDuringSchedulingIgnoredDuringExecution"
    ] == {"nodeSelectorTerms": [{"matchExpressions": [zone]}]}


def test_cpu_only_server_has_no_gpu_resource() -> None:
    pod = deployment_pod(load_yaml(ROOT / "deploy/examples/minimal-cpu.yaml")["spec"])
    assert pod["containers"][0]["resources"] == {
        "requests": {"cpu": "2", "memory": "4Gi"},
        "limits": {"cpu": "4", "memory": "8Gi"},
    }
    assert "affinity" not in pod
    env = {e["name"]: e["value"] for e in pod["containers"][0]["env"]}
    assert env["QMS_MODEL_DIR"] == "/models/qwen3-0.6b"


def test_api_key_is_mounted_never_read() -> None:
    pod = deployment_pod(with_(MINIMAL, apiKeySecret={"name": "qwen-key"}))
    assert {
        "name": "api-key",
        "secret": {
            "secretName": "qwen-key",
            "items": [{"key": "api-key", "path": "api-key"}],
            "defaultMode": 0o440,
        },
    } in pod["volumes"]
    env = {e["name"]: e["value"] for e in pod["containers"][0]["env"]}
    assert env["QMS_API_KEY_FILE"] == "/var/run/secrets/qms/api-key"


def test_spec_hash_changes_with_what_pods_run_only() -> None:
    base = parse_spec(MINIMAL)
    image = parse_spec(with_(MINIMAL, runtime={"image": "example.com/other:1"}))
    scaled = parse_spec(
        with_(MINIMAL, replicas=4, ingress={"enabled": True, "host": "a.example.com"})
    )
    assert spec_hash(base) != spec_hash(image)
    assert spec_hash(base) == spec_hash(scaled)


def test_network_policy_peers() -> None:
    spec = with_(
        SEED["spec"],
        networkPolicy={"allowedNamespaces": {"team": "apps"}, "allowedPods": {"role": "client"}},
    )
    rule = build(spec)["NetworkPolicy"]["spec"]["ingress"]
    assert rule == [
        {
            "from": [
                {"podSelector": {"matchLabels": {"role": "client"}}},
                {
                    "namespaceSelector": {"matchLabels": {"team": "apps"}},
                    "podSelector": {"matchLabels": {"role": "client"}},
                },
                {
                    "namespaceSelector": {
                        "matchLabels": {"kubernetes.io/metadata.name": "monitoring"}
                    }
                },
                {
                    "namespaceSelector": {
                        "matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}
                    }
                },
            ],
            "ports": [{"protocol": "TCP", "port": 8080}],
        }
    ]


GATEWAY = {"enabled": True, "parentRefs": [{"name": "inference-gw", "namespace": "gateways"}]}
OWNER = {
    "apiVersion": "serving.qms.io/v1alpha1",
    "kind": "QwenModelServer",
    "name": "qwen3-omni",
    "uid": "uid-1",
    "controller": True,
    "blockOwnerDeletion": False,
}
LABELS = {
    "app.kubernetes.io/name": "qms-runtime",
    "app.kubernetes.io/instance": "qwen3-omni",
    "app.kubernetes.io/managed-by": "qms-operator",
    "app.kubernetes.io/component": "model-server",
}


def test_http_route_defaults_to_the_ingress_paths_and_the_service() -> None:
    route = build(with_(MINIMAL, gateway=GATEWAY))["HTTPRoute"]
    assert route == {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {
            "name": "qwen3-omni",
            "namespace": "models",
            "labels": LABELS,
            "ownerReferences": [OWNER],
        },
        "spec": {
            "parentRefs": [
                {
                    "group": "gateway.networking.k8s.io",
                    "kind": "Gateway",
                    "name": "inference-gw",
                    "namespace": "gateways",
                }
            ],
            "rules": [
                {
                    "matches": [{"path": {"type": "PathPrefix", "value": "/v1"}}],
                    "backendRefs": [
                        {
                            "group": "",
                            "kind": "Service",
                            "name": "qwen3-omni",
                            "port": 8080,
                            "weight": 1,
                        }
                    ],
                }
            ],
        },
    }


def test_http_route_to_the_inference_pool() -> None:
    children = build(
        with_(
            MINIMAL,
            model={**MINIMAL["model"], "revision": "2026-11"},
            gateway={
                **GATEWAY,
                "hostnames": ["model.example.com", "*.models.example.com"],
                "paths": ["/v1/chat/completions", "/v1/completions"],
                "pathType": "Exact",
                "annotations": {"team": "ml"},
            },
            inferencePool={"enabled": True},
        )
    )
    assert list(children) == [
        "Service",
        "Deployment",
        "PodDisruptionBudget",
        "NetworkPolicy",
        "InferencePool",
        "HTTPRoute",
    ]
    route = children["HTTPRoute"]
    assert route["metadata"]["annotations"] == {"team": "ml"}
    assert route["spec"]["hostnames"] == ["model.example.com", "*.models.example.com"]
    assert route["spec"]["rules"] == [
        {
            "matches": [
                {"path": {"type": "Exact", "value": "/v1/chat/completions"}},
                {"path": {"type": "Exact", "value": "/v1/completions"}},
            ],
            "backendRefs": [
                {
                    "group": "inference.networking.k8s.io",
                    "kind": "InferencePool",
                    "name": "qwen3-omni",
                    "weight": 1,
                }
            ],
        }
    ]
    pool = children["InferencePool"]
    assert pool == {
        "apiVersion": "inference.networking.k8s.io/v1",
        "kind": "InferencePool",
        "metadata": {
            "name": "qwen3-omni",
            "namespace": "models",
            "labels": LABELS,
            "ownerReferences": [OWNER],
        },
        "spec": {
            "selector": {"matchLabels": LABELS},
            "targetPorts": [{"number": 8080}],
            "endpointPickerRef": {
                "group": "",
                "kind": "Service",
                "name": "qwen3-omni-epp",
                "port": {"number": 9002},
                "failureMode": "FailClose",
            },
        },
    }
    # The pod template's labels, less the revision (old pods stay in the pool).
    template = children["Deployment"]["spec"]["template"]["metadata"]["labels"]
    assert template == {**LABELS, "serving.qms.io/revision": "2026-11"}
    # The Gateway's namespace may reach the pods.
    peers = children["NetworkPolicy"]["spec"]["ingress"][0]["from"]
    assert peers[-1] == {
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "gateways"}}
    }


def test_inference_pool_with_its_own_endpoint_picker() -> None:
    picker = {"name": "shared-epp", "port": 9102, "failureMode": "FailOpen"}
    pool = build(with_(MINIMAL, inferencePool={"enabled": True, "endpointPicker": picker}))
    assert "HTTPRoute" not in pool  # a pool without a route, for a route made elsewhere
    assert pool["InferencePool"]["spec"]["endpointPickerRef"] == {
        "group": "",
        "kind": "Service",
        "name": "shared-epp",
        "port": {"number": 9102},
        "failureMode": "FailOpen",
    }


def test_weights_from_an_oci_image_are_an_image_volume() -> None:
    source = {
        "image": {
            "reference": "ghcr.io/acme/qwen3-weights@sha256:" + "a" * 64,
            "pullPolicy": "Always",
            "subPath": "Qwen3-0.6B",
        }
    }
    pod = deployment_pod(with_(MINIMAL, model={"name": "qwen3-small", "source": source}))
    [model] = [v for v in pod["volumes"] if v["name"] == "model"]
    assert model == {
        "name": "model",
        "image": {
            "reference": "ghcr.io/acme/qwen3-weights@sha256:" + "a" * 64,
            "pullPolicy": "Always",
        },
    }
    container = pod["containers"][0]
    assert [m for m in container["volumeMounts"] if m["name"] == "model"] == [
        {"name": "model", "mountPath": "/models", "readOnly": True}
    ]
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["QMS_MODEL_DIR"] == "/models/Qwen3-0.6B"
    default = deployment_pod(
        with_(MINIMAL, model={"name": "m", "source": {"image": {"reference": "r.io/w:1"}}})
    )
    [volume] = [v for v in default["volumes"] if v["name"] == "model"]
    assert volume["image"] == {"reference": "r.io/w:1", "pullPolicy": "IfNotPresent"}
    assert {e["name"]: e["value"] for e in default["containers"][0]["env"]}[
        "QMS_MODEL_DIR"
    ] == "/models"


def test_weights_from_the_hub_are_downloaded_by_an_init_container() -> None:
    source = {
        "huggingFace": {
            "repoId": "Qwen/Qwen3-0.6B",
            "revision": "refs/pr/1",
            "tokenSecret": {"name": "hf", "key": "hub-token"},
            "cacheClaim": "hf-cache",
        }
    }
    spec = with_(
        MINIMAL,
        model={"name": "qwen3-small", "source": source},
        runtime={
            "image": "example.com/qms-runtime:2",
            "env": [{"name": "HF_ENDPOINT", "value": "http://mirror"}],
        },
    )
    pod = deployment_pod(spec)
    [model] = [v for v in pod["volumes"] if v["name"] == "model"]
    assert model == {"name": "model", "persistentVolumeClaim": {"claimName": "hf-cache"}}
    [token] = [v for v in pod["volumes"] if v["name"] == "hub-token"]
    assert token == {
        "name": "hub-token",
        "secret": {
            "secretName": "hf",
            "items": [{"key": "hub-token", "path": "token"}],
            "defaultMode": 0o440,
        },
    }
    [download] = pod["initContainers"]
    assert download == {
        "name": "download",
        "image": "example.com/qms-runtime:2",
        "imagePullPolicy": "IfNotPresent",
        "command": [
            "qms-runtime",
            "download",
            "--repo-id",
            "Qwen/Qwen3-0.6B",
            "--revision",
            "refs/pr/1",
            "--cache-dir",
            "/models",
            "--token-file",
            "/var/run/secrets/huggingface/token",
        ],
        "env": [
            {"name": "HF_HOME", "value": "/tmp/hf-home"},
            {"name": "HF_ENDPOINT", "value": "http://mirror"},
        ],
        "resources": {
            "requests": {"cpu": "500m", "memory": "512Mi"},
            "limits": {"cpu": "2", "memory": "2Gi"},
        },
        "terminationMessagePath": "/dev/termination-log",
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "securityContext": pod["containers"][0]["securityContext"],
        "volumeMounts": [
            {"name": "tmp", "mountPath": "/tmp"},
            {"name": "model", "mountPath": "/models"},
            {"name": "hub-token", "mountPath": "/var/run/secrets/huggingface", "readOnly": True},
        ],
    }
    container = pod["containers"][0]
    assert [m for m in container["volumeMounts"] if m["name"] in ("model", "hub-token")] == [
        {"name": "model", "mountPath": "/models", "readOnly": True}
    ]  # the runtime reads the cache, never the token
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["QMS_MODEL_DIR"] == "/models/Qwen--Qwen3-0.6B/refs--pr--1"
    public = deployment_pod(
        with_(
            MINIMAL,
            model={"name": "m", "source": {"huggingFace": {"repoId": "Qwen/Q", "cacheClaim": "c"}}},
        )
    )
    assert public["initContainers"][0]["command"] == [
        "qms-runtime", "download", "--repo-id", "Qwen/Q", "--revision", "main",
        "--cache-dir", "/models",
    ]  # fmt: skip
    assert [v["name"] for v in public["volumes"]] == ["tmp", "dshm", "model"]
    assert {e["name"]: e["value"] for e in public["containers"][0]["env"]}[
        "QMS_MODEL_DIR"
    ] == "/models/Qwen--Q/main"
    assert "initContainers" not in deployment_pod(MINIMAL)


def test_the_spec_hash_ignores_the_unset_hub_source() -> None:
    """Upgrading the operator rolls no pods: the unset sources and preset are left out of
    the hash (the seed example's children keep their hash: test_seed_example_gives...)."""
    spec = parse_spec(MINIMAL)
    payload = spec.model_dump(mode="json", by_alias=True, include={"model", "runtime"})
    for unset in ("image", "huggingFace"):
        del payload["model"]["source"][unset]
    del payload["model"]["preset"]
    assert (
        spec_hash(spec)
        == (hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16])
    )
    hub = parse_spec(
        with_(
            MINIMAL,
            model={"name": "m", "source": {"huggingFace": {"repoId": "a/b", "cacheClaim": "c"}}},
        )
    )
    moved = parse_spec(
        with_(
            MINIMAL,
            model={
                "name": "m",
                "source": {"huggingFace": {"repoId": "a/b", "revision": "v2", "cacheClaim": "c"}},
            },
        )
    )
    assert spec_hash(hub) != spec_hash(moved)  # a new revision rolls the pods


def test_spec_is_frozen() -> None:
    spec: QwenModelServerSpec = parse_spec(MINIMAL)
    try:
        spec.replicas = 3  # type: ignore[misc]
    except Exception as exc:  # pydantic raises ValidationError for frozen models
        assert "frozen" in str(exc)
    else:
        raise AssertionError("spec is not frozen")


def test_replace_one_at_a_time_rollout() -> None:
    spec = parse_spec(MINIMAL)
    surge = desired_children("s", "models", "uid-1", spec)
    replace = desired_children("s", "models", "uid-1", spec, replace_one=True)
    strategies = [
        next(c for c in children if c["kind"] == "Deployment")["spec"]["strategy"]
        for children in (surge, replace)
    ]
    assert strategies == [
        {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
        {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 1}},
    ]
    assert [c for c in surge if c["kind"] != "Deployment"] == [
        c for c in replace if c["kind"] != "Deployment"
    ]


def test_speech_output_adds_the_talkers_memory() -> None:
    pod = deployment_pod(with_(MINIMAL, runtime={"audioOutput": True}))
    container = pod["containers"][0]
    assert container["resources"]["requests"]["memory"] == "40Gi"
    assert container["resources"]["limits"]["memory"] == "72Gi"
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["QMS_AUDIO_OUTPUT"] == "true"
    odd = deployment_pod(
        with_(
            MINIMAL,
            runtime={"audioOutput": True},
            resources={
                "requests": {"cpu": "1", "memory": "1000M"},
                "limits": {"cpu": "1", "memory": "1500M"},
            },
        )
    )
    assert odd["containers"][0]["resources"]["requests"]["memory"] == str(1000 * 10**6 + 8 * 2**30)
    assert env_of(deployment_pod(MINIMAL))["QMS_AUDIO_OUTPUT"] == "false"


def env_of(pod: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e["value"] for e in pod["containers"][0]["env"]}


def test_remote_media_spec_becomes_the_runtimes_env() -> None:
    off = env_of(deployment_pod(MINIMAL))
    assert off["QMS_ALLOW_REMOTE_MEDIA"] == "false"
    assert "QMS_ALLOWED_MEDIA_DOMAINS" not in off
    remote = {"enabled": True, "allowedDomains": ["images.example.com", "*.cdn.example.com"]}
    on = env_of(deployment_pod(with_(MINIMAL, runtime={"remoteMedia": remote})))
    assert on["QMS_ALLOW_REMOTE_MEDIA"] == "true"
    assert on["QMS_ALLOWED_MEDIA_DOMAINS"] == "images.example.com,*.cdn.example.com"


def test_the_runtime_parses_the_remote_media_env_it_is_given(monkeypatch: Any) -> None:
    """What the builder writes, the runtime's own settings parser reads back."""
    runtime_settings = pytest.importorskip("qms_runtime.settings")  # pydantic only, no torch
    remote = {"enabled": True, "allowedDomains": ["media.example.com", "*.cdn.test", "fd00::1"]}
    env = env_of(deployment_pod(with_(MINIMAL, runtime={"remoteMedia": remote})))
    for name, value in env.items():
        if name.startswith("QMS_"):
            monkeypatch.setenv(name, value)
    settings = runtime_settings.RuntimeSettings()
    assert settings.allow_remote_media is True
    assert settings.allowed_media_domains == ("media.example.com", "*.cdn.test", "fd00::1")


def test_the_runtime_leaves_its_last_words_where_status_reads_them() -> None:
    """issue 20: a fatal start-up error reaches lastState.terminated.message; a crash
    without one leaves the log's tail there instead."""
    for spec in (SEED["spec"], MINIMAL):
        [container] = deployment_pod(spec)["containers"]
        assert container["terminationMessagePath"] == "/dev/termination-log"
        assert container["terminationMessagePolicy"] == "FallbackToLogsOnError"
