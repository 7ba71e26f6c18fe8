"""Every policy check in api.md, each a pure function of the resolved workload.

A check returns problems, never raises: the caller shows all of them at once, each naming the
field, the offending value and what the policy allows.
"""

import re
from collections.abc import Callable, Iterable
from dataclasses import replace
from decimal import Decimal
from fnmatch import fnmatchcase

from mlworkload.api.policy import SpotRule, TokenAuth
from mlworkload.api.quantity import GIB, parse_quantity
from mlworkload.api.workload import Capacity, Isolation, Resources, UpgradeStrategyType, Visibility, WorkloadType
from mlworkload.constants import PORT_GCS
from mlworkload.gcp.machines import (
    CPU_FAMILIES,
    KNOWN_ACCELERATORS,
    MACHINES,
    MachineType,
    accelerator_fits_machine,
    disk_type_problem,
    general_machine_for,
    machines_for,
)
from mlworkload.policy.resolve import (
    BUILTIN_POLICY_NAME,
    TOKEN_AUTH_SINCE,
    ResolvedEndpoint,
    ResolvedWorkload,
    ray_version,
)
from mlworkload.problems import Problem

Check = Callable[[ResolvedWorkload], list[Problem]]
MANAGED_DOMAIN_MAX = 63
# A ManagedCertificate's domain, as its CRD (GoogleCloudPlatform/gke-managed-certs) validates it.
_MANAGED_DOMAIN = re.compile(
    rf"(?=.{{1,{MANAGED_DOMAIN_MAX}}}$)(([a-zA-Z0-9]+|[a-zA-Z0-9][-a-zA-Z0-9]*[a-zA-Z0-9])\.)+[a-zA-Z][-a-zA-Z0-9]*[a-zA-Z0-9]\.?"
)


def _listing(values: Iterable[str]) -> str:
    items = list(values)
    return ", ".join(items) if items else "none"


def _by(resolved: ResolvedWorkload) -> str:
    return f"policy {resolved.policy_name}"


def check_accelerators(resolved: ResolvedWorkload) -> list[Problem]:
    problems: list[Problem] = []
    allowed = resolved.policy.accelerators.allowed
    for index, group in enumerate(resolved.groups):
        accelerator = group.spec.accelerator
        if accelerator is None:
            continue
        path = f"spec.workerGroups[{index}].accelerator"
        if allowed is not None and accelerator.type not in allowed:
            problems.append(
                Problem(
                    f"{path}.type",
                    f"{accelerator.type!r} is not allowed by {_by(resolved)}; allowed: {_listing(allowed)}",
                )
            )
        elif allowed is None and accelerator.type not in KNOWN_ACCELERATORS and group.spec.machine_type is None:
            problems.append(
                Problem(
                    f"{path}.type",
                    f"unknown accelerator {accelerator.type!r}; known:"
                    f" {_listing(KNOWN_ACCELERATORS)}, or set machineType for another type",
                )
            )
        elif group.machine_error is not None:
            problems.append(Problem(path, group.machine_error))
        machine = group.spec.machine_type
        if (
            machine is not None
            and accelerator.type in KNOWN_ACCELERATORS
            and not accelerator_fits_machine(accelerator.type, accelerator.count, machine)
        ):
            try:
                fitting = _listing(machines_for(accelerator.type, accelerator.count))
            except ValueError:
                fitting = "none"
            problems.append(
                Problem(
                    f"spec.workerGroups[{index}].machineType",
                    f"{machine!r} cannot carry"
                    f" {accelerator.count} x {accelerator.type}; machine types that can: {fitting}",
                )
            )
    limit = resolved.policy.accelerators.max_per_workload
    total = resolved.workload.spec.gpus_at_max_scale
    if limit is not None and total > limit:
        problems.append(
            Problem(
                "spec.workerGroups",
                f"the workload needs {total} GPUs at max scale (maxReplicas x"
                f" accelerator.count, summed over groups); {_by(resolved)} allows at most {limit} per workload",
            )
        )
    return problems


def _format_gib(value: Decimal) -> str:
    return f"{(value / GIB).quantize(Decimal('0.1'))}Gi"


def _fit_problems(path: str, resources: Resources, machine: MachineType) -> list[Problem]:
    cpu, memory = parse_quantity(resources.cpu), parse_quantity(resources.memory)
    problems = []
    if cpu > machine.allocatable_cpu:
        problems.append(Problem(f"{path}.cpu", f"{resources.cpu} does not fit a {machine.name} node"
                                f" ({machine.allocatable_cpu.quantize(Decimal('0.01'))} CPUs allocatable);"
                                " request less or choose a larger machineType"))  # fmt: skip
    if memory > machine.allocatable_memory:
        problems.append(Problem(f"{path}.memory", f"{resources.memory} does not fit a {machine.name} node"
                                f" ({_format_gib(machine.allocatable_memory)} allocatable);"
                                " request less or choose a larger machineType"))  # fmt: skip
    return problems


def _general_fit_problems(path: str, resources: Resources) -> list[Problem]:
    if general_machine_for(parse_quantity(resources.cpu), parse_quantity(resources.memory)) is not None:
        return []
    return [
        Problem(
            path,
            f"cpu {resources.cpu} and memory {resources.memory} fit no general-purpose GKE machine"
            " type; the pod would stay Pending forever: request less",
        )
    ]


def check_resources_fit(resolved: ResolvedWorkload) -> list[Problem]:
    """A pod larger than its node's allocatable resources would stay Pending forever, and a machine type
    GKE does not sell would fail only when the node pool is created."""
    problems = _general_fit_problems("spec.head.resources", resolved.workload.spec.head.resources)
    for index, group in enumerate(resolved.groups):
        path = f"spec.workerGroups[{index}]"
        machine = MACHINES.get(group.machine_type or "")
        if group.spec.machine_type is not None and machine is None:
            problems.append(Problem(f"{path}.machineType", f"{group.spec.machine_type!r} is not a machine type the"
                                    " operator knows: the GPU machine types (g2, a2, a3, a4) and"
                                    f" {', '.join(CPU_FAMILIES)}-N in GCE's sizes"))  # fmt: skip
        elif machine is not None:
            problems += _fit_problems(f"{path}.resources", group.spec.resources, machine)
        elif group.spec.accelerator is None:
            problems += _general_fit_problems(f"{path}.resources", group.spec.resources)
    return problems


def check_boot_disk(resolved: ResolvedWorkload) -> list[Problem]:
    """Every group with a machine type runs on a pool of the policy's node settings: a boot disk type its
    machine series cannot take would fail only when GKE is asked for the pool."""
    disk = resolved.policy.node_pools.disk_type
    if disk is None:
        return []
    problems = []
    for index, group in enumerate(resolved.groups):
        why = disk_type_problem(disk.value, group.machine_type) if group.machine_type else None
        if why:
            problems.append(Problem(f"spec.workerGroups[{index}]", f"{why}, and the node pools of {_by(resolved)}"
                                    f" boot from {disk.value} (nodePools.diskType): choose another machine or"
                                    " accelerator, or ask the platform team for a disk type it takes"))  # fmt: skip
    return problems


def check_ray(resolved: ResolvedWorkload) -> list[Problem]:
    problems: list[Problem] = []
    rules = resolved.policy.ray
    version = resolved.workload.spec.ray.version
    if rules.allowed_versions is not None and not any(
        fnmatchcase(version, pattern) for pattern in rules.allowed_versions
    ):
        problems.append(
            Problem(
                "spec.ray.version",
                f"{version!r} is not allowed by {_by(resolved)}; allowed: {_listing(rules.allowed_versions)}",
            )
        )
    if rules.token_auth is TokenAuth.REQUIRED and ray_version(version)[:2] < TOKEN_AUTH_SINCE:
        since = ".".join(map(str, TOKEN_AUTH_SINCE))
        problems.append(
            Problem(
                "spec.ray.version",
                f"{version!r} has no token authentication, which {_by(resolved)} requires (ray.tokenAuth:"
                f" Required); use Ray {since}.0 or later",
            )
        )
    repositories = rules.image_repositories
    if repositories is not None and not any(resolved.image.startswith(prefix) for prefix in repositories):
        hint = "" if resolved.workload.spec.ray.image else " (the default image); set spec.ray.image to one"
        problems.append(
            Problem(
                "spec.ray.image",
                f"{resolved.image!r}{hint} is not from a repository {_by(resolved)} allows: {_listing(repositories)}",
            )
        )
    return problems


def check_identity(resolved: ResolvedWorkload) -> list[Problem]:
    """A namespace gets exactly the GCP identity and buckets its policy grants, nothing else."""
    problems: list[Problem] = []
    granted = resolved.policy.identity.gcp_service_account
    asked = resolved.workload.spec.identity.gcp_service_account
    if asked is not None and asked != granted:
        allowed = f"only {granted}" if granted else "none"
        problems.append(
            Problem(
                "spec.identity.gcpServiceAccount",
                f"{asked!r} is not granted to this namespace by {_by(resolved)}; allowed: {allowed}",
            )
        )
    storage = resolved.workload.spec.storage
    if storage is None:
        return problems
    patterns = resolved.policy.identity.allowed_buckets
    if not any(fnmatchcase(storage.bucket, pattern) for pattern in patterns):
        problems.append(
            Problem(
                "spec.storage.bucket",
                f"{storage.bucket!r} is not allowed by {_by(resolved)}; allowed: {_listing(patterns)}",
            )
        )
    has_principal = resolved.gcp is not None and resolved.gcp.project_number is not None
    if resolved.gcp_service_account is None and not has_principal:
        problems.append(
            Problem(
                "spec.storage",
                "bucket access needs a GCP identity, and none applies: the policy names"
                " no identity.gcpServiceAccount (nor gcp.projectNumber for direct Workload Identity)",
            )
        )
    return problems


def _check_dashboard_iap(resolved: ResolvedWorkload, endpoint: ResolvedEndpoint) -> list[Problem]:
    """The dashboard runs any code its visitors submit, as the workload's Google identity."""
    path = "spec.expose.dashboard.iap"
    if endpoint.iap:
        return []
    if endpoint.visibility is Visibility.EXTERNAL:
        return [Problem(path, "false is never allowed for an External dashboard: it runs any code its visitors"
                              " send, as the workload's Google identity; keep IAP on, or use Internal")]  # fmt: skip
    if resolved.policy.expose.require_iap is not False:
        return [Problem(path, f"false is not allowed for the dashboard: {_by(resolved)} does not say"
                              " requireIAP: false; keep IAP on")]  # fmt: skip
    return []


def _check_endpoint(resolved: ResolvedWorkload, which: str, endpoint: ResolvedEndpoint | None) -> list[Problem]:
    if endpoint is None:
        return []
    problems: list[Problem] = []
    rules = resolved.policy.expose
    path = f"spec.expose.{which}"
    if endpoint.visibility is Visibility.EXTERNAL and not rules.allow_external:
        problems.append(Problem(f"{path}.visibility", f"External is not allowed by {_by(resolved)}; use Internal"))
    if rules.require_iap and not endpoint.iap:
        problems.append(Problem(f"{path}.iap", f"false is not allowed: {_by(resolved)} requires IAP"))
    elif which == "dashboard":
        problems += _check_dashboard_iap(resolved, endpoint)
    host = endpoint.host
    if endpoint.managed_certificate and host is not None and not _MANAGED_DOMAIN.fullmatch(host):
        problems.append(Problem(f"{path}.host", f"{host!r} cannot have a Google-managed certificate: it must be a"
                                                f" fully qualified domain name of at most {MANAGED_DOMAIN_MAX}"
                                                " characters, e.g. llm.example.com"))  # fmt: skip
    if endpoint.iap and not endpoint.https:
        # IAP sits on an HTTPS load balancer: without a certificate nobody could pass it.
        if endpoint.visibility is Visibility.EXTERNAL:
            problems.append(
                Problem(
                    f"{path}.host",
                    "an External endpoint with IAP needs a host, for its"
                    " Google-managed certificate; set the DNS name it is served at",
                )
            )
        else:
            problems.append(
                Problem(
                    f"{path}.iap",
                    f"an Internal endpoint with IAP needs HTTPS, and {_by(resolved)}"
                    " names no certificate for it (expose.preSharedCertificates)",
                )
            )
    return problems


def check_exposure(resolved: ResolvedWorkload) -> list[Problem]:
    return _check_endpoint(resolved, "dashboard", resolved.dashboard) + _check_endpoint(
        resolved, "serve", resolved.serve
    )


def _selects_every_namespace(peer: object) -> bool:
    selector = getattr(peer, "namespace_selector", None)
    return selector is not None and not selector.match_labels and not selector.match_expressions


def check_network(resolved: ResolvedWorkload) -> list[Problem]:
    problems: list[Problem] = []
    rules = resolved.policy.network
    allowed = rules.allowed_isolations
    if allowed is not None and resolved.isolation not in allowed:
        asked = resolved.workload.spec.network.isolation is not None
        where = "spec.network.isolation" if asked else "spec.network.isolation (the policy's defaultIsolation)"
        problems.append(
            Problem(where, f"{resolved.isolation.value} is not allowed by {_by(resolved)};"
                           f" allowed: {_listing(level.value for level in allowed)}")
        )  # fmt: skip
    for index, peer in enumerate(resolved.workload.spec.network.allow_from):
        path = f"spec.network.allowFrom[{index}]"
        if not rules.allow_from_any_namespace and _selects_every_namespace(peer):
            problems.append(
                Problem(f"{path}.namespaceSelector", f"an empty selector (every namespace) is not allowed by"
                                                     f" {_by(resolved)}; select the namespaces by label")
            )  # fmt: skip
        problems += [
            Problem(f"{path}.ports[{position}].port", f"{PORT_GCS} is Ray's GCS, which holds the whole cluster's"
                                                      " state: it is never opened to other pods")
            for position, port in enumerate(peer.ports)
            if port.port == PORT_GCS
        ]  # fmt: skip
    autoscaled = resolved.workload.spec.autoscaling.enabled
    if autoscaled and resolved.isolation is not Isolation.NONE and not resolved.api_server_cidrs:
        problems.append(
            Problem("spec.autoscaling.enabled", "the Ray autoscaler must reach the Kubernetes API, and under"
                    f" {resolved.isolation.value} isolation nothing says where it is: {_by(resolved)} needs"
                    " network.apiServerCIDRs (or the operator setting MLW_API_SERVER_CIDRS)")
        )  # fmt: skip
    return problems


def check_governed(resolved: ResolvedWorkload) -> list[Problem]:
    """Default deny: a namespace no policy governs gets nothing."""
    if resolved.policy_name != BUILTIN_POLICY_NAME:
        return []
    return [
        Problem("metadata.namespace", f"no MLWorkloadPolicy governs namespace {resolved.namespace!r}: ask the"
                " platform team for one whose namespaceSelector matches it (or to enable the chart's defaultPolicy)")
    ]  # fmt: skip


def check_labels(resolved: ResolvedWorkload) -> list[Problem]:
    labels = resolved.workload.metadata.labels
    return [
        Problem(f"metadata.labels[{key}]", f"required by {_by(resolved)} (a cost label); set it")
        for key in resolved.policy.labels.required
        if not labels.get(key)
    ]


def check_capacity(resolved: ResolvedWorkload) -> list[Problem]:
    rule = resolved.policy.capacity.spot
    allowed = {
        SpotRule.REQUIRED: {Capacity.SPOT},
        SpotRule.FORBIDDEN: {Capacity.ON_DEMAND},
        SpotRule.PREFERRED: set(Capacity),
    }[rule]
    return [
        Problem(
            f"spec.workerGroups[{index}].capacity",
            f"{group.capacity.value} is not allowed: spot is"
            f" {rule.value} under {_by(resolved)}; allowed: {_listing(sorted(c.value for c in allowed))}",
        )
        for index, group in enumerate(resolved.groups)
        if group.capacity not in allowed
    ]


def check_lifecycle(resolved: ResolvedWorkload) -> list[Problem]:
    rules = resolved.policy.lifecycle
    lifecycle = resolved.workload.spec.lifecycle
    idle = lifecycle.idle_seconds if lifecycle is not None else None
    cap = rules.max_cluster_idle_seconds
    if idle is not None and cap is not None and idle > cap:
        allows = f"{cap} seconds {_by(resolved)} allows (lifecycle.maxClusterIdleSeconds)"
        return [Problem("spec.lifecycle.idleSeconds", f"{idle} exceeds the {allows}")]
    if idle is not None and not resolved.workload.spec.autoscaling.enabled:
        # Idleness is seen by the autoscaler's scaling down (controller/idle.py): without it, never.
        return [Problem("spec.lifecycle.idleSeconds", "needs spec.autoscaling.enabled: true: a Cluster is seen idle"
                        " when the Ray autoscaler has scaled every worker group down to its minReplicas")]  # fmt: skip
    job = resolved.workload.spec.job
    if job is None:
        return []
    limits = (
        ("activeDeadlineSeconds", job.active_deadline_seconds, rules.max_job_runtime_seconds, "maxJobRuntimeSeconds"),
        ("preRunningDeadlineSeconds", job.pre_running_deadline_seconds, rules.max_job_pending_seconds,
         "maxJobPendingSeconds"),
    )  # fmt: skip
    return [
        Problem(f"spec.job.{field}", f"{asked} exceeds the {limit} seconds {_by(resolved)} allows ({rule})")
        for field, asked, limit, rule in limits
        if asked is not None and limit is not None and asked > limit
    ]


def check_upgrade_strategy(resolved: ResolvedWorkload) -> list[Problem]:
    """A Service's upgrade strategy within the policy, and what KubeRay needs for it.

    GPU headroom: NewCluster runs a second Ray cluster of the same size until it serves (twice the Service's
    GPUs for the length of an upgrade), NewClusterWithIncrementalUpgrade up to maxSurgePercent more. The quota
    (check_quota) counts a Service's GPUs once, deliberately: the extra cluster lives only during an upgrade,
    and when its pods find no capacity KubeRay keeps the old cluster serving (the upgrade waits, the service
    does not go down). Platform teams who cannot afford the headroom allow only None (docs/platform/policies.md).
    """
    serve = resolved.workload.spec.serve
    if serve is None:
        return []
    asked = serve.effective_upgrade_strategy
    path = "spec.serve.upgradeStrategy"
    problems = []
    allowed = resolved.policy.lifecycle.upgrade_strategies
    listing = f"(lifecycle.allowedUpgradeStrategies); allowed: {_listing(strategy.value for strategy in allowed)}"
    if asked not in allowed and serve.upgrade_strategy is None:
        problems.append(Problem(path, f"none is set, so KubeRay's default {asked.value} applies, which {_by(resolved)}"
                                f" does not allow {listing}; set {path}.type"))  # fmt: skip
    elif asked not in allowed:
        problems.append(Problem(f"{path}.type", f"{asked.value} is not allowed by {_by(resolved)} {listing}"))
    incremental = asked is UpgradeStrategyType.NEW_CLUSTER_WITH_INCREMENTAL_UPGRADE
    if incremental and not resolved.workload.spec.autoscaling.enabled:
        # KubeRay's ValidateClusterUpgradeOptions: "Ray Autoscaler is required for NewClusterWithIncrementalUpgrade".
        problems.append(Problem(f"{path}.type", "NewClusterWithIncrementalUpgrade needs spec.autoscaling.enabled:"
                                " true: KubeRay grows the new cluster and shrinks the old one through the Ray"
                                " autoscaler"))  # fmt: skip
    return problems


# Kueue's RayJob and RayCluster webhooks (pkg/controller/jobs/raycluster/raycluster_webhook.go, ValidateCreate):
# "a kueue managed job can use autoscaling only when the ElasticJobsViaWorkloadSlices feature gate is on and the
# job is an elastic job", and at most 7 worker groups ("max podSets num - cluster head").
KUEUE_MAX_WORKER_GROUPS = 7


def check_queue(resolved: ResolvedWorkload) -> list[Problem]:
    """A Kueue queue: one the policy allows, on a kind Kueue manages, in a shape Kueue's webhooks admit."""
    spec = resolved.workload.spec
    if spec.type is WorkloadType.SERVICE:
        if spec.queue is None:
            return []
        # Kueue integrates ray.io/rayjob and ray.io/raycluster (pkg/controller/jobs/rayjob, .../raycluster), no
        # RayService: the label would be ignored and the service never held.
        return [Problem("spec.queue", "Kueue manages RayJob and RayCluster, not RayService: a Service cannot wait"
                        " in a Kueue queue; remove spec.queue (the policy's static GPU quota, quota.maxGPUs,"
                        " still applies)")]  # fmt: skip
    queue = resolved.queue
    if queue is None:
        return []
    queues = resolved.policy.queues
    problems = []
    if spec.queue is not None and not queues.allows(queue):
        problems.append(Problem("spec.queue.name", f"{queue!r} is not allowed by {_by(resolved)} (queues.allowed);"
                                f" allowed: {_listing(queues.allowed or [])}"))  # fmt: skip
    whose = "spec.queue" if spec.queue is not None else f"the default queue of {_by(resolved)} (queues.default)"
    if spec.suspend:
        problems.append(Problem("spec.suspend", f"the workload waits in Kueue queue {queue!r} ({whose}): Kueue"
                                " owns the Ray object's suspend and would resume it on admission; to stop it,"
                                " delete the workload"))  # fmt: skip
    if spec.autoscaling.enabled:
        problems.append(Problem("spec.autoscaling.enabled", f"the workload waits in Kueue queue {queue!r} ({whose}),"
                                " and Kueue refuses autoscaled Ray objects (\"a kueue managed job can use"
                                " autoscaling only when the ElasticJobsViaWorkloadSlices feature gate is on\"):"
                                " set a fixed size"))  # fmt: skip
    if len(spec.worker_groups) > KUEUE_MAX_WORKER_GROUPS:
        problems.append(
            Problem(
                "spec.workerGroups",
                f"{len(spec.worker_groups)} groups; Kueue admits at most"
                f" {KUEUE_MAX_WORKER_GROUPS} in a queued Ray object (queue {queue!r}, {whose})",
            )
        )
    return problems


CHECKS: tuple[Check, ...] = (
    check_governed,
    check_labels,
    check_ray,
    check_accelerators,
    check_resources_fit,
    check_boot_disk,
    check_capacity,
    check_identity,
    check_network,
    check_exposure,
    check_lifecycle,
    check_upgrade_strategy,
    check_queue,
)


def check_workload(resolved: ResolvedWorkload) -> list[Problem]:
    """Every single-object policy problem of a workload, in a stable order, tagged with its rule."""
    return [
        replace(problem, rule=check.__name__.removeprefix("check_")) for check in CHECKS for problem in check(resolved)
    ]


def check_quota(resolved: ResolvedWorkload, gpus_of_others: int) -> list[Problem]:
    """The cross-object rule: all governed workloads together stay within the GPU quota.

    A Service counts its GPUs once, also under the NewCluster upgrade strategy, whose upgrades run a second
    cluster for a while: see check_upgrade_strategy."""
    quota = resolved.policy.quota.max_gpus
    own = resolved.workload.spec.gpus_at_max_scale
    if quota is None or own == 0 or gpus_of_others + own <= quota:
        return []
    return [
        Problem(
            "spec.workerGroups",
            rule="quota",
            message=f"the workload needs {own} GPUs at max scale and the namespaces governed"
            f" by {_by(resolved)} already use {gpus_of_others} of their quota of {quota} (quota.maxGPUs)",
        )
    ]
