"""MLWorkloadPolicy: what the platform team allows each namespace, and the defaults it sets.

Omitting a section means "no restriction" for that dimension, with one deliberate exception:
GCP identity and buckets are granted only when a policy names them, so that a namespace can never
obtain a Google identity nobody gave it.
"""

import re
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import Field, StrictBool, StrictInt, field_validator, model_validator

from mlworkload.api.base import ApiModel, cel, with_cel
from mlworkload.api.meta import DNS1123_SUBDOMAIN, LabelSelector, NetworkPolicyPeer, ObjectMeta, valid_cidrs
from mlworkload.api.workload import GSA_PATTERN, INT32_MAX, Isolation, UpgradeStrategyType
from mlworkload.gcp.labels import GCP_LABEL_VALUE_PATTERN, MAX_POLICY_LABELS, label_problems
from mlworkload.gcp.machines import GKE_ACCELERATORS, accelerator_machines, disk_type_problem

# Google Front End and health-check source ranges (documented by Google for GCLB backends).
GOOGLE_LB_SOURCE_RANGES = ("35.191.0.0/16", "130.211.0.0/22")

_BUCKET_PATTERN = re.compile(r"gs://[a-z0-9._*?\[\]!-]+")
_IMAGE_PREFIX = re.compile(r"[a-z0-9][a-zA-Z0-9._:/@-]*")
_IAM_MEMBER = re.compile(r"(user|group|serviceAccount):[^\s@]+@[^\s@]+\.[^\s@]+|domain:[a-z0-9.-]+\.[a-z]{2,}")
_GCE_NAME = re.compile(r"[a-z]([-a-z0-9]{0,61}[a-z0-9])?")


def _refuse(problems: list[str]) -> None:
    if problems:
        raise ValueError("\n".join(problems))


def _version_pattern_problem(pattern: str) -> str | None:
    """A pattern no X.Y.Z version can ever match (`2.41` for `2.41.*`) is a mistake, not a rule."""
    shaped = re.fullmatch(r"[0-9*?]+(\.[0-9*?]+)*", pattern) is not None
    if shaped and (pattern.count(".") == 2 or pattern.endswith("*")):  # a trailing * takes the rest
        return None
    return f"{pattern!r} can never match a Ray version X.Y.Z; write e.g. '2.41.*' or '2.41.0'"


class SpotRule(StrEnum):
    REQUIRED = "Required"
    PREFERRED = "Preferred"
    FORBIDDEN = "Forbidden"


class LocationPolicy(StrEnum):
    ANY = "ANY"
    BALANCED = "BALANCED"


class PoolSharing(StrEnum):
    POLICY = "Policy"
    CLUSTER = "Cluster"


class DiskType(StrEnum):
    PD_STANDARD = "pd-standard"
    PD_BALANCED = "pd-balanced"
    PD_SSD = "pd-ssd"
    HYPERDISK_BALANCED = "hyperdisk-balanced"


class ImageType(StrEnum):
    """GKE's Linux node images with containerd (the Docker images are gone since GKE 1.24)."""

    COS_CONTAINERD = "COS_CONTAINERD"
    UBUNTU_CONTAINERD = "UBUNTU_CONTAINERD"


# GKE's boot disk bounds: "The smallest allowed disk size is 10GB" (NodeConfig.disk_size_gb); 64 TiB is the
# largest Persistent Disk or Hyperdisk Balanced volume.
DISK_SIZE_GB_MIN = 10
DISK_SIZE_GB_MAX = 65536
_STREAMING_RULE = (
    "!has(self.imageStreaming) || !self.imageStreaming || !has(self.imageType) || self.imageType == 'COS_CONTAINERD'"
)
_STREAMING_MESSAGE = (
    "imageStreaming needs imageType COS_CONTAINERD (GKE streams images only to Container-Optimized OS nodes):"
    " set imageType to COS_CONTAINERD or leave it out, or turn imageStreaming off"
)


class PolicyGcp(ApiModel):
    """The GKE cluster that the governed namespaces' node pools and identities live in."""

    project: str = Field(description="GCP project id.", pattern=r"^[a-z][a-z0-9-]{4,28}[a-z0-9]$")
    location: str = Field(description="Region or zone of the GKE cluster.", min_length=1, max_length=63)
    cluster: str = Field(description="GKE cluster name.", pattern=r"^[a-z]([-a-z0-9]{0,38}[a-z0-9])?$")
    node_locations: list[str] = Field(default_factory=list, description="Zones for node pools. Default: the cluster's.")
    project_number: str | None = Field(
        default=None,
        description="Project number, for direct Workload Identity Federation principals when no GSA is set.",
        pattern=r"^[0-9]{6,20}$",
    )

    @property
    def cluster_path(self) -> str:
        return f"projects/{self.project}/locations/{self.location}/clusters/{self.cluster}"


class PolicyIdentity(ApiModel):
    """The only GCP identity and buckets the governed namespaces get."""

    gcp_service_account: str | None = Field(
        default=None,
        description="The only Google service account workloads may use; also the default. None: no GSA.",
        pattern=GSA_PATTERN,
    )
    allowed_buckets: list[str] = Field(
        default_factory=list,
        description="Bucket patterns (gs://team-*, shell-style globs) workloads may be granted. Empty: none.",
    )

    @field_validator("allowed_buckets")
    @classmethod
    def _bucket_patterns(cls, patterns: list[str]) -> list[str]:
        _refuse([f"{pattern!r} is not a bucket pattern: write gs://NAME, with * and ? as wildcards (gs://team-*)"
                 for pattern in patterns if not _BUCKET_PATTERN.fullmatch(pattern)])  # fmt: skip
        return patterns


class PolicyAccelerators(ApiModel):
    """Which GPUs, and how many per workload."""

    allowed: list[str] | None = Field(
        default=None, description="Accelerator types allowed (GKE's names). Omitted: any type the operator knows."
    )

    @field_validator("allowed")
    @classmethod
    def _gke_names(cls, allowed: list[str] | None) -> list[str] | None:
        unknown = [name for name in allowed or [] if name not in GKE_ACCELERATORS]
        _refuse([f"{name!r} is not a GKE accelerator type; GKE's: {', '.join(GKE_ACCELERATORS)}" for name in unknown])
        return allowed

    max_per_workload: StrictInt | None = Field(
        default=None, ge=0, description="Most GPUs one workload may use at its maximum scale."
    )


class PolicyQuota(ApiModel):
    """GPU quota of all governed namespaces together."""

    max_gpus: StrictInt | None = Field(
        default=None,
        ge=0,
        alias="maxGPUs",
        description="Most GPUs all workloads of the governed namespaces may use together, at max scale.",
    )


# A Kueue LocalQueue's name (a DNS-1123 subdomain) that is also a label value (63 characters at most).
QueueName = Annotated[str, Field(pattern=DNS1123_SUBDOMAIN, min_length=1, max_length=63)]


class PolicyQueues(ApiModel):
    """Kueue LocalQueues the governed workloads wait in (types Cluster and Job)."""

    default: QueueName | None = Field(
        default=None,
        description=(
            "The LocalQueue of workloads that name none (spec.queue). Omitted: such workloads are not queued."
        ),
    )
    allowed: list[QueueName] | None = Field(
        default=None,
        description="LocalQueues workloads may name (the default must be one of them). Omitted: any.",
        json_schema_extra={"x-kubernetes-list-type": "set"},
    )

    @model_validator(mode="after")
    def _default_is_allowed(self) -> "PolicyQueues":
        if self.default is not None and self.allowed is not None and self.default not in self.allowed:
            raise ValueError(f"queues.default {self.default!r} is not in queues.allowed ({', '.join(self.allowed)})")
        return self

    def allows(self, queue: str) -> bool:
        return self.allowed is None or queue in self.allowed


class PolicyCapacity(ApiModel):
    """Spot rules."""

    spot: SpotRule = Field(
        default=SpotRule.PREFERRED,
        description=(
            "Required: every worker group on Spot; Forbidden: OnDemand only; Preferred: any, default"
            " SpotWithFallback. Default Preferred."
        ),
    )


class PolicyNodePools(ApiModel):
    """Node pools the operator creates for the governed namespaces, and the settings of their nodes."""

    model_config = with_cel(cel(_STREAMING_RULE, _STREAMING_MESSAGE))

    max_nodes_per_pool: StrictInt = Field(default=8, ge=1, le=1000, description="Autoscaling cap per pool. Default 8.")
    location_policy: LocationPolicy = Field(
        default=LocationPolicy.ANY,
        description="GKE autoscaler location policy, ANY or BALANCED. Default ANY.",
    )
    sharing: PoolSharing = Field(
        default=PoolSharing.POLICY,
        description=(
            "Policy: the governed namespaces get node pools of their own (the pool's name, node label and taint"
            " carry the policy), so their pods never share a node with another team's. Cluster: pools are shared"
            " by shape with every other policy that says Cluster; a shared pool takes the strictest limits of the"
            " workloads using it. Default Policy."
        ),
    )
    service_account: str | None = Field(
        default=None,
        description=(
            "Google service account the nodes run as; it needs roles/container.defaultNodeServiceAccount. Set"
            " when a pool is created. Omitted: GKE's default, the Compute Engine default service account, which"
            " CIS GKE 5.2.1 advises against."
        ),
        pattern=GSA_PATTERN,
    )
    disk_type: DiskType | None = Field(
        default=None,
        description=(
            "Boot disk type of the nodes: pd-standard, pd-balanced, pd-ssd or hyperdisk-balanced (A3 Ultra, A4,"
            " N4 and C4 machines take only hyperdisk-balanced; G2, C3 and A3 no pd-standard). Changed in place"
            " (GKE recreates the nodes). Omitted: GKE's default, pd-balanced."
        ),
    )
    disk_size_gb: StrictInt | None = Field(
        default=None,
        ge=DISK_SIZE_GB_MIN,
        le=DISK_SIZE_GB_MAX,
        description="Boot disk size in GB (10-65536). Changed in place (GKE recreates the nodes). Omitted: 100.",
    )
    image_type: ImageType | None = Field(
        default=None,
        description=(
            "Node image: COS_CONTAINERD or UBUNTU_CONTAINERD. Changed in place (GKE recreates the nodes)."
            " Omitted: GKE's default, COS_CONTAINERD."
        ),
    )
    secure_boot: StrictBool | None = Field(
        default=None,
        description=(
            "Shielded nodes' Secure Boot (integrity monitoring stays on). Set when a pool is created."
            " Omitted: GKE's default, off."
        ),
    )
    image_streaming: StrictBool | None = Field(
        default=None,
        description=(
            "GKE image streaming (Artifact Registry images start before they are fully pulled); needs"
            " COS_CONTAINERD. Changed in place. Omitted: off."
        ),
    )
    resource_labels: dict[str, Annotated[str, Field(max_length=63, pattern=GCP_LABEL_VALUE_PATTERN)]] = Field(
        default_factory=dict,
        max_length=MAX_POLICY_LABELS,
        description=(
            "GCP labels (cost-center, team, ...) on the pools the operator creates for this policy, their VMs"
            " and disks, for billing. Keys managed-by, mlworkload-* and goog-* are reserved. Kept in step in"
            " place."
        ),
    )

    @field_validator("service_account", mode="before")
    @classmethod
    def _gsa_email(cls, email: Any) -> Any:
        if isinstance(email, str) and not re.fullmatch(GSA_PATTERN, email):
            raise ValueError(f"{email!r} is not a Google service account email (NAME@PROJECT.iam.gserviceaccount.com);"
                             " leave serviceAccount out for GKE's default")  # fmt: skip
        return email

    @field_validator("resource_labels", mode="before")
    @classmethod
    def _gcp_labels(cls, labels: Any) -> Any:
        if isinstance(labels, dict):
            _refuse(label_problems(labels))
        return labels

    @model_validator(mode="after")
    def _streaming_needs_cos(self) -> "PolicyNodePools":
        if self.image_streaming and self.image_type not in (None, ImageType.COS_CONTAINERD):
            raise ValueError(f"{_STREAMING_MESSAGE} (imageType is {self.image_type.value})")
        return self


class TokenAuth(StrEnum):
    DISABLED = "Disabled"
    ENABLED = "Enabled"
    REQUIRED = "Required"


class PolicyRay(ApiModel):
    """Ray versions and image sources."""

    allowed_versions: list[str] | None = Field(
        default=None, description="Version patterns (2.41.*). Omitted: any version."
    )
    image_repositories: list[str] | None = Field(
        default=None,
        description="Image prefixes allowed (rayproject/, us-docker.pkg.dev/p/ray/). Omitted: any.",
    )

    @field_validator("allowed_versions")
    @classmethod
    def _version_patterns(cls, patterns: list[str] | None) -> list[str] | None:
        _refuse([problem for pattern in patterns or [] if (problem := _version_pattern_problem(pattern))])
        return patterns

    @field_validator("image_repositories")
    @classmethod
    def _image_prefixes(cls, prefixes: list[str] | None) -> list[str] | None:
        _refuse([f"{prefix!r} is not the start of an image reference (e.g. rayproject/ or us-docker.pkg.dev/p/ray/)"
                 for prefix in prefixes or [] if not _IMAGE_PREFIX.fullmatch(prefix)])  # fmt: skip
        return prefixes

    token_auth: TokenAuth = Field(
        default=TokenAuth.DISABLED,
        description=(
            "Ray token authentication (KubeRay authOptions, Ray >= 2.52). Disabled; Enabled: on for Ray"
            " versions that support it; Required: on, and older Ray versions are refused. Default Disabled."
        ),
    )


class PolicyNetwork(ApiModel):
    """Network defaults and allowances."""

    @field_validator("api_server_cidrs", "load_balancer_source_ranges")
    @classmethod
    def _are_cidrs(cls, cidrs: list[str]) -> list[str]:
        return valid_cidrs(cidrs)

    @model_validator(mode="after")
    def _default_is_allowed(self) -> "PolicyNetwork":
        allowed = self.allowed_isolations
        if allowed is not None and self.default_isolation not in allowed:
            raise ValueError(f"defaultIsolation {self.default_isolation.value} is not in allowedIsolations"
                             f" ({', '.join(level.value for level in allowed)})")  # fmt: skip
        return self

    default_isolation: Isolation = Field(
        default=Isolation.STRICT, description="Isolation for workloads that set none. Default Strict."
    )
    allowed_isolations: list[Isolation] | None = Field(
        default=None, description="Isolation levels workloads may choose. Omitted: all three."
    )
    allow_from_any_namespace: StrictBool = Field(
        default=True,
        description=("Admit allowFrom peers that select every namespace (an empty namespaceSelector). Default true."),
    )
    kuberay_operator: NetworkPolicyPeer | None = Field(
        default=None,
        description=(
            "KubeRay's operator, allowed to the Ray head's dashboard (8265) to follow jobs and Serve."
            " Default: the operator setting (namespace kuberay-system, app.kubernetes.io/name=kuberay-operator)."
        ),
    )
    metrics_scrapers: list[NetworkPolicyPeer] = Field(
        default_factory=list, description="Peers allowed to Ray's metrics port (8080) only. Default none."
    )
    api_server_cidrs: list[str] = Field(
        default_factory=list,
        alias="apiServerCIDRs",
        description=(
            "Where an autoscaled Ray head reaches the Kubernetes API on 443 (the control plane's endpoint)."
            " Default: the operator setting."
        ),
    )
    allowed_egress: list[NetworkPolicyPeer] = Field(
        default_factory=list,
        description="Egress peers every Ray pod may reach besides the cluster, DNS and Google APIs.",
    )
    load_balancer_source_ranges: list[str] = Field(
        default_factory=lambda: list(GOOGLE_LB_SOURCE_RANGES),
        description=(
            "Source ranges of load balancer proxies and health checks, admitted to exposed ports."
            " Default: Google's 35.191.0.0/16 and 130.211.0.0/22; add the proxy-only subnet for"
            " Internal endpoints."
        ),
    )


class PolicyExpose(ApiModel):
    """Exposure rules."""

    @field_validator("iap_accessors")
    @classmethod
    def _members(cls, members: list[str]) -> list[str]:
        _refuse([f"{member!r} is not an IAM member: user:, group:, serviceAccount: with an email, or domain:"
                 for member in members if not _IAM_MEMBER.fullmatch(member)])  # fmt: skip
        return members

    @field_validator("pre_shared_certificates")
    @classmethod
    def _certificate_names(cls, names: list[str]) -> list[str]:
        _refuse([f"{name!r} is not an SSL certificate name (lowercase letters, digits and '-', at most 63)"
                 for name in names if not _GCE_NAME.fullmatch(name)])  # fmt: skip
        return names

    allow_external: StrictBool = Field(default=False, description="Allow External endpoints. Default false.")
    require_iap: StrictBool | None = Field(
        default=None,
        alias="requireIAP",
        description=(
            "true: every endpoint must use IAP (and defaults to it). Only an explicit false lets an Internal"
            " dashboard go without IAP."
        ),
    )
    iap_accessors: list[str] = Field(
        default_factory=list,
        description=(
            "Members (user:, group:, domain:, serviceAccount:) granted roles/iap.httpsResourceAccessor on every"
            " IAP endpoint of the governed workloads."
        ),
    )
    pre_shared_certificates: list[str] = Field(
        default_factory=list,
        description="Regional SSL certificates (by name) for Internal endpoints' HTTPS. Required for Internal IAP.",
    )


class PolicyLabels(ApiModel):
    """Labels workloads must carry; they are copied to every object and pod as cost labels."""

    required: list[str] = Field(default_factory=list, description="Label keys every workload must set.")


# NewClusterWithIncrementalUpgrade needs what the operator cannot see from here (Gateway API's CRDs, a Gateway
# controller and GatewayClass, KubeRay's RayServiceIncrementalUpgrade feature gate): allowed only when listed.
DEFAULT_UPGRADE_STRATEGIES = (UpgradeStrategyType.NEW_CLUSTER, UpgradeStrategyType.NONE)


class PolicyLifecycle(ApiModel):
    """Time limits, and how services are upgraded."""

    max_cluster_idle_seconds: StrictInt | None = Field(
        default=None,
        gt=0,
        le=INT32_MAX,
        description=(
            "Cluster type: suspend the RayCluster after this many seconds idle (every worker group at its"
            " minReplicas, as KubeRay reports it). Default and cap for spec.lifecycle.idleSeconds."
        ),
    )
    max_cluster_runtime_seconds: StrictInt | None = Field(
        default=None,
        gt=0,
        le=INT32_MAX,
        description=(
            "The longest a Cluster or Service may run, from its creation or its last resume (any spec change):"
            " then a Cluster's RayCluster is suspended, and a Service's RayService is deleted, so its Serve"
            " endpoints are down until a spec change brings a new one (reason RuntimeLimit)."
        ),
    )
    max_job_runtime_seconds: StrictInt | None = Field(
        default=None, gt=0, le=INT32_MAX, description="Cap and default for job.activeDeadlineSeconds."
    )
    max_job_pending_seconds: StrictInt | None = Field(
        default=None,
        gt=0,
        le=INT32_MAX,
        description=(
            "Cap and default for job.preRunningDeadlineSeconds: how long a job may wait to start running"
            " (for capacity, quota) before KubeRay fails it."
        ),
    )
    allowed_upgrade_strategies: list[UpgradeStrategyType] | None = Field(
        default=None,
        description=(
            "Service upgrade strategies workloads may use (serve.upgradeStrategy.type; none set counts as"
            " KubeRay's default, NewCluster). Omitted: NewCluster and None. List NewClusterWithIncrementalUpgrade"
            " only where Gateway API and a GatewayClass are installed and KubeRay's RayServiceIncrementalUpgrade"
            " feature gate is on."
        ),
        min_length=1,
        json_schema_extra={"x-kubernetes-list-type": "set"},
    )

    @property
    def upgrade_strategies(self) -> tuple[UpgradeStrategyType, ...]:
        """The strategies allowed: the list, or by default all but the one that needs Gateway API."""
        if self.allowed_upgrade_strategies is None:
            return DEFAULT_UPGRADE_STRATEGIES
        return tuple(self.allowed_upgrade_strategies)

    @field_validator("allowed_upgrade_strategies")
    @classmethod
    def _unique_strategies(cls, strategies: list[UpgradeStrategyType] | None) -> list[UpgradeStrategyType] | None:
        repeated = sorted({s.value for s in strategies or [] if (strategies or []).count(s) > 1})
        _refuse([f"upgrade strategies must be unique; repeated: {', '.join(repeated)}"] if repeated else [])
        return strategies


class MLWorkloadPolicySpec(ApiModel):
    """What the governed namespaces may use, and the defaults they get."""

    namespace_selector: LabelSelector | None = Field(
        default=None, description="Namespaces this policy governs. Omitted or empty: every namespace."
    )
    priority: StrictInt = Field(default=0, description="When several policies match, highest wins; ties: by name.")
    gcp: PolicyGcp | None = Field(default=None, description="GKE cluster. Default: the operator's settings.")
    identity: PolicyIdentity = Field(default_factory=PolicyIdentity, description="GCP identity and buckets.")
    accelerators: PolicyAccelerators = Field(default_factory=PolicyAccelerators, description="GPU rules.")
    quota: PolicyQuota = Field(default_factory=PolicyQuota, description="GPU quota.")
    queues: PolicyQueues = Field(default_factory=PolicyQueues, description="Kueue LocalQueues.")
    capacity: PolicyCapacity = Field(default_factory=PolicyCapacity, description="Spot rules.")
    node_pools: PolicyNodePools = Field(default_factory=PolicyNodePools, description="Node pool settings.")
    ray: PolicyRay = Field(default_factory=PolicyRay, description="Ray versions and images.")
    network: PolicyNetwork = Field(default_factory=PolicyNetwork, description="Network rules.")
    expose: PolicyExpose = Field(default_factory=PolicyExpose, description="Exposure rules.")
    labels: PolicyLabels = Field(default_factory=PolicyLabels, description="Required (cost) labels.")
    lifecycle: PolicyLifecycle = Field(default_factory=PolicyLifecycle, description="Time limits.")

    @model_validator(mode="after")
    def _disk_fits_the_allowed_gpus(self) -> "MLWorkloadPolicySpec":
        """A disk type the machines of an allowed accelerator cannot boot from would fail every pool of it."""
        disk = self.node_pools.disk_type
        if disk is None:
            return self
        problems = []
        for accelerator in self.accelerators.allowed or []:
            reasons = sorted({why for machine in accelerator_machines(accelerator)
                              if (why := disk_type_problem(disk.value, machine))})  # fmt: skip
            problems += [f"nodePools.diskType: {reason} ({accelerator} is in accelerators.allowed); choose a disk"
                         f" type its machines take, or take {accelerator} out of accelerators.allowed"
                         for reason in reasons]  # fmt: skip
        _refuse(problems)
        return self


class MLWorkloadPolicy(ApiModel):
    """Cluster-scoped rules and defaults for the MLWorkloads of selected namespaces."""

    model_config = with_cel(cel("size(self.metadata.name) <= 63", "metadata.name must be at most 63 characters"))

    api_version: Literal["mlworkload.io/v1alpha1"] = Field(default="mlworkload.io/v1alpha1", description="API version.")
    kind: Literal["MLWorkloadPolicy"] = Field(default="MLWorkloadPolicy", description="MLWorkloadPolicy.")
    metadata: ObjectMeta = Field(default_factory=ObjectMeta, description="Standard object metadata.")
    spec: MLWorkloadPolicySpec = Field(default_factory=MLWorkloadPolicySpec, description="Rules and defaults.")

    @property
    def name(self) -> str:
        return self.metadata.name
