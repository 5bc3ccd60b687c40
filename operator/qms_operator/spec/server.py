"""The QwenModelServer resource: its spec (root) and its status."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from .base import SpecModel, cel
from .exposure import (
    AutoscalingSpec,
    DisruptionBudgetSpec,
    GatewaySpec,
    InferencePoolSpec,
    IngressSpec,
    MonitoringSpec,
    NetworkPolicySpec,
    SecretKeyRef,
    ServiceSpec,
)
from .model import ModelSpec, RuntimeSpec
from .placement import Probes, Resources, Scheduling

GROUP = "serving.qms.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "QwenModelServer"
PLURAL = "modelservers"
SINGULAR = "modelserver"
SHORT_NAME = "qms"
# Children share the server's name. 47 keeps "<name>-<rs hash>-<pod hash>" pod
# names (and their hostnames) within 63 characters.
MAX_NAME_LENGTH = 47


class QwenModelServerSpec(SpecModel):
    """Desired state of a QwenModelServer: one Qwen model served by N replicas."""

    model_config = SpecModel.model_config | {
        "json_schema_extra": cel(
            (
                "!self.podDisruptionBudget.enabled || self.autoscaling.enabled "
                "|| self.replicas > 1 || string(self.podDisruptionBudget.maxUnavailable) != '0'",
                "podDisruptionBudget.maxUnavailable 0 with one replica blocks every node "
                "drain; use 2+ replicas or maxUnavailable 1",
                ".podDisruptionBudget.maxUnavailable",
            ),
            (
                # A transition rule (oldSelf): checked on updates, /scale included.
                "self.replicas == oldSelf.replicas || !self.autoscaling.enabled "
                "|| !oldSelf.autoscaling.enabled",
                "replicas cannot change while autoscaling.enabled is true: the "
                "HorizontalPodAutoscaler owns the count (set autoscaling.enabled false "
                "to scale by hand or with an external scaler)",
                ".replicas",
            ),
        )
    }

    model: ModelSpec
    runtime: RuntimeSpec = Field(default_factory=RuntimeSpec)
    replicas: int = Field(
        default=1,
        ge=0,
        le=1000,
        description="Replicas when autoscaling is off; the scale subresource's count, so "
        "kubectl scale, an HPA or a KEDA ScaledObject aimed at the server set it (under "
        "autoscaling the operator's HPA owns the count).",
    )
    resources: Resources = Field(default_factory=Resources)
    probes: Probes = Field(default_factory=Probes)
    service: ServiceSpec = Field(default_factory=ServiceSpec)
    ingress: IngressSpec = Field(default_factory=IngressSpec)
    gateway: GatewaySpec = Field(default_factory=GatewaySpec)
    inference_pool: InferencePoolSpec = Field(default_factory=InferencePoolSpec)
    autoscaling: AutoscalingSpec = Field(default_factory=AutoscalingSpec)
    scheduling: Scheduling = Field(default_factory=Scheduling)
    network_policy: NetworkPolicySpec = Field(default_factory=NetworkPolicySpec)
    pod_disruption_budget: DisruptionBudgetSpec = Field(default_factory=DisruptionBudgetSpec)
    monitoring: MonitoringSpec = Field(default_factory=MonitoringSpec)
    api_key_secret: SecretKeyRef | None = Field(
        default=None,
        description="Secret key holding the API key clients must send as "
        "'Authorization: Bearer'; mounted as a file, never read by the operator.",
    )


# ---- status -----------------------------------------------------------------

Phase = Literal["Ready", "Progressing", "Degraded", "Failed"]


class StatusModel(BaseModel):
    """Base of status objects: camelCase, frozen, unknown fields kept out."""

    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, frozen=True, extra="ignore"
    )


class Condition(StatusModel):
    """A metav1.Condition."""

    type: str = Field(description="Ready, Reconciling or Stalled.")
    status: Literal["True", "False", "Unknown"] = Field(description="True, False or Unknown.")
    reason: str = Field(description="CamelCase reason, e.g. Unschedulable.")
    message: str = Field(description="Human-readable detail.")
    last_transition_time: str = Field(description="When status last changed (RFC 3339).")
    observed_generation: int = Field(description="Generation this condition was computed for.")


class ChildStatus(StatusModel):
    """Readiness of one child object."""

    kind: str = Field(description="Kind of the child.")
    name: str = Field(description="Name of the child.")
    ready: bool = Field(description="Whether the child is as desired and working.")
    message: str = Field(default="", description="Why not, when not ready.")


class EffectiveSpec(StatusModel):
    """What the server runs with where the spec may leave a value to a preset or a
    default: the spec is never written, this says what was used."""

    preset: str = Field(default="", description="spec.model.preset, if any.")
    gpu_count: int = Field(default=0, description="GPUs per replica.")
    max_model_len: int = Field(default=0, description="runtime.batching.maxModelLen used.")
    startup_budget_seconds: int = Field(default=0, description="probes.startup.budgetSeconds used.")


class QwenModelServerStatus(StatusModel):
    """Observed state, written only by the operator."""

    observed_generation: int = Field(default=0, description="Last generation acted on.")
    phase: Phase = Field(default="Progressing", description="Ready/Progressing/Degraded/Failed.")
    ready: str = Field(default="0/0", description="Ready replicas / desired replicas.")
    replicas: int = Field(
        default=0,
        description="Pods of the Deployment, old and new: the scale subresource's status replicas.",
    )
    ready_replicas: int = Field(default=0, description="Ready pods on the current spec.")
    updated_replicas: int = Field(default=0, description="Pods on the current spec.")
    selector: str = Field(
        default="",
        description="Label selector of the server's pods as a string (the scale "
        "subresource's, read by an HPA aimed at the server).",
    )
    url: str = Field(default="", description="In-cluster endpoint (OpenAI base URL).")
    reason: str = Field(default="", description="One-line cause of the current phase.")
    conditions: list[Condition] = Field(default_factory=list, description="kstatus conditions.")
    children: list[ChildStatus] = Field(default_factory=list, description="Per-child readiness.")
    effective: EffectiveSpec | None = Field(
        default=None,
        description="The values used where the spec left them to model.preset or a default.",
    )


def parse_spec(spec: dict[str, Any]) -> QwenModelServerSpec:
    """Parse a CR's ``spec`` into the frozen typed object (raises pydantic.ValidationError)."""
    return QwenModelServerSpec.model_validate(spec)
