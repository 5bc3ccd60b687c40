"""The model and runtime parts of a QwenModelServer spec."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from .base import DNS_LABEL, DNS_SUBDOMAIN, PRESET_FILLS, SpecModel, cel

DEFAULT_RUNTIME_IMAGE = "ghcr.io/qms-io/qms-runtime:0.1.0"
MODEL_MOUNT_PATH = "/models"


class PvcSource(SpecModel):
    """Weights on a PersistentVolumeClaim, mounted read-only into every replica."""

    claim_name: str = Field(
        max_length=253,
        pattern=DNS_LABEL,
        description="Name of the PersistentVolumeClaim (same namespace) holding the weights.",
    )
    sub_path: str = Field(
        default="",
        max_length=1024,
        pattern=r"^([^/.][^/]*)?(/[^/.][^/]*)*$",
        description="Directory inside the claim with the model files (config.json, "
        "*.safetensors, SHA256SUMS). Empty means the claim's root. Relative, no '..'.",
    )


# An OCI image reference: registry host (and port) and path, then a tag, a digest or both.
IMAGE_REFERENCE = (
    r"^[a-z0-9]([-a-z0-9._]*[a-z0-9])?(:[0-9]{1,5})?(/[a-z0-9]([-a-z0-9._]*[a-z0-9])?)*"
    r"(:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(@sha256:[0-9a-f]{64})?$"
)


class ImageSource(SpecModel):
    """Weights in an OCI image (or artifact), mounted read-only as an image volume
    (Kubernetes image volumes, KEP-4639: the ImageVolume feature gate on 1.33 and 1.34,
    on by default from 1.35; the nodes' runtime must support them, e.g. containerd 2.1
    or CRI-O 1.31). The node pulls it once and every replica on that node shares it."""

    reference: str = Field(
        min_length=1,
        max_length=512,
        pattern=IMAGE_REFERENCE,
        description="Image with the model files, e.g. ghcr.io/acme/qwen3-omni-weights@sha256:...; "
        "a digest pins the weights.",
    )
    pull_policy: Literal["Always", "IfNotPresent", "Never"] = Field(
        default="IfNotPresent", description="When the node pulls the image."
    )
    sub_path: str = Field(
        default="",
        max_length=1024,
        pattern=r"^([^/.][^/]*)?(/[^/.][^/]*)*$",
        description="Directory inside the image with the model files (config.json, "
        "*.safetensors, SHA256SUMS). Empty means the image's root. Relative, no '..'.",
    )


# The Hub's repo ids and revisions; every part starts with a letter or a digit (so no
# part is "." or ".."), as the runtime's `qms-runtime download` checks too.
HUB_REPO_ID = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}(/[A-Za-z0-9][A-Za-z0-9._-]{0,95})?$"
HUB_REVISION = r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)*$"


class HubTokenSecret(SpecModel):
    """A key of a Secret (same namespace) holding a Hugging Face access token, for a
    private or gated repository; mounted into the download container only."""

    name: str = Field(max_length=253, pattern=DNS_SUBDOMAIN, description="Secret name.")
    key: str = Field(
        default="token", max_length=253, pattern=r"^[-._a-zA-Z0-9]+$", description="Key."
    )


class HuggingFaceSource(SpecModel):
    """Weights from the Hugging Face Hub. An init container (the runtime image's
    `qms-runtime download`) downloads the revision once into the cache claim, verifies
    every file's checksum and marks it complete; later pods find it there and download
    nothing. The runtime serves it from <claim>/<namespace>--<name>/<revision>. A failed
    download (a file that does not match, HTTP 401/404) stops the pod with one line
    naming it, which the server's status shows. spec.runtime.env reaches the download
    too (HF_ENDPOINT for a mirror, HTTPS_PROXY)."""

    repo_id: str | None = Field(
        default=None,
        max_length=192,
        pattern=HUB_REPO_ID,
        description="Repository on the Hub, e.g. Qwen/Qwen3-Omni-30B-A3B-Instruct; "
        "may be left out when model.preset names the model (its repository is used).",
    )
    revision: str = Field(
        default="main",
        max_length=255,
        pattern=HUB_REVISION,
        description="Branch, tag or commit hash. A commit hash pins the weights; a branch "
        "is resolved by the first download only (later pods reuse what it got).",
    )
    token_secret: HubTokenSecret | None = Field(
        default=None,
        description="Secret key with a Hub token, for a private or gated repository; "
        "mounted into the download container only.",
    )
    cache_claim: str = Field(
        max_length=253,
        pattern=DNS_LABEL,
        description="PersistentVolumeClaim (same namespace) the weights are downloaded "
        "into and served from; ReadWriteMany when replicas run on several nodes, so they "
        "share one download.",
    )


class ModelSource(SpecModel):
    """Where the weights come from. Exactly one of pvc, imagePath, image or huggingFace."""

    model_config = SpecModel.model_config | {
        "json_schema_extra": cel(
            (
                "(has(self.pvc) ? 1 : 0) + (has(self.imagePath) ? 1 : 0) "
                "+ (has(self.image) ? 1 : 0) + (has(self.huggingFace) ? 1 : 0) == 1",
                "exactly one of source.pvc, source.imagePath, source.image or "
                "source.huggingFace must be set",
                "",
            )
        )
    }

    pvc: PvcSource | None = Field(default=None)
    image_path: str | None = Field(
        default=None,
        max_length=1024,
        pattern=r"^/",
        description="Absolute path of a model directory baked into the runtime image.",
    )
    image: ImageSource | None = Field(default=None)
    hugging_face: HuggingFaceSource | None = Field(
        default=None,
        description="Weights from the Hugging Face Hub, downloaded once per revision into "
        "cacheClaim by an init container (qms-runtime download, checksums verified) that "
        "the runtime waits for.",
    )


class ModelSpec(SpecModel):
    """The model to serve: its OpenAI name, its weights and how they are checked."""

    model_config = SpecModel.model_config | {
        "json_schema_extra": cel(
            (
                "!has(self.source.huggingFace) || has(self.source.huggingFace.repoId) "
                "|| has(self.preset)",
                "source.huggingFace.repoId is required unless model.preset names the model",
                ".source.huggingFace.repoId",
            )
        )
    }

    name: str = Field(
        min_length=1,
        max_length=128,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._/:-]*$",
        description="Served model name: the `model` id clients send to the OpenAI API "
        "and that /v1/models lists, e.g. qwen3-omni-30b-a3b-instruct.",
    )
    source: ModelSource
    revision: str = Field(
        default="",
        max_length=63,
        pattern=r"^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?$",
        description="Revision label of the weights (e.g. a date or commit). It becomes "
        "the pod label serving.qms.io/revision, so an Ingress or a dashboard can tell "
        "versions apart; changing it rolls the pods.",
    )
    verify_checksums: bool = Field(
        default=True,
        description="Verify every weight file against the SHA256SUMS (or MD5SUMS) "
        "manifest before loading; a corrupt or missing file stops the pod with a "
        "message naming it.",
    )
    preset: str | None = Field(
        default=None,
        max_length=128,
        description="A Qwen model the operator knows (`qms-operator catalog` lists them), "
        "e.g. qwen3-omni-30b-a3b-instruct: it fills what this spec leaves out (GPUs per "
        "replica for the accepted accelerator types, runtime.batching.maxModelLen, "
        "probes.startup.budgetSeconds) and status.effective shows the values used. What "
        "the spec sets always wins; the spec is never written.",
    )

    @model_validator(mode="after")
    def _hub_repo_or_preset(self) -> ModelSpec:
        hub = self.source.hugging_face
        if hub is not None and hub.repo_id is None and self.preset is None:
            raise ValueError(
                "source.huggingFace.repoId is required unless model.preset names the model"
            )
        return self


class Batching(SpecModel):
    """Continuous-batching limits of the runtime (transformers' own batching)."""

    max_batch_size: int = Field(
        default=32, ge=1, le=4096, description="Most sequences decoded together in one step."
    )
    max_batched_tokens: int = Field(
        default=8192, ge=16, le=1048576, description="Most tokens processed in one forward pass."
    )
    max_queued_requests: int = Field(
        default=256,
        ge=1,
        le=100000,
        description="Requests admitted (running plus waiting) before new ones get "
        "HTTP 429 with Retry-After.",
    )
    max_model_len: int = Field(
        default=32768,
        ge=16,
        le=1048576,
        description="Context limit: prompt plus generated tokens of one request. Default "
        "32768, or with model.preset the model's own context, capped to what the GPUs hold.",
        json_schema_extra=PRESET_FILLS,
    )


class EnvVar(SpecModel):
    """An extra environment variable for the runtime container."""

    name: str = Field(
        min_length=1, max_length=256, pattern=r"^[-._a-zA-Z][-._a-zA-Z0-9]*$", description="Name."
    )
    value: str = Field(default="", description="Value.")


# An allowedDomains entry: a host name, "*." + a host name (its subdomains), an IPv4 or an
# IPv6 address. The runtime checks each entry again when it starts.
MEDIA_DOMAIN = (
    r"^(\*\.)?[a-z0-9]([-a-z0-9_]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9_]*[a-z0-9])?)*$"
    r"|^[0-9a-f]{0,4}(:[0-9a-f]{0,4}){2,7}$"
)


class RemoteMediaSpec(SpecModel):
    """http(s) image and video URLs in chat requests, fetched from listed hosts only."""

    model_config = SpecModel.model_config | {
        "json_schema_extra": cel(
            (
                "!self.enabled || size(self.allowedDomains) > 0",
                "remoteMedia.enabled needs at least one allowedDomains entry",
                ".allowedDomains",
            ),
        )
    }

    enabled: bool = Field(
        default=False,
        description="Fetch http(s) media URLs (QMS_ALLOW_REMOTE_MEDIA). Off: only data: "
        "URLs are accepted. The NetworkPolicy the operator creates restricts ingress only, "
        "so egress is whatever the cluster's own policies allow; the allow-list below is "
        "what keeps the runtime from fetching anything else.",
    )
    allowed_domains: list[Annotated[str, Field(max_length=253, pattern=MEDIA_DOMAIN)]] = Field(
        default_factory=list,
        max_length=64,
        description="Hosts media may come from (QMS_ALLOWED_MEDIA_DOMAINS): exact hosts "
        "(images.example.com, 203.0.113.7) or '*.' suffixes (*.example.com: its "
        "subdomains). Redirects must stay on the list. Addresses that are loopback, "
        "link-local, private or cloud metadata (169.254.169.254) are refused unless an "
        "exact entry names the host.",
    )


class RuntimeSpec(SpecModel):
    """The serving container: image, precision, batching knobs and extras."""

    model_config = SpecModel.model_config | {
        "json_schema_extra": cel(
            (
                "self.quantization != 'int8' || self.dtype != 'float32'",
                "quantization int8 needs dtype auto, bfloat16 or float16",
                ".quantization",
            ),
            (
                "self.env.all(e, !e.name.startsWith('QMS_'))",
                "env names starting with QMS_ are set by the operator from the spec; "
                "use the spec fields instead",
                ".env",
            ),
        )
    }

    image: str = Field(
        default=DEFAULT_RUNTIME_IMAGE,
        min_length=1,
        max_length=512,
        pattern=r"^\S+$",
        description="Runtime image (qms-runtime). Its CUDA build must match the nodes' "
        "GPUs and driver, or the pod fails with 'no kernel image is available'.",
    )
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] = Field(
        default="IfNotPresent", description="Image pull policy."
    )
    image_pull_secrets: list[Annotated[str, Field(pattern=DNS_LABEL, max_length=253)]] = Field(
        default_factory=list, max_length=16, description="Names of image pull Secrets."
    )
    dtype: Literal["auto", "bfloat16", "float16", "float32"] = Field(
        default="auto", description="Weight dtype; auto is bfloat16 on GPU, float32 on CPU."
    )
    quantization: Literal["none", "int8"] = Field(
        default="none",
        description="int8 quantizes the weights, MoE experts included (weight-only, "
        "torchao); check the accuracy loss on your prompts before using it.",
    )
    batching: Batching = Field(default_factory=Batching)
    audio_output: bool = Field(
        default=False,
        description="Spoken answers from Qwen3-Omni's talker (chat modalities "
        "[text, audio]). Off by default: the talker needs more memory, so the operator "
        "adds 8Gi to the memory requests and limits when it is on.",
    )
    remote_media: RemoteMediaSpec = Field(default_factory=RemoteMediaSpec)
    drain_timeout_seconds: int = Field(
        default=30,
        ge=0,
        le=3600,
        description="On shutdown, how long in-flight requests may finish; the pod's "
        "termination grace period is this plus 15 s.",
    )
    args: list[str] = Field(
        default_factory=list, max_length=64, description="Extra arguments to qms-runtime serve."
    )
    env: list[EnvVar] = Field(
        default_factory=list, max_length=64, description="Extra environment variables."
    )
