"""How a server is reached, scaled, protected and watched."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field

from .base import DNS_LABEL, DNS_SUBDOMAIN, Quantity, SpecModel, cel


class ServiceSpec(SpecModel):
    """The Service in front of the replicas (port 8080: API, health and metrics)."""

    model_config = SpecModel.model_config | {
        "json_schema_extra": cel(
            (
                "!has(self.nodePort) || self.type != 'ClusterIP'",
                "service.nodePort needs type NodePort or LoadBalancer",
                ".nodePort",
            )
        )
    }

    type: Literal["ClusterIP", "NodePort", "LoadBalancer"] = Field(
        default="ClusterIP",
        description="ClusterIP inside the cluster; NodePort or LoadBalancer to reach it "
        "from outside.",
    )
    port: int = Field(default=8080, ge=1, le=65535, description="Service port.")
    node_port: int | None = Field(
        default=None, ge=30000, le=32767, description="Fixed node port (NodePort/LoadBalancer)."
    )
    annotations: dict[str, str] = Field(
        default_factory=dict, description="Annotations, e.g. for a cloud load balancer."
    )


class IngressSpec(SpecModel):
    """An Ingress routing a host and paths to the server."""

    model_config = SpecModel.model_config | {
        "json_schema_extra": cel(
            (
                "!self.enabled || self.host != ''",
                "ingress.host is required when ingress.enabled is true",
                ".host",
            ),
            (
                "self.tlsSecretName == '' || self.host != ''",
                "ingress.tlsSecretName needs ingress.host",
                ".tlsSecretName",
            ),
        )
    }

    enabled: bool = Field(default=False, description="Create an Ingress.")
    class_name: str = Field(
        default="", max_length=253, pattern=f"({DNS_SUBDOMAIN})|^$", description="IngressClass."
    )
    host: str = Field(
        default="",
        max_length=253,
        pattern=f"({DNS_SUBDOMAIN})|^$",
        description="Host name, e.g. model.example.com.",
    )
    paths: list[Annotated[str, Field(pattern=r"^/\S*$", max_length=1024)]] = Field(
        default_factory=lambda: ["/v1"],
        min_length=1,
        max_length=16,
        description="Path prefixes routed to the server, e.g. /v1/predict; one path per "
        "model version lets an Ingress tell versions apart.",
    )
    path_type: Literal["Prefix", "Exact", "ImplementationSpecific"] = Field(
        default="Prefix", description="Path matching."
    )
    tls_secret_name: str = Field(
        default="", max_length=253, pattern=f"({DNS_SUBDOMAIN})|^$", description="TLS Secret."
    )
    annotations: dict[str, str] = Field(default_factory=dict, description="Annotations.")


# A Gateway API hostname: a DNS name, or "*." and one (its subdomains).
GATEWAY_HOSTNAME = r"^(\*\.)?[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
# An HTTPRoute path: "/" or non-empty segments of the characters Gateway API allows.
GATEWAY_PATH = r"^(/[-A-Za-z0-9._~!$&'()*+,;=:@]+)*/?$"


class ParentRef(SpecModel):
    """A Gateway, or one listener of it, that the HTTPRoute attaches to."""

    name: str = Field(max_length=253, pattern=DNS_SUBDOMAIN, description="Gateway name.")
    namespace: str = Field(
        default="",
        max_length=63,
        pattern=f"({DNS_LABEL})|^$",
        description="Namespace of the Gateway; empty for the server's own.",
    )
    section_name: str = Field(
        default="",
        max_length=253,
        pattern=f"({DNS_SUBDOMAIN})|^$",
        description="Listener of the Gateway to attach to; empty for every listener that "
        "allows the route.",
    )


class GatewaySpec(SpecModel):
    """Gateway API routing: an HTTPRoute from the listed Gateways to the server, beside
    the Ingress or instead of it."""

    model_config = SpecModel.model_config | {
        "json_schema_extra": cel(
            (
                "!self.enabled || size(self.parentRefs) > 0",
                "gateway.parentRefs needs at least one Gateway when gateway.enabled is true",
                ".parentRefs",
            ),
            (
                "self.paths.all(p, !p.contains('/./') && !p.contains('/../') "
                "&& !p.endsWith('/.') && !p.endsWith('/..'))",
                "gateway.paths must not hold . or .. segments",
                ".paths",
            ),
        )
    }

    enabled: bool = Field(
        default=False, description="Create the HTTPRoute (beside the Ingress or instead of it)."
    )
    parent_refs: list[ParentRef] = Field(
        default_factory=list, max_length=32, description="Gateways the route attaches to."
    )
    hostnames: list[Annotated[str, Field(max_length=253, pattern=GATEWAY_HOSTNAME)]] = Field(
        default_factory=list,
        max_length=16,
        description="Host names matched, e.g. model.example.com; empty matches every host "
        "the Gateway's listeners accept (as an Ingress without a host).",
    )
    paths: list[Annotated[str, Field(pattern=GATEWAY_PATH, max_length=1024)]] = Field(
        default_factory=lambda: ["/v1"],
        min_length=1,
        max_length=16,
        description="Paths routed to the server, the Ingress's default included (/v1).",
    )
    path_type: Literal["PathPrefix", "Exact"] = Field(
        default="PathPrefix", description="Path matching: by prefix, or the exact path."
    )
    annotations: dict[str, str] = Field(
        default_factory=dict, description="Annotations of the HTTPRoute."
    )


class EndpointPickerRef(SpecModel):
    """The endpoint picker (EPP): the Service the gateway asks which pod gets each
    request; it reads the pods' vllm:* metrics (queue depth, KV-cache use)."""

    name: str = Field(
        default="",
        max_length=253,
        pattern=f"({DNS_LABEL})|^$",
        description="Service of the endpoint picker in the server's namespace; empty for "
        "<server name>-epp.",
    )
    port: int = Field(default=9002, ge=1, le=65535, description="Its gRPC ext-proc port.")
    failure_mode: Literal["FailClose", "FailOpen"] = Field(
        default="FailClose",
        description="When the picker does not answer: FailClose refuses the request, "
        "FailOpen sends it to any pod of the pool.",
    )


class InferencePoolSpec(SpecModel):
    """A Gateway API Inference Extension InferencePool (inference.networking.k8s.io/v1)
    of the server's pods, for gateways that pick a pod per request."""

    enabled: bool = Field(
        default=False,
        description="Create an InferencePool of the server's pods (port 8080); the "
        "HTTPRoute then routes to it instead of to the Service.",
    )
    endpoint_picker: EndpointPickerRef = Field(default_factory=EndpointPickerRef)


class AutoscalingSpec(SpecModel):
    """A HorizontalPodAutoscaler (autoscaling/v2). When on, it owns the replica count."""

    model_config = SpecModel.model_config | {
        "json_schema_extra": cel(
            (
                "self.minReplicas <= self.maxReplicas",
                "autoscaling.minReplicas must not exceed autoscaling.maxReplicas",
                ".minReplicas",
            ),
            (
                "!self.enabled || self.targetCPUUtilization > 0 || "
                "quantity(string(self.targetRequestsPerSecond)).isGreaterThan(quantity('0'))",
                "autoscaling needs targetCPUUtilization or targetRequestsPerSecond",
                "",
            ),
        )
    }

    enabled: bool = Field(default=False, description="Create an HPA.")
    min_replicas: int = Field(default=2, ge=1, le=1000, description="Fewest replicas.")
    max_replicas: int = Field(default=10, ge=1, le=1000, description="Most replicas.")
    target_cpu_utilization: int = Field(
        default=70,
        ge=0,
        le=100,
        alias="targetCPUUtilization",
        description="Average CPU utilisation (percent of requests) to keep; 0 turns it off.",
    )
    target_requests_per_second: Quantity = Field(
        default="100",
        description="Average of the Pods metric requests_per_second to keep (served by "
        "the Prometheus Adapter from qms_requests_total); 0 turns it off.",
    )
    behavior: dict[str, Any] = Field(
        default_factory=dict,
        description="HPA behavior (autoscaling/v2 HorizontalPodAutoscalerBehavior), "
        "e.g. a scaleDown stabilizationWindowSeconds.",
        json_schema_extra={"x-kubernetes-preserve-unknown-fields": True},
    )


class NetworkPolicySpec(SpecModel):
    """A NetworkPolicy: only port 8080, only from the listed peers and monitoring."""

    enabled: bool = Field(default=True, description="Create the NetworkPolicy.")
    allowed_namespaces: dict[str, str] = Field(
        default_factory=dict,
        description="Labels of other namespaces whose pods may call the server "
        "(pods of the server's own namespace may always).",
    )
    allowed_pods: dict[str, str] = Field(
        default_factory=dict,
        description="Labels of pods allowed to call the server; empty allows every pod "
        "of the allowed namespaces.",
    )
    monitoring_namespace: str = Field(
        default="monitoring",
        max_length=63,
        pattern=f"({DNS_LABEL})|^$",
        description="Namespace of Prometheus, allowed to scrape /metrics; empty for none.",
    )
    ingress_namespace: str = Field(
        default="ingress-nginx",
        max_length=63,
        pattern=f"({DNS_LABEL})|^$",
        description="Namespace of the ingress controller, allowed in when ingress is "
        "enabled; empty for none.",
    )


class DisruptionBudgetSpec(SpecModel):
    """A PodDisruptionBudget so node drains keep the server up."""

    enabled: bool = Field(default=True, description="Create the PodDisruptionBudget.")
    max_unavailable: Quantity = Field(
        default=1, description="Replicas a voluntary disruption may take down (number or %)."
    )


class MonitoringSpec(SpecModel):
    """Prometheus scraping of /metrics."""

    scrape_annotations: bool = Field(
        default=True, description="Add prometheus.io/scrape, port and path annotations to pods."
    )
    service_monitor: bool = Field(
        default=False, description="Create a ServiceMonitor (needs the Prometheus Operator CRDs)."
    )
    interval: str = Field(
        default="30s", pattern=r"^[0-9]+(ms|s|m)$", description="Scrape interval."
    )


class SecretKeyRef(SpecModel):
    """A key of a Secret in the server's namespace."""

    name: str = Field(max_length=253, pattern=DNS_SUBDOMAIN, description="Secret name.")
    key: str = Field(
        default="api-key", max_length=253, pattern=r"^[-._a-zA-Z0-9]+$", description="Key."
    )
