"""Resources, probes and scheduling of the serving pods."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field

from .base import DNS_SUBDOMAIN, PRESET_FILLS, Quantity, SpecModel, cel

GPU_RESOURCES = ("nvidia.com/gpu", "amd.com/gpu", "gpu.intel.com/i915")
LABEL_KEY = (
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
    r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$"
)
LABEL_VALUE = r"^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$"


class CpuMemory(SpecModel):
    """CPU and memory amounts."""

    cpu: Quantity = Field(description="CPU cores, e.g. 4 or 500m.")
    memory: Quantity = Field(description="Memory, e.g. 32Gi.")


class Gpu(SpecModel):
    """GPUs per replica and which GPU nodes may run them."""

    model_config = SpecModel.model_config | {
        "json_schema_extra": cel(
            ("!has(self.count) || self.count >= 0", "gpu.count must be 0 or more", ".count"),
            (
                "size(self.acceleratorTypes) == 0 || !has(self.count) || self.count > 0",
                "acceleratorTypes needs gpu.count > 0",
                ".acceleratorTypes",
            ),
        )
    }

    count: int = Field(
        default=1,
        ge=0,
        le=64,
        description="GPUs per replica (requests = limits). Default 1, or with model.preset "
        "the fewest that hold the model on every accepted accelerator type.",
        json_schema_extra=PRESET_FILLS,
    )
    resource_name: Literal["nvidia.com/gpu", "amd.com/gpu", "gpu.intel.com/i915"] = Field(
        default="nvidia.com/gpu", description="Extended resource name of the GPU device plugin."
    )
    accelerator_types: list[Annotated[str, Field(min_length=1, pattern=LABEL_VALUE)]] = Field(
        default_factory=list,
        max_length=32,
        description="Accepted accelerator types, e.g. [nvidia-h200]. When set, pods "
        "require a node whose acceleratorLabelKey label has one of these values.",
    )
    accelerator_label_key: str = Field(
        default="accelerator",
        max_length=317,
        pattern=LABEL_KEY,
        description="Node label key that holds the accelerator type.",
    )
    fit_check: bool = Field(
        default=True,
        description="Before any pod starts, check that a Qwen model the operator knows "
        "(qms-operator size lists them) fits count x the memory of an accepted accelerator "
        "type: weights, the KV cache of one maxModelLen sequence and headroom. When it "
        "does not, the server is Stalled (DoesNotFit) and no child is applied. false turns "
        "this check off (the runtime's own check in the pod stays).",
    )


class Resources(SpecModel):
    """CPU, memory and GPU of each replica."""

    model_config = SpecModel.model_config | {
        "json_schema_extra": cel(
            (
                "quantity(string(self.limits.cpu)).compareTo("
                "quantity(string(self.requests.cpu))) >= 0",
                "resources.limits.cpu must be at least resources.requests.cpu",
                ".limits.cpu",
            ),
            (
                "quantity(string(self.limits.memory)).compareTo("
                "quantity(string(self.requests.memory))) >= 0",
                "resources.limits.memory must be at least resources.requests.memory",
                ".limits.memory",
            ),
        )
    }

    requests: CpuMemory = Field(
        default_factory=lambda: CpuMemory(cpu="4", memory="32Gi"),
        description="Guaranteed CPU and memory (scheduling uses these).",
    )
    limits: CpuMemory = Field(
        default_factory=lambda: CpuMemory(cpu="8", memory="64Gi"),
        description="Most CPU and memory a replica may use.",
    )
    gpu: Gpu = Field(default_factory=Gpu)


class ProbeTiming(SpecModel):
    """How often a probe runs and how many failures count."""

    period_seconds: int = Field(default=10, ge=1, le=300, description="Seconds between probes.")
    timeout_seconds: int = Field(default=5, ge=1, le=300, description="Probe timeout.")
    failure_threshold: int = Field(
        default=3, ge=1, le=100, description="Failures in a row before acting."
    )


class StartupProbe(SpecModel):
    """Budget for loading the model, replacing a fragile initialDelaySeconds."""

    budget_seconds: int = Field(
        default=1800,
        ge=10,
        le=86400,
        description="How long the model may take to verify, load and warm up before "
        "the pod is restarted. Liveness and readiness wait until the startup probe "
        "passes. Default 1800 (30 minutes suits a 30B model read from a network volume), "
        "or with model.preset 600 s plus 30 s per GiB of the model's weights.",
        json_schema_extra=PRESET_FILLS,
    )
    period_seconds: int = Field(default=10, ge=1, le=300, description="Seconds between checks.")


class Probes(SpecModel):
    """Liveness (/health), readiness (/ready) and startup (/health) probes."""

    model_config = SpecModel.model_config | {
        "json_schema_extra": cel(
            (
                "!has(self.startup.budgetSeconds) "
                "|| self.startup.budgetSeconds >= self.startup.periodSeconds",
                "probes.startup.budgetSeconds must be at least periodSeconds",
                ".startup.budgetSeconds",
            )
        )
    }

    startup: StartupProbe = Field(default_factory=StartupProbe)
    liveness: ProbeTiming = Field(
        default_factory=ProbeTiming, description="Liveness probe on GET /health."
    )
    readiness: ProbeTiming = Field(
        default_factory=lambda: ProbeTiming(period_seconds=5),
        description="Readiness probe on GET /ready.",
    )


class Toleration(SpecModel):
    """A toleration, as in a pod spec."""

    key: str = Field(default="", max_length=317, description="Taint key; empty matches all.")
    operator: Literal["Equal", "Exists"] = Field(default="Equal", description="Operator.")
    value: str = Field(default="", max_length=63, description="Taint value.")
    effect: Literal["", "NoSchedule", "PreferNoSchedule", "NoExecute"] = Field(
        default="", description="Taint effect; empty matches all."
    )
    toleration_seconds: int | None = Field(
        default=None, description="For NoExecute: how long the pod stays after the taint."
    )


class TopologySpread(SpecModel):
    """Spread replicas over nodes (and zones) so latency stays even."""

    enabled: bool = Field(default=True, description="Add topologySpreadConstraints.")
    topology_keys: list[Annotated[str, Field(pattern=LABEL_KEY, max_length=317)]] = Field(
        default_factory=lambda: ["kubernetes.io/hostname"],
        min_length=1,
        max_length=4,
        description="Node label keys to spread over, e.g. kubernetes.io/hostname and "
        "topology.kubernetes.io/zone.",
    )
    max_skew: int = Field(default=1, ge=1, le=100, description="Allowed imbalance.")
    when_unsatisfiable: Literal["ScheduleAnyway", "DoNotSchedule"] = Field(
        default="ScheduleAnyway",
        description="ScheduleAnyway prefers spreading but never blocks a scarce GPU node.",
    )


class Scheduling(SpecModel):
    """Where replicas may run."""

    node_selector: dict[str, str] = Field(
        default_factory=dict, description="Node labels a node must have."
    )
    affinity: dict[str, Any] = Field(
        default_factory=dict,
        description="Extra pod affinity (core/v1 Affinity). Its nodeAffinity is merged "
        "with the accelerator rule from resources.gpu.acceleratorTypes.",
        json_schema_extra={"x-kubernetes-preserve-unknown-fields": True},
    )
    tolerations: list[Toleration] = Field(
        default_factory=list,
        max_length=32,
        description="Tolerations, e.g. key spot, value true, effect NoSchedule for spot nodes.",
    )
    priority_class_name: str = Field(
        default="", max_length=253, pattern=f"({DNS_SUBDOMAIN})|^$", description="PriorityClass."
    )
    topology_spread: TopologySpread = Field(default_factory=TopologySpread)
