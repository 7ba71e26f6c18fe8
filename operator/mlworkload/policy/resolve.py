"""Filling in what the user left to the platform: the effective workload the builders consume.

`resolve` never refuses anything; it records facts (such as a machine type it could not derive)
that the checks in `mlworkload.policy.checks` then judge. Builders only ever see a
`ResolvedWorkload` that passed those checks.
"""

from dataclasses import dataclass, field

from mlworkload.api.meta import ObjectMeta
from mlworkload.api.policy import MLWorkloadPolicy, MLWorkloadPolicySpec, PolicyGcp, SpotRule
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

BUILTIN_POLICY_NAME = "(built-in defaults)"
BUILTIN_POLICY = MLWorkloadPolicy(metadata=ObjectMeta(name=BUILTIN_POLICY_NAME))
"""What applies where no MLWorkloadPolicy selects the namespace: spot Preferred, Strict isolation,
no external exposure, no GCP identity and no buckets; accelerators and quota unrestricted."""

DEFAULT_IMAGE_REPOSITORY = "rayproject/ray"
DEFAULT_PYTHON_VARIANT = "py311"

_DEFAULT_CAPACITY = {
    SpotRule.REQUIRED: Capacity.SPOT,
    SpotRule.PREFERRED: Capacity.SPOT_WITH_FALLBACK,
    SpotRule.FORBIDDEN: Capacity.ON_DEMAND,
}


@dataclass(frozen=True, slots=True)
class ResolvedGroup:
    spec: WorkerGroup
    capacity: Capacity
    machine_type: str | None
    """None for a CPU group without machineType (it runs on the cluster's general nodes), or
    when no machine type is known for its accelerator (`machine_error` says why)."""
    machine_error: str | None = None

    @property
    def name(self) -> str:
        return self.spec.name


@dataclass(frozen=True, slots=True)
class ResolvedEndpoint:
    visibility: Visibility
    iap: bool
    host: str | None


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


def _resolve_group(group: WorkerGroup, spot: SpotRule) -> ResolvedGroup:
    capacity = group.capacity or _DEFAULT_CAPACITY[spot]
    if group.machine_type is not None or group.accelerator is None:
        return ResolvedGroup(group, capacity, group.machine_type)
    try:
        machine = default_machine(group.accelerator.type, group.accelerator.count)
    except UnknownMachine as error:
        return ResolvedGroup(group, capacity, None, machine_error=str(error))
    return ResolvedGroup(group, capacity, machine)


def _resolve_endpoint(endpoint: Endpoint | None, require_iap: bool) -> ResolvedEndpoint | None:
    if endpoint is None or not endpoint.enabled:
        return None
    iap = require_iap if endpoint.iap is None else endpoint.iap
    return ResolvedEndpoint(endpoint.visibility, iap, endpoint.host)


def resolve(workload: MLWorkload, policy: MLWorkloadPolicy | None, gcp: PolicyGcp | None) -> ResolvedWorkload:
    """The workload with every default applied from its policy (or the built-in defaults).

    `gcp` is the operator's own GKE cluster setting, used when the policy names none.
    """
    governing = policy or BUILTIN_POLICY
    rules = governing.spec
    spec = workload.spec
    cost_labels = {
        key: workload.metadata.labels[key] for key in rules.labels.required if key in workload.metadata.labels
    }
    deadline = None
    if spec.job is not None:
        deadline = spec.job.active_deadline_seconds or rules.lifecycle.max_job_runtime_seconds
    return ResolvedWorkload(
        workload=workload,
        policy_name=governing.name,
        policy=rules,
        gcp=rules.gcp or gcp,
        image=spec.ray.image or default_image(spec.ray.version, spec.has_accelerators),
        gcp_service_account=spec.identity.gcp_service_account or rules.identity.gcp_service_account,
        isolation=spec.network.isolation or rules.network.default_isolation,
        groups=tuple(_resolve_group(group, rules.capacity.spot) for group in spec.worker_groups),
        dashboard=_resolve_endpoint(spec.expose.dashboard, rules.expose.require_iap),
        serve=_resolve_endpoint(spec.expose.serve, rules.expose.require_iap),
        active_deadline_seconds=deadline,
        cost_labels=cost_labels,
    )
