"""Filling in what the user left to the platform: the effective workload the builders consume.

`resolve` never refuses anything; it records facts (such as a machine type it could not derive)
that the checks in `mlworkload.policy.checks` then judge. Builders only ever see a
`ResolvedWorkload` that passed those checks.
"""

import hashlib
import re
from dataclasses import dataclass, field

from mlworkload.api.meta import LabelSelector, NetworkPolicyPeer, ObjectMeta
from mlworkload.api.policy import MLWorkloadPolicy, MLWorkloadPolicySpec, PolicyGcp, PoolSharing, SpotRule, TokenAuth
from mlworkload.api.workload import (
    Capacity,
    Endpoint,
    Isolation,
    MLWorkload,
    Visibility,
    WorkerGroup,
    WorkloadType,
)
from mlworkload.gcp.machines import UnknownMachine, default_machine

BUILTIN_POLICY_NAME = "(none)"
BUILTIN_POLICY = MLWorkloadPolicy(metadata=ObjectMeta(name=BUILTIN_POLICY_NAME))
"""Resolves a workload no MLWorkloadPolicy governs, so that its refusal (`check_governed`) can still
report everything else about it. Nothing is ever admitted under it: default deny."""

DEFAULT_KUBERAY_NAMESPACE = "kuberay-system"
DEFAULT_KUBERAY_POD_LABELS = {"app.kubernetes.io/name": "kuberay-operator"}  # as KubeRay's Helm chart labels it
TOKEN_AUTH_SINCE = (2, 52)  # Ray's token authentication, which KubeRay's authOptions turns on

DEFAULT_IMAGE_REPOSITORY = "rayproject/ray"
DEFAULT_PYTHON_VARIANT = "py311"

_DEFAULT_CAPACITY = {
    SpotRule.REQUIRED: Capacity.SPOT,
    SpotRule.PREFERRED: Capacity.SPOT_WITH_FALLBACK,
    SpotRule.FORBIDDEN: Capacity.ON_DEMAND,
}


def kuberay_operator_peer(namespace: str, pod_labels: dict[str, str]) -> NetworkPolicyPeer:
    """KubeRay's operator pods as a NetworkPolicy peer."""
    return NetworkPolicyPeer(
        namespace_selector=LabelSelector(match_labels={"kubernetes.io/metadata.name": namespace}),
        pod_selector=LabelSelector(match_labels=dict(pod_labels)),
    )


@dataclass(frozen=True, slots=True)
class PlatformDefaults:
    """What the operator's settings supply where the governing policy is silent."""

    gcp: PolicyGcp | None = None
    kuberay_operator: NetworkPolicyPeer = field(
        default_factory=lambda: kuberay_operator_peer(DEFAULT_KUBERAY_NAMESPACE, DEFAULT_KUBERAY_POD_LABELS)
    )
    api_server_cidrs: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class ResolvedGroup:
    spec: WorkerGroup
    capacity: Capacity
    machine_type: str | None
    """None for a CPU group without machineType (it runs on the cluster's general nodes), or
    when no machine type is known for its accelerator (`machine_error` says why)."""
    machine_error: str | None = None
    tenant: str | None = None
    """Whose node pools the group runs on: the policy's (sharing Policy), or None for pools shared by shape."""

    @property
    def name(self) -> str:
        return self.spec.name


@dataclass(frozen=True, slots=True)
class ResolvedEndpoint:
    visibility: Visibility
    iap: bool
    host: str | None
    pre_shared_certificates: tuple[str, ...] = ()
    """The policy's regional certificates, for an Internal endpoint."""

    @property
    def managed_certificate(self) -> bool:
        """An External endpoint with a host gets a Google-managed certificate for it."""
        return self.visibility is Visibility.EXTERNAL and self.host is not None

    @property
    def https(self) -> bool:
        """Served over HTTPS (and never plain HTTP): whenever a certificate is available."""
        return self.managed_certificate or bool(self.pre_shared_certificates)


@dataclass(frozen=True, slots=True)
class ResolvedWorkload:
    workload: MLWorkload
    policy_name: str
    policy: MLWorkloadPolicySpec
    gcp: PolicyGcp | None
    image: str
    gcp_service_account: str | None
    isolation: Isolation
    groups: tuple[ResolvedGroup, ...]
    dashboard: ResolvedEndpoint | None
    serve: ResolvedEndpoint | None
    active_deadline_seconds: int | None
    cost_labels: dict[str, str] = field(default_factory=dict)
    kuberay_operator: NetworkPolicyPeer = field(default_factory=lambda: PlatformDefaults().kuberay_operator)
    api_server_cidrs: tuple[str, ...] = ()
    token_auth: bool = False
    pre_running_deadline_seconds: int | None = None
    """Job: spec.job.preRunningDeadlineSeconds, or the policy's lifecycle.maxJobPendingSeconds."""
    idle_seconds: int | None = None
    """Cluster with the autoscaler: spec.lifecycle.idleSeconds, or the policy's lifecycle.maxClusterIdleSeconds
    (controller/idle.py); None: never suspended for idleness."""
    queue: str | None = None
    """The Kueue LocalQueue: spec.queue.name, else (types Cluster and Job) the policy's queues.default. Set: Kueue
    owns the Ray object's spec.suspend (builders never send it) and no idle window applies."""
    priority_class: str | None = None
    """spec.queue.priorityClass: a Kueue WorkloadPriorityClass."""
    idle_suspended: bool = False
    """The operator holds the Ray cluster suspended for idleness (status.idle, set by the reconcile, never by
    resolve): the builders suspend it whatever spec.suspend says."""

    @property
    def name(self) -> str:
        return self.workload.name

    @property
    def namespace(self) -> str:
        return self.workload.namespace

    @property
    def type(self) -> WorkloadType:
        return self.workload.spec.type


def default_image(version: str, gpu: bool) -> str:
    suffix = "-gpu" if gpu else ""
    return f"{DEFAULT_IMAGE_REPOSITORY}:{version}-{DEFAULT_PYTHON_VARIANT}{suffix}"


TENANT_MAX = 40


def pool_tenant(policy_name: str) -> str:
    """The policy as it appears in pool names, node labels, taints and GCP labels (all accept [a-z0-9-]):
    its name with dots as dashes, and past 40 characters a prefix plus a hash so that it stays unique."""
    tenant = re.sub(r"[^a-z0-9-]+", "-", policy_name.lower()).strip("-") or "policy"
    if len(tenant) <= TENANT_MAX:
        return tenant
    digest = hashlib.sha256(policy_name.encode()).hexdigest()[:8]
    return f"{tenant[: TENANT_MAX - len(digest) - 1].rstrip('-')}-{digest}"


def _resolve_group(group: WorkerGroup, spot: SpotRule, tenant: str | None) -> ResolvedGroup:
    capacity = group.capacity or _DEFAULT_CAPACITY[spot]
    if group.machine_type is not None or group.accelerator is None:
        return ResolvedGroup(group, capacity, group.machine_type, tenant=tenant)
    try:
        machine = default_machine(group.accelerator.type, group.accelerator.count)
    except UnknownMachine as error:
        return ResolvedGroup(group, capacity, None, machine_error=str(error), tenant=tenant)
    return ResolvedGroup(group, capacity, machine, tenant=tenant)


def ray_version(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split("."))


def _token_auth(rule: TokenAuth, version: str) -> bool:
    if rule is TokenAuth.ENABLED:
        return ray_version(version)[:2] >= TOKEN_AUTH_SINCE
    return rule is TokenAuth.REQUIRED  # an older version under Required is refused by the checks


def _resolve_endpoint(
    endpoint: Endpoint | None, iap_by_default: bool, rules: MLWorkloadPolicySpec
) -> ResolvedEndpoint | None:
    if endpoint is None or not endpoint.enabled:
        return None
    iap = iap_by_default if endpoint.iap is None else endpoint.iap
    certificates = tuple(rules.expose.pre_shared_certificates) if endpoint.visibility is Visibility.INTERNAL else ()
    return ResolvedEndpoint(endpoint.visibility, iap, endpoint.host, certificates)


def idle_window(workload: MLWorkload, policy_max: int | None) -> int | None:
    """Seconds of idleness before a Cluster is suspended (controller/idle.py): its own spec.lifecycle.idleSeconds
    (check_lifecycle keeps it within the policy's cap), else the policy's maxClusterIdleSeconds. None: never;
    also for other types, and without the Ray autoscaler, whose scaling down is what idleness is seen by."""
    spec = workload.spec
    if spec.type is not WorkloadType.CLUSTER or not spec.autoscaling.enabled:
        return None
    own = spec.lifecycle.idle_seconds if spec.lifecycle is not None else None
    return own if own is not None else policy_max


def resolve_queue(workload: MLWorkload, rules: MLWorkloadPolicySpec) -> tuple[str | None, str | None]:
    """The LocalQueue and priority class: the workload's own, else the policy's default queue. A Service gets no
    default (Kueue manages RayJob and RayCluster, not RayService); one it names itself is refused by the checks."""
    own = workload.spec.queue
    if own is not None:
        return own.name, own.priority_class
    if workload.spec.type is WorkloadType.SERVICE:
        return None, None
    return rules.queues.default, None


def resolve(
    workload: MLWorkload, policy: MLWorkloadPolicy | None, defaults: PlatformDefaults | None = None
) -> ResolvedWorkload:
    """The workload with every default applied from its policy (or the built-in defaults), and where the
    policy is silent, from the operator's settings (`defaults`)."""
    defaults = defaults or PlatformDefaults()
    governing = policy or BUILTIN_POLICY
    rules = governing.spec
    spec = workload.spec
    cost_labels = {
        key: workload.metadata.labels[key] for key in rules.labels.required if key in workload.metadata.labels
    }
    tenant = pool_tenant(governing.name) if rules.node_pools.sharing is PoolSharing.POLICY else None
    deadline = pre_running = None
    if spec.job is not None:
        deadline = spec.job.active_deadline_seconds or rules.lifecycle.max_job_runtime_seconds
        pre_running = spec.job.pre_running_deadline_seconds or rules.lifecycle.max_job_pending_seconds
    queue, priority_class = resolve_queue(workload, rules)
    return ResolvedWorkload(
        workload=workload,
        policy_name=governing.name,
        policy=rules,
        gcp=rules.gcp or defaults.gcp,
        image=spec.ray.image or default_image(spec.ray.version, spec.has_accelerators),
        gcp_service_account=spec.identity.gcp_service_account or rules.identity.gcp_service_account,
        isolation=spec.network.isolation or rules.network.default_isolation,
        groups=tuple(_resolve_group(group, rules.capacity.spot, tenant) for group in spec.worker_groups),
        # The dashboard runs arbitrary code as the workload's Google identity: IAP unless asked otherwise.
        dashboard=_resolve_endpoint(spec.expose.dashboard, True, rules),
        serve=_resolve_endpoint(spec.expose.serve, bool(rules.expose.require_iap), rules),
        active_deadline_seconds=deadline,
        cost_labels=cost_labels,
        kuberay_operator=rules.network.kuberay_operator or defaults.kuberay_operator,
        api_server_cidrs=tuple(rules.network.api_server_cidrs) or defaults.api_server_cidrs,
        token_auth=_token_auth(rules.ray.token_auth, spec.ray.version),
        pre_running_deadline_seconds=pre_running,
        # Queued: Kueue owns spec.suspend, an idle suspension by the operator would fight its admission.
        idle_seconds=None if queue else idle_window(workload, rules.lifecycle.max_cluster_idle_seconds),
        queue=queue,
        priority_class=priority_class,
    )
