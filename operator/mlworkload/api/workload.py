"""MLWorkload: what an ML engineer asks for (spec) and what the operator reports (status).

Field names and meanings are the contract in shared/design/api.md. Defaults that depend on the
governing MLWorkloadPolicy (capacity, isolation, IAP, identity) are left unset here and filled in
by `mlworkload.policy`; the CRD carries no defaults, so what a user applied is what is stored.
"""

import ipaddress
import re
from enum import StrEnum
from typing import Any, Literal, Self

from pydantic import Field, StrictBool, StrictInt, field_validator, model_validator

from mlworkload.api.base import ApiModel, cel, with_cel
from mlworkload.api.meta import (
    DNS1035_LABEL,
    DNS1123_SUBDOMAIN,
    DnsLabel,
    NetworkPolicyPeer,
    ObjectMeta,
    PeerPort,
    is_dns1035_label,
)
from mlworkload.api.quantity import Quantity, parse_quantity

RAY_VERSION_PATTERN = r"^[0-9]+\.[0-9]+\.[0-9]+$"
INT32_MAX = 2**31 - 1  # KubeRay declares its time fields int32
BUCKET_PATTERN = r"^gs://[a-z0-9][a-z0-9._-]{1,220}[a-z0-9]$"
GSA_PATTERN = r"^[a-z0-9][a-z0-9-]{4,61}@[a-z0-9][a-z0-9.-]{2,100}\.gserviceaccount\.com$"
ENV_NAME_PATTERN = r"^[-._a-zA-Z][-._a-zA-Z0-9]*$"
MACHINE_TYPE_PATTERN = r"^[a-z][a-z0-9]*-[a-z0-9-]+$"
ACCELERATOR_TYPE_PATTERN = r"^[a-z][a-z0-9-]*[a-z0-9]$"
ACCELERATOR_COUNTS = (1, 2, 4, 8, 16)

# Longest MLWorkload names: KubeRay derives further names (services, the RayJob's clusters
# `<job>-<random>`, the RayService's `<svc>-raycluster-<random>`) from the Ray object's name, and
# keeps only the last 50 characters of the head's ServiceAccount name (utils.CheckName): two Clusters
# of 51-53 characters could share a ServiceAccount and its Workload Identity member, so 50 it is.
MAX_NAME_LENGTH = {"Cluster": 50, "Job": 47, "Service": 47}


class WorkloadType(StrEnum):
    CLUSTER = "Cluster"
    JOB = "Job"
    SERVICE = "Service"

    @property
    def ray_kind(self) -> str:
        return {"Cluster": "RayCluster", "Job": "RayJob", "Service": "RayService"}[self.value]


class Capacity(StrEnum):
    SPOT = "Spot"
    ON_DEMAND = "OnDemand"
    SPOT_WITH_FALLBACK = "SpotWithFallback"


class Isolation(StrEnum):
    STRICT = "Strict"
    NAMESPACE = "Namespace"
    NONE = "None"


class Visibility(StrEnum):
    INTERNAL = "Internal"
    EXTERNAL = "External"


class BucketAccess(StrEnum):
    READ_ONLY = "ReadOnly"
    READ_WRITE = "ReadWrite"


# The distribution reference grammar (github.com/distribution/reference, regexp.go): what a
# container runtime accepts as an image; anything else ends as InvalidImageName on the node.
_PATH_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*"
_DOMAIN_COMPONENT = r"[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?"
_DOMAIN = rf"(?:{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*|\[[0-9a-fA-F:.]+\])(?::[0-9]+)?"
IMAGE_REFERENCE = re.compile(
    rf"(?:{_DOMAIN}/)?{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*(?::[A-Za-z0-9_][A-Za-z0-9_.-]{{0,127}})?"
    r"(?:@[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,})?"
)
RESERVED_GROUP_NAMES = ("head", "submitter")  # the head's and the job submitter's own label values and names


def image_tag(image: str) -> str | None:
    """The tag of an image reference (`repo[:port]/name:tag[@digest]`), None when it has none."""
    name = image.split("@", 1)[0]
    last = name.rsplit("/", 1)[-1]
    return last.split(":", 1)[1] if ":" in last else None


def tag_agrees_with_version(image: str, version: str) -> bool:
    """True when the image tag is the Ray version, or the version followed by a variant (-py311-gpu)."""
    tag = image_tag(image)
    return tag is not None and (tag == version or tag.startswith(f"{version}-"))


class KeyRef(ApiModel):
    """A key of a Secret or ConfigMap in the workload's namespace."""

    name: str = Field(description="Name of the Secret or ConfigMap.", min_length=1)
    key: str = Field(description="The key whose value is used.", min_length=1)
    optional: StrictBool | None = Field(default=None, description="Start even when the key is missing.")


class EnvVarSource(ApiModel):
    """Where an environment variable's value comes from. Exactly one source."""

    model_config = with_cel(
        cel(
            "has(self.secretKeyRef) != has(self.configMapKeyRef)",
            "exactly one of secretKeyRef and configMapKeyRef is required",
        )
    )

    secret_key_ref: KeyRef | None = Field(default=None, description="A key of a Secret.")
    config_map_key_ref: KeyRef | None = Field(default=None, description="A key of a ConfigMap.")

    @model_validator(mode="after")
    def _exactly_one(self) -> Self:
        if (self.secret_key_ref is None) == (self.config_map_key_ref is None):
            raise ValueError("exactly one of secretKeyRef and configMapKeyRef is required")
        return self


class EnvVar(ApiModel):
    """An environment variable added to every Ray container (and the job submitter)."""

    model_config = with_cel(cel("!(has(self.value) && has(self.valueFrom))", "value and valueFrom are exclusive"))

    name: str = Field(description="Variable name.", pattern=ENV_NAME_PATTERN, max_length=253)
    value: str | None = Field(default=None, description="Literal value.")
    value_from: EnvVarSource | None = Field(default=None, description="Value from a Secret or ConfigMap key.")

    @model_validator(mode="after")
    def _value_or_source(self) -> Self:
        if self.value is not None and self.value_from is not None:
            raise ValueError("value and valueFrom are exclusive")
        return self


class RaySpec(ApiModel):
    """The Ray runtime: version, image and environment."""

    model_config = with_cel(
        cel(
            "!has(self.image) || self.image.endsWith(':' + self.version)"
            " || self.image.contains(':' + self.version + '-')"
            " || self.image.contains(':' + self.version + '@')",
            "ray.image tag must be the Ray version, optionally followed by a variant"
            " (e.g. rayproject/ray:2.41.0-py311-gpu)",
            ".image",
        )
    )

    version: str = Field(
        description="Ray version, e.g. 2.41.0. Required; the image tag must agree with it.",
        pattern=RAY_VERSION_PATTERN,
    )
    image: str | None = Field(
        default=None,
        description=(
            "Container image for every Ray pod. Default: rayproject/ray:<version>-py311, with -gpu"
            " appended when any worker group has an accelerator."
        ),
        min_length=1,
        max_length=512,
        json_schema_extra={"pattern": f"^{IMAGE_REFERENCE.pattern}$"},  # the CRD refuses it too
    )
    env: list[EnvVar] = Field(
        default_factory=list,
        description="Environment added to every Ray container; names unique.",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
    )

    @field_validator("env")
    @classmethod
    def _unique_env(cls, env: list[EnvVar]) -> list[EnvVar]:
        names = [variable.name for variable in env]
        repeated = sorted({name for name in names if names.count(name) > 1})
        if repeated:
            raise ValueError(f"env names must be unique; repeated: {', '.join(repeated)}")
        return env

    @field_validator("image")
    @classmethod
    def _is_an_image_reference(cls, image: str | None) -> str | None:
        if image is not None and not IMAGE_REFERENCE.fullmatch(image):
            raise ValueError(
                f"{image!r} is not an image reference: [registry/]repository[:tag][@digest], lowercase repository,"
                " no spaces (e.g. us-docker.pkg.dev/my-proj/ray/ray:2.41.0-gpu)"
            )
        return image

    @model_validator(mode="after")
    def _tag_agrees(self) -> Self:
        if self.image is not None and not tag_agrees_with_version(self.image, self.version):
            raise ValueError(
                f"image {self.image!r}: the tag must be the Ray version {self.version!r},"
                f" optionally followed by a variant (e.g. {self.version}-py311-gpu)"
            )
        return self


class Resources(ApiModel):
    """CPU and memory requests of one Ray pod. Memory limits equal the request."""

    cpu: Quantity = Field(description="CPU request, e.g. '4' or '500m'.")
    memory: Quantity = Field(description="Memory request (and limit), e.g. '16Gi'. More than zero.")

    @field_validator("memory")
    @classmethod
    def _memory_is_limited(cls, memory: str) -> str:
        if parse_quantity(memory) <= 0:
            raise ValueError(f"{memory!r}: memory must be more than zero (it is also the limit; zero means none)")
        return memory


DEFAULT_HEAD_RESOURCES = Resources(cpu="2", memory="8Gi")
DEFAULT_WORKER_RESOURCES = Resources(cpu="1", memory="4Gi")


class HeadSpec(ApiModel):
    """The Ray head pod."""

    resources: Resources = Field(
        default=DEFAULT_HEAD_RESOURCES, description="Head requests. Default: cpu 2, memory 8Gi."
    )
    schedulable: StrictBool = Field(
        default=False,
        description="Let Ray schedule tasks on the head. Default false: rayStartParams num-cpus '0'.",
    )


class Accelerator(ApiModel):
    """GPUs attached to each worker of a group."""

    type: str = Field(
        description="GKE accelerator type, e.g. nvidia-l4 or nvidia-tesla-a100.",
        pattern=ACCELERATOR_TYPE_PATTERN,
        max_length=63,
    )
    count: Literal[1, 2, 4, 8, 16] = Field(description="GPUs per worker: 1, 2, 4, 8 or 16.")


class WorkerGroup(ApiModel):
    """A group of identical Ray workers."""

    model_config = with_cel(
        cel("!(self.name in ['head', 'submitter'])", "name: head and submitter are reserved", ".name"),
        cel(
            "!has(self.minReplicas) || self.minReplicas <= (has(self.replicas) ? self.replicas : 1)",
            "minReplicas must not exceed replicas",
            ".minReplicas",
        ),
        cel(
            "!has(self.maxReplicas) || (has(self.replicas) ? self.replicas : 1) <= self.maxReplicas",
            "replicas must not exceed maxReplicas",
            ".maxReplicas",
        ),
    )

    name: DnsLabel = Field(description="Group name, unique in the workload (DNS-1123 label).")
    replicas: StrictInt = Field(default=1, ge=0, le=1000, description="Workers at start. Default 1.")
    min_replicas: StrictInt | None = Field(
        default=None, ge=0, le=1000, description="Fewest workers under autoscaling. Default: replicas."
    )
    max_replicas: StrictInt | None = Field(
        default=None, ge=0, le=1000, description="Most workers under autoscaling. Default: replicas."
    )
    resources: Resources = Field(
        default=DEFAULT_WORKER_RESOURCES, description="Worker requests. Default: cpu 1, memory 4Gi."
    )
    accelerator: Accelerator | None = Field(default=None, description="GPUs per worker; omitted -> CPU group.")
    capacity: Capacity | None = Field(
        default=None,
        description=(
            "Spot, OnDemand or SpotWithFallback. Default from policy: Spot when spot is Required,"
            " OnDemand when Forbidden, SpotWithFallback when Preferred."
        ),
    )
    machine_type: str | None = Field(
        default=None,
        description="GCE machine type of the node pool. Default: derived from the accelerator type and count.",
        pattern=MACHINE_TYPE_PATTERN,
        max_length=63,
    )

    @field_validator("name")
    @classmethod
    def _not_reserved(cls, name: str) -> str:
        if name in RESERVED_GROUP_NAMES:
            raise ValueError(f"{name!r} is reserved (the operator names the head's and the submitter's objects so);"
                             " choose another group name")  # fmt: skip
        return name

    @model_validator(mode="after")
    def _replica_bounds(self) -> Self:
        if self.min_replicas is not None and self.min_replicas > self.replicas:
            raise ValueError(f"minReplicas ({self.min_replicas}) must not exceed replicas ({self.replicas})")
        if self.max_replicas is not None and self.replicas > self.max_replicas:
            raise ValueError(f"replicas ({self.replicas}) must not exceed maxReplicas ({self.max_replicas})")
        return self

    @property
    def effective_min_replicas(self) -> int:
        return self.replicas if self.min_replicas is None else self.min_replicas

    @property
    def effective_max_replicas(self) -> int:
        return self.replicas if self.max_replicas is None else self.max_replicas

    @property
    def gpus_at_max_scale(self) -> int:
        return 0 if self.accelerator is None else self.accelerator.count * self.effective_max_replicas


class AutoscalingSpec(ApiModel):
    """KubeRay's in-tree Ray autoscaler."""

    enabled: StrictBool = Field(default=False, description="Run the Ray autoscaler. Default false.")
    idle_timeout_seconds: StrictInt = Field(
        default=60, ge=0, le=86400, description="Seconds an idle worker lives before removal. Default 60."
    )


_PRE_RUNNING_MESSAGE = (
    "preRunningDeadlineSeconds must be less than activeDeadlineSeconds: both count from when KubeRay starts"
    " the job, and the active deadline would end it first"
)


class JobSpec(ApiModel):
    """The batch job (type Job only)."""

    model_config = with_cel(
        cel(
            "!has(self.preRunningDeadlineSeconds) || !has(self.activeDeadlineSeconds)"
            " || self.preRunningDeadlineSeconds < self.activeDeadlineSeconds",
            _PRE_RUNNING_MESSAGE,
            ".preRunningDeadlineSeconds",
        )
    )

    entrypoint: str = Field(description="Command run by `ray job submit`.", min_length=1, max_length=8192)
    runtime_env: dict[str, Any] | None = Field(
        default=None,
        description="Ray runtime environment (working_dir, pip, env_vars, ...), as an object.",
        json_schema_extra={"x-kubernetes-preserve-unknown-fields": True},
    )
    active_deadline_seconds: StrictInt | None = Field(
        default=None,
        gt=0,
        le=INT32_MAX,
        description="Seconds before the job is failed. Default: the policy's maxJobRuntimeSeconds.",
    )
    backoff_limit: StrictInt = Field(
        default=0,
        ge=0,
        le=100,
        description="Retries of the whole job (e.g. after spot preemption). Default 0.",
    )
    ttl_seconds_after_finished: StrictInt = Field(
        default=0,
        ge=0,
        le=INT32_MAX,
        description="Seconds the Ray cluster is kept after the job ends, then deleted. Default 0.",
    )
    pre_running_deadline_seconds: StrictInt | None = Field(
        default=None,
        gt=0,
        le=INT32_MAX,
        description=(
            "Seconds the job may take to start running (its Ray cluster ready, the job submitted), counted from"
            " when KubeRay starts it, like activeDeadlineSeconds; past them KubeRay fails it"
            " (PreRunningDeadlineExceeded; retried under backoffLimit). Default: the policy's maxJobPendingSeconds;"
            " none: no limit."
        ),
    )

    @model_validator(mode="after")
    def _starts_before_its_end(self) -> Self:
        pre, active = self.pre_running_deadline_seconds, self.active_deadline_seconds
        if pre is not None and active is not None and pre >= active:
            raise ValueError(_PRE_RUNNING_MESSAGE + f" ({pre} >= {active})")
        return self


class UpgradeStrategyType(StrEnum):
    """How KubeRay replaces a RayService's Ray cluster when the cluster changes (KubeRay's RayServiceUpgradeType)."""

    NEW_CLUSTER = "NewCluster"
    NEW_CLUSTER_WITH_INCREMENTAL_UPGRADE = "NewClusterWithIncrementalUpgrade"
    NONE = "None"


# KubeRay's default when a RayService names no upgrade strategy: isZeroDowntimeUpgradeEnabled in
# ray-operator/controllers/ray/rayservice_controller.go (v1.7.0), "If no fields are set, zero downtime upgrade
# by default is enabled" -- unless KubeRay's operator runs with ENABLE_ZERO_DOWNTIME=false.
KUBERAY_DEFAULT_UPGRADE_STRATEGY = UpgradeStrategyType.NEW_CLUSTER
_INCREMENTAL = UpgradeStrategyType.NEW_CLUSTER_WITH_INCREMENTAL_UPGRADE
_KUBERAY_MAX_SURGE_PERCENT = 100  # the RayService CRD's default of clusterUpgradeOptions.maxSurgePercent
_OPTIONS_MESSAGE = "clusterUpgradeOptions is required for type NewClusterWithIncrementalUpgrade and forbidden otherwise"
_STEP_MESSAGE = "stepSizePercent must not exceed maxSurgePercent (default 100)"


class ClusterUpgradeOptions(ApiModel):
    """How a NewClusterWithIncrementalUpgrade moves capacity and traffic (KubeRay's clusterUpgradeOptions)."""

    model_config = with_cel(
        cel(
            "self.stepSizePercent <= (has(self.maxSurgePercent) ? self.maxSurgePercent"
            f" : {_KUBERAY_MAX_SURGE_PERCENT})",
            _STEP_MESSAGE,
            ".stepSizePercent",
        )
    )

    gateway_class_name: str = Field(
        description=(
            "The GatewayClass (Gateway API) KubeRay's Gateway for the service uses, e.g. gke-l7-rilb or istio;"
            " the platform team names it."
        ),
        pattern=DNS1123_SUBDOMAIN,
        max_length=253,
    )
    max_surge_percent: StrictInt | None = Field(
        default=None,
        ge=1,
        le=100,
        description=(
            "Percent of the service's capacity the new cluster adds at each step; both clusters together never"
            " exceed 100% plus this. Default: KubeRay's, 100."
        ),
    )
    step_size_percent: StrictInt = Field(
        ge=1, le=100, description="Percent of the traffic moved to the new cluster every intervalSeconds."
    )
    interval_seconds: StrictInt = Field(gt=0, le=INT32_MAX, description="Seconds between two traffic steps.")

    @model_validator(mode="after")
    def _step_within_surge(self) -> Self:
        surge = _KUBERAY_MAX_SURGE_PERCENT if self.max_surge_percent is None else self.max_surge_percent
        if self.step_size_percent > surge:
            raise ValueError(f"{_STEP_MESSAGE} ({self.step_size_percent} > {surge})")
        return self


class UpgradeStrategy(ApiModel):
    """How KubeRay upgrades the service when its Ray cluster changes (KubeRay's upgradeStrategy)."""

    model_config = with_cel(
        cel(
            "self.type == 'NewClusterWithIncrementalUpgrade' ? has(self.clusterUpgradeOptions)"
            " : !has(self.clusterUpgradeOptions)",
            _OPTIONS_MESSAGE,
        )
    )

    type: UpgradeStrategyType = Field(
        description=(
            "NewCluster: a second cluster of the same size, traffic switched when it is ready (twice the GPUs"
            " meanwhile); NewClusterWithIncrementalUpgrade: the new cluster grows step by step while traffic moves"
            " through a Gateway (needs Gateway API, and autoscaling); None: cluster changes are not rolled out."
            " Must be allowed by the policy."
        )
    )
    cluster_upgrade_options: ClusterUpgradeOptions | None = Field(
        default=None, description="Required for NewClusterWithIncrementalUpgrade, forbidden otherwise."
    )

    @model_validator(mode="after")
    def _options_follow_the_type(self) -> Self:
        if (self.type is _INCREMENTAL) != (self.cluster_upgrade_options is not None):
            raise ValueError(_OPTIONS_MESSAGE)
        return self


class ServeSpec(ApiModel):
    """The Ray Serve service (type Service only)."""

    config: dict[str, Any] = Field(
        description="Ray Serve config (serveConfigV2), as an object with `applications`.",
        json_schema_extra={"x-kubernetes-preserve-unknown-fields": True},
    )
    upgrade_strategy: UpgradeStrategy | None = Field(
        default=None,
        description=(
            "How a change of the Ray cluster (image, resources, groups) is rolled out. Default: KubeRay's, NewCluster."
        ),
    )

    @property
    def effective_upgrade_strategy(self) -> UpgradeStrategyType:
        """The strategy KubeRay follows: the one asked for, or KubeRay's default."""
        return KUBERAY_DEFAULT_UPGRADE_STRATEGY if self.upgrade_strategy is None else self.upgrade_strategy.type

    @field_validator("config")
    @classmethod
    def _has_applications(cls, config: dict[str, Any]) -> dict[str, Any]:
        applications = config.get("applications")
        if not isinstance(applications, list) or not applications:
            raise ValueError("serve.config.applications must list at least one application")
        for index, application in enumerate(applications):
            if not isinstance(application, dict) or not application.get("import_path"):
                raise ValueError(f"serve.config.applications[{index}] needs an import_path")
        return config


class StorageSpec(ApiModel):
    """A Cloud Storage bucket granted to the workload's GCP identity."""

    bucket: str = Field(description="Bucket as gs://NAME; must be allowed by policy.", pattern=BUCKET_PATTERN)
    access: BucketAccess = Field(
        default=BucketAccess.READ_ONLY,
        description="ReadOnly (roles/storage.objectViewer) or ReadWrite (roles/storage.objectUser). Default ReadOnly.",
    )

    @property
    def bucket_name(self) -> str:
        return self.bucket.removeprefix("gs://")


class IdentitySpec(ApiModel):
    """The GCP identity of every Ray pod (Workload Identity)."""

    gcp_service_account: str | None = Field(
        default=None,
        description="Google service account email. Default: the policy's; another one is refused.",
        pattern=GSA_PATTERN,
    )


class AllowedPeer(NetworkPolicyPeer):
    """An extra ingress peer, and the ports of the Ray pods it may reach."""

    ports: list[PeerPort] = Field(
        default_factory=list,
        max_length=16,
        description="Ports it may reach. Default: the Serve port (8000) only. The GCS port (6379) is never allowed.",
    )


class NetworkSpec(ApiModel):
    """Who may reach the Ray pods."""

    isolation: Isolation | None = Field(
        default=None,
        description=(
            "Strict: only this workload's pods and allowFrom; Namespace: any pod of the namespace;"
            " None: no NetworkPolicy. Default from policy (Strict)."
        ),
    )
    allow_from: list[AllowedPeer] = Field(
        default_factory=list,
        max_length=32,
        description="Extra ingress peers (NetworkPolicyPeer shape) with the ports they may reach.",
    )


class Endpoint(ApiModel):
    """An HTTP endpoint exposed through a GKE Ingress."""

    model_config = with_cel(cel("!has(self.host) || !isIP(self.host)", "host must be a DNS name, not an IP", ".host"))

    enabled: StrictBool = Field(default=False, description="Create the Ingress. Default false.")
    visibility: Visibility = Field(
        default=Visibility.INTERNAL,
        description="Internal (gce-internal load balancer) or External (gce). Default Internal.",
    )
    iap: StrictBool | None = Field(
        default=None,
        description=(
            "Put Identity-Aware Proxy in front (HTTPS only). Default: true for the dashboard, and for serve when"
            " the policy requires IAP. An External dashboard always has IAP."
        ),
    )
    host: str | None = Field(
        default=None,
        description="Host name the Ingress answers for (a DNS name, not an IP address).",
        pattern=DNS1123_SUBDOMAIN,
        max_length=253,
    )

    @field_validator("host")
    @classmethod
    def _not_an_address(cls, host: str | None) -> str | None:
        try:
            ipaddress.ip_address(host or "")
        except ValueError:
            return host
        raise ValueError(f"{host!r} is an IP address; an Ingress host must be a DNS name (e.g. ray.example.com)")


class ExposeSpec(ApiModel):
    """Endpoints published outside the cluster."""

    dashboard: Endpoint | None = Field(default=None, description="The Ray dashboard (port 8265).")
    serve: Endpoint | None = Field(default=None, description="Ray Serve HTTP (port 8000).")


class LifecycleSpec(ApiModel):
    """Time limits of the workload (type Cluster only)."""

    idle_seconds: StrictInt | None = Field(
        default=None,
        gt=0,
        le=INT32_MAX,
        description=(
            "Cluster: suspend the Ray cluster after this many seconds idle (every worker group at its minReplicas"
            " as KubeRay reports it, the Ray autoscaler on). Default and cap: the policy's"
            " lifecycle.maxClusterIdleSeconds; neither set: never."
        ),
    )


class QueueSpec(ApiModel):
    """The Kueue LocalQueue the Ray object waits in (types Cluster and Job; Kueue manages no RayService)."""

    name: str = Field(
        description=(
            "The LocalQueue in the workload's namespace: the Ray object gets the label kueue.x-k8s.io/queue-name,"
            " and Kueue holds it suspended until its ClusterQueue has quota. Must be allowed by the policy."
        ),
        pattern=DNS1123_SUBDOMAIN,
        min_length=1,
        max_length=63,  # a label value
    )
    priority_class: str | None = Field(
        default=None,
        description="A Kueue WorkloadPriorityClass: the label kueue.x-k8s.io/priority-class. Default: none.",
        pattern=DNS1123_SUBDOMAIN,
        min_length=1,
        max_length=63,
    )


class MLWorkloadSpec(ApiModel):
    """What to run: a Ray cluster, job or service, and what surrounds it on GKE."""

    model_config = with_cel(
        cel(
            "self.type == 'Job' ? has(self.job) : !has(self.job)",
            "spec.job is required for type Job and forbidden for other types",
        ),
        cel(
            "self.type == 'Service' ? has(self.serve) : !has(self.serve)",
            "spec.serve is required for type Service and forbidden for other types",
        ),
        cel(
            "!(self.type == 'Service' && has(self.suspend) && self.suspend)",
            "suspend applies to types Cluster and Job only",
        ),
        cel("self.type == 'Cluster' || !has(self.lifecycle)", "spec.lifecycle applies to type Cluster only"),
    )

    type: WorkloadType = Field(description="Cluster, Job or Service -> RayCluster, RayJob or RayService.")
    suspend: StrictBool = Field(default=False, description="Cluster/Job: delete the Ray pods, keep the object.")
    ray: RaySpec = Field(description="Ray version, image and environment.")
    head: HeadSpec = Field(default_factory=HeadSpec, description="The Ray head pod.")
    worker_groups: list[WorkerGroup] = Field(
        default_factory=list,
        max_length=32,
        description="Worker groups (0..n); names unique.",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
    )
    autoscaling: AutoscalingSpec = Field(default_factory=AutoscalingSpec, description="Ray autoscaler.")
    job: JobSpec | None = Field(default=None, description="Required for type Job, forbidden otherwise.")
    serve: ServeSpec | None = Field(default=None, description="Required for type Service, forbidden otherwise.")
    storage: StorageSpec | None = Field(default=None, description="A bucket granted to the workload identity.")
    identity: IdentitySpec = Field(default_factory=IdentitySpec, description="GCP identity (Workload Identity).")
    network: NetworkSpec = Field(default_factory=NetworkSpec, description="Network isolation of the Ray pods.")
    expose: ExposeSpec = Field(default_factory=ExposeSpec, description="Dashboard and Serve Ingresses.")
    lifecycle: LifecycleSpec | None = Field(default=None, description="Cluster: idle limit.")
    queue: QueueSpec | None = Field(
        default=None,
        description=(
            "Cluster and Job: wait for quota in this Kueue LocalQueue. Default: the policy's queues.default;"
            " none: not queued."
        ),
    )

    @model_validator(mode="after")
    def _type_sections(self) -> Self:
        problems = []
        if (self.type is WorkloadType.JOB) != (self.job is not None):
            problems.append("job is required for type Job and forbidden for other types")
        if (self.type is WorkloadType.SERVICE) != (self.serve is not None):
            problems.append("serve is required for type Service and forbidden for other types")
        if self.type is WorkloadType.SERVICE and self.suspend:
            problems.append("suspend applies to types Cluster and Job only")
        if self.type is not WorkloadType.CLUSTER and self.lifecycle is not None:
            problems.append("spec.lifecycle applies to type Cluster only")
        names = [group.name for group in self.worker_groups]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            problems.append(f"workerGroups names must be unique; repeated: {', '.join(duplicates)}")
        if problems:
            # One line per problem: the error formatter prints each on its own line.
            raise ValueError("\n".join(problems))
        return self

    @property
    def has_accelerators(self) -> bool:
        return any(group.accelerator is not None for group in self.worker_groups)

    @property
    def gpus_at_max_scale(self) -> int:
        return sum(group.gpus_at_max_scale for group in self.worker_groups)


class Condition(ApiModel):
    """A metav1.Condition."""

    type: str = Field(description="Condition type, e.g. Ready.")
    status: Literal["True", "False", "Unknown"] = Field(description="True, False or Unknown.")
    reason: str = Field(description="Machine-readable PascalCase reason.")
    message: str = Field(default="", description="Human-readable detail.")
    last_transition_time: str | None = Field(default=None, description="When status last changed (RFC 3339).")
    observed_generation: StrictInt | None = Field(default=None, description="The generation this reflects.")


class RayObjectStatus(ApiModel):
    """The Ray object the workload became."""

    kind: str = Field(description="RayCluster, RayJob or RayService.")
    name: str = Field(description="Its name.")
    state: str = Field(default="", description="Its state as KubeRay reports it.")
    workers: str = Field(
        default="", description="Ready and desired worker pods of its Ray cluster, as KubeRay counts them (2/4)."
    )


class NodePoolStatus(ApiModel):
    """One GKE node pool the workload uses."""

    name: str = Field(description="Node pool name.")
    capacity: Capacity = Field(description="Spot or OnDemand.")
    state: str = Field(default="", description="GKE status of the pool.")
    operation: str = Field(default="", description="A GKE operation in progress on it, by name.")
    attempts: StrictInt | None = Field(
        default=None, ge=0, description="Failed attempts to create it (unset once it exists); kept across restarts."
    )
    last_failure: str | None = Field(default=None, description="Why the last attempt failed: Reason: GKE's message.")
    next_attempt_time: str | None = Field(default=None, description="When the next attempt is due (RFC 3339).")


class IamBindingStatus(ApiModel):
    """One IAM binding the workload's identity needs, and whether the operator added it."""

    resource: str = Field(description="The service account or bucket, as an IAM resource name.")
    role: str = Field(description="The role granted.")
    member: str = Field(description="The member granted the role.")
    added_by_operator: StrictBool = Field(
        default=False, description="The operator added it, and removes it when no workload needs it any more."
    )


class GpuStatus(ApiModel):
    """GPUs the workload may use at its maximum scale."""

    requested: StrictInt = Field(description="GPUs at max scale.")
    accelerator: str = Field(default="", description="Accelerator types, comma-separated.")


class JobRunStatus(ApiModel):
    """The outcome of a Job workload."""

    status: str = Field(default="", description="Ray job status: PENDING, RUNNING, SUCCEEDED, FAILED, STOPPED.")
    job_id: str = Field(default="", description="Ray job id.")
    start_time: str | None = Field(default=None, description="When the job started.")
    end_time: str | None = Field(default=None, description="When the job ended.")
    attempts: StrictInt = Field(default=0, description="Attempts so far, retries included.")
    message: str = Field(default="", description="KubeRay's message.")


MAX_RECENT_PREEMPTIONS = 32


class PreemptionStatus(ApiModel):
    """One worker pod lost to a preemption."""

    time: str = Field(description="When Kubernetes marked the pod for termination (RFC 3339).")
    pod: str = Field(description="The worker pod.")
    node: str = Field(default="", description="The node it ran on.")
    group: str = Field(default="", description="Its worker group.")
    reason: str = Field(
        default="",
        description=(
            "Why: NodeShutdown (a Spot VM reclaimed), PreemptionByScheduler, DeletionByPodGC or"
            " DeletionByTaintManager (its node went away), TerminationByKubelet."
        ),
    )
    message: str = Field(default="", description="What Kubernetes said.")


class DisruptionsStatus(ApiModel):
    """Worker pods lost to preemptions (Spot reclaims, higher-priority pods, vanished nodes)."""

    count: StrictInt = Field(default=0, ge=0, description="Preempted worker pods so far.")
    last_preemption: PreemptionStatus | None = Field(default=None, description="The latest one.")
    recent_pods: list[str] = Field(
        default_factory=list,
        max_length=MAX_RECENT_PREEMPTIONS,
        description="UIDs of the latest preempted pods, oldest first: each pod is counted once.",
    )


class Phase(StrEnum):
    PENDING = "Pending"
    PROVISIONING = "Provisioning"
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    SUSPENDED = "Suspended"
    DELETING = "Deleting"


class IdleStatus(ApiModel):
    """The idle window and the runtime limit of a Cluster (controller/idle.py), kept in status so that a restart
    resumes them: the earlier of their deadlines, and which one it is."""

    since: str | None = Field(
        default=None, description="Since when the Ray cluster is seen idle without a break (RFC 3339)."
    )
    deadline: str = Field(description="When it is suspended, for the reason below, if nothing changes (RFC 3339).")
    reason: str | None = Field(
        default=None,
        description=(
            "Which limit the deadline is: IdleTimeout (idle since `since`) or RuntimeLimit (the policy's"
            " lifecycle.maxClusterRuntimeSeconds, from the creation or `resumedAt`). Absent: IdleTimeout."
        ),
    )
    resumed_at: str | None = Field(
        default=None,
        description="When a spec change last resumed it from the operator's suspension: the runtime counts from it.",
    )
    suspended_at: str | None = Field(
        default=None, description="When the operator suspended it for the reason above; a spec change resumes it."
    )
    suspended_generation: StrictInt | None = Field(
        default=None, description="The spec generation it was suspended at: any later one resumes it."
    )


class MLWorkloadStatus(ApiModel):
    """What the operator observed. Written by the operator only."""

    observed_generation: StrictInt | None = Field(default=None, description="The spec generation last acted on.")
    phase: Phase | None = Field(default=None, description="Pending, Provisioning, Running, Succeeded, ...")
    conditions: list[Condition] = Field(
        default_factory=list,
        description="kstatus-compatible conditions (Ready, Reconciling, Stalled, ...).",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    )
    ray: RayObjectStatus | None = Field(default=None, description="The Ray object.")
    node_pools: list[NodePoolStatus] = Field(default_factory=list, description="GKE node pools in use.")
    iam_bindings: list[IamBindingStatus] = Field(default_factory=list, description="IAM bindings in use.")
    gpus: GpuStatus | None = Field(default=None, description="GPUs at max scale.")
    dashboard_url: str | None = Field(default=None, alias="dashboardURL", description="Ray dashboard URL.")
    serve_url: str | None = Field(default=None, alias="serveURL", description="Ray Serve URL.")
    job: JobRunStatus | None = Field(default=None, description="Job outcome (type Job).")
    disruptions: DisruptionsStatus | None = Field(default=None, description="Worker pods lost to preemptions.")
    idle: IdleStatus | None = Field(
        default=None, description="Cluster: the idle window or runtime limit, or the suspension for it."
    )


class MLWorkload(ApiModel):
    """A Ray cluster, batch job or Serve service, with its GKE capacity, identity and exposure."""

    model_config = with_cel(
        cel(
            f"self.metadata.name.matches('{DNS1035_LABEL}')",
            "metadata.name must be a DNS-1035 label: lowercase letters, digits and '-', starting with a letter",
        ),
        cel(
            "self.metadata.name.size() <= (self.spec.type == 'Cluster' ? 50 : 47)",
            "metadata.name is too long: at most 50 characters for type Cluster and 47 for"
            " Job and Service (KubeRay derives longer names from it)",
        ),
    )

    api_version: Literal["mlworkload.io/v1alpha1"] = Field(default="mlworkload.io/v1alpha1", description="API version.")
    kind: Literal["MLWorkload"] = Field(default="MLWorkload", description="MLWorkload.")
    metadata: ObjectMeta = Field(default_factory=ObjectMeta, description="Standard object metadata.")
    spec: MLWorkloadSpec = Field(description="What to run.")
    status: MLWorkloadStatus | None = Field(default=None, description="What the operator observed.")

    @model_validator(mode="after")
    def _name_fits(self) -> Self:
        limit = MAX_NAME_LENGTH[self.spec.type.value]
        name = self.metadata.name
        if not name:
            raise ValueError("metadata.name is required")
        if not is_dns1035_label(name, max_length=63):
            raise ValueError(
                f"metadata.name {name!r} must be a DNS-1035 label: lowercase letters, digits and '-',"
                " starting with a letter and ending with a letter or digit"
            )
        if len(name) > limit:
            raise ValueError(
                f"metadata.name {name!r} has {len(name)} characters; type {self.spec.type.value} allows at"
                f" most {limit} because KubeRay derives longer names from it. Choose a shorter name"
            )
        return self

    @property
    def name(self) -> str:
        return self.metadata.name

    @property
    def namespace(self) -> str:
        return self.metadata.namespace or "default"
