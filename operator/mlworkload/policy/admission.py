"""The admission verdict: the same code for `mlworkload validate`, the webhook and the reconciler."""

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from mlworkload.api.meta import LabelSelector
from mlworkload.api.policy import MLWorkloadPolicy
from mlworkload.api.workload import MLWorkload
from mlworkload.policy.checks import check_quota, check_workload
from mlworkload.policy.resolve import PlatformDefaults, ResolvedWorkload, resolve
from mlworkload.policy.selection import GoverningPolicies, select_policy
from mlworkload.problems import Problem


@dataclass(frozen=True, slots=True)
class Admission:
    resolved: ResolvedWorkload
    problems: list[Problem]

    @property
    def allowed(self) -> bool:
        return not self.problems

    @property
    def policy_name(self) -> str:
        return self.resolved.policy_name


@dataclass(frozen=True, slots=True)
class WorkloadGpus:
    """One workload's GPUs at max scale, for the namespace quota."""

    namespace: str
    name: str
    gpus: int

    @classmethod
    def of(cls, workload: MLWorkload) -> "WorkloadGpus":
        return cls(workload.namespace, workload.name, workload.spec.gpus_at_max_scale)


UNREADABLE_POLICY_RULE = "unreadable-policy"


@dataclass(frozen=True, slots=True)
class BrokenPolicy:
    """A stored MLWorkloadPolicy the operator cannot read. It must not be skipped: the namespaces it may
    govern would silently fall to another policy. `selector` is None when even that cannot be read."""

    name: str
    problem: str
    selector: LabelSelector | None
    priority: int | None = None  # None when even that cannot be read

    def may_govern(self, labels: Mapping[str, str] | None, readable: MLWorkloadPolicy | None) -> bool:
        """Whether it could be the governing policy: its selector may match, and no readable policy that
        governs the namespace certainly outranks it (higher priority; on a tie, the name sorting first)."""
        if self.priority is not None and readable is not None:
            outranked = (-readable.spec.priority, readable.name) < (-self.priority, self.name)
            if outranked:
                return False
        return self.selector is None or labels is None or self.selector.matches(dict(labels))


class GpuTotals(Protocol):
    """GPUs at max scale of the workloads the quota counts, summed per namespace (the quota's unit)."""

    def by_namespace(self) -> Iterable[tuple[str, int]]:
        """Every namespace that holds counted workloads, with their sum."""
        ...

    def of(self, namespace: str, name: str) -> int:
        """What one workload counts for (0 when it is not counted)."""
        ...


class UsageTotals:
    """`GpuTotals` summed from a list of workloads (the offline CLI, tests)."""

    def __init__(self, usage: Iterable[WorkloadGpus]) -> None:
        self._namespaces: dict[str, int] = {}
        self._workloads: dict[tuple[str, str], int] = {}
        for entry in usage:
            self._namespaces[entry.namespace] = self._namespaces.get(entry.namespace, 0) + entry.gpus
            key = (entry.namespace, entry.name)
            self._workloads[key] = self._workloads.get(key, 0) + entry.gpus

    def by_namespace(self) -> Iterable[tuple[str, int]]:
        return self._namespaces.items()

    def of(self, namespace: str, name: str) -> int:
        return self._workloads.get((namespace, name), 0)


@dataclass(slots=True)
class _Derived:
    """What one view works out on first use (never shared between views)."""

    governance: GoverningPolicies | None = None
    totals: GpuTotals | None = None


@dataclass(frozen=True, slots=True)
class ClusterView:
    """What admission needs to know beyond the workload itself.

    `default_labels` applies to namespaces missing from `namespace_labels`; None means "unknown",
    which is how the offline CLI makes every given policy govern every workload.

    Two optional fields let a long-lived owner (the operator: controller/view.py) hand over what it
    keeps up to date, so that a view costs O(1) in the number of workloads: `totals`, the usage summed
    per namespace (`usage` is then left empty), and `governance`, a cache of the governing policy per
    namespace, used only when it was built for these very `policies` objects.
    """

    policies: Sequence[MLWorkloadPolicy] = ()
    namespace_labels: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    default_labels: Mapping[str, str] | None = None
    usage: Sequence[WorkloadGpus] = ()
    broken: Sequence[BrokenPolicy] = ()
    totals: GpuTotals | None = None
    governance: GoverningPolicies | None = None
    _derived: _Derived = field(default_factory=_Derived, init=False, repr=False, compare=False)

    def labels_of(self, namespace: str) -> Mapping[str, str] | None:
        return self.namespace_labels.get(namespace, self.default_labels)

    def governing(self, namespace: str) -> MLWorkloadPolicy | None:
        """The policy that governs the namespace (None: none does)."""
        governance = self._derived.governance
        if governance is None:
            governance = self.governance
            if governance is None or not governance.built_for(self.policies):
                # Not shared, or shared for other policies (as after `dataclasses.replace(view, policies=...)`):
                # this view's own, so that each namespace is still resolved once per view.
                governance = GoverningPolicies(self.policies)
            self._derived.governance = governance
        return governance.of(namespace, self.labels_of(namespace))

    def gpu_totals(self) -> GpuTotals:
        if self.totals is not None:
            return self.totals
        if self._derived.totals is None:
            self._derived.totals = UsageTotals(self.usage)
        return self._derived.totals


def gpus_in_use(view: ClusterView, policy: MLWorkloadPolicy | None, excluding: MLWorkload) -> int:
    """GPUs at max scale of every other workload whose governing policy is this one.

    A namespace that a higher-priority policy governs does not count against this policy's quota,
    even when this policy's selector matches it too. Summed per namespace: the cost grows with the
    namespaces holding GPUs, not with the workloads in them.
    """
    if policy is None:
        return 0
    totals = view.gpu_totals()
    used = sum(gpus for namespace, gpus in totals.by_namespace() if gpus and _governs(view, namespace, policy))
    if _governs(view, excluding.namespace, policy):
        used -= totals.of(excluding.namespace, excluding.name)
    return used


def _governs(view: ClusterView, namespace: str, policy: MLWorkloadPolicy) -> bool:
    governing = view.governing(namespace)
    return governing is not None and governing.name == policy.name


def admit(
    workload: MLWorkload,
    policies: Iterable[MLWorkloadPolicy],
    namespace_labels: Mapping[str, str] | None,
    defaults: PlatformDefaults | None = None,
    gpus_of_others: int = 0,
) -> Admission:
    """Select the governing policy, apply its defaults and run every check, quota included."""
    return _verdict(workload, select_policy(policies, namespace_labels), defaults, lambda: gpus_of_others)


def admit_in(view: ClusterView, workload: MLWorkload, defaults: PlatformDefaults | None = None) -> Admission:
    """`admit` with the namespace's labels and the quota usage taken from a view of the cluster."""
    policy = view.governing(workload.namespace)
    verdict = _verdict(workload, policy, defaults, lambda: gpus_in_use(view, policy, excluding=workload))
    labels = view.labels_of(workload.namespace)
    unreadable = [
        Problem("metadata.namespace", rule=UNREADABLE_POLICY_RULE,
                message=f"MLWorkloadPolicy {broken.name} may govern this namespace and cannot be read"
                f" ({broken.problem}); its workloads are refused until the platform team fixes it")
        for broken in view.broken if broken.may_govern(labels, policy)
    ]  # fmt: skip
    return Admission(verdict.resolved, unreadable + verdict.problems) if unreadable else verdict


def _verdict(
    workload: MLWorkload,
    policy: MLWorkloadPolicy | None,
    defaults: PlatformDefaults | None,
    gpus_of_others: Callable[[], int],
) -> Admission:
    resolved = resolve(workload, policy, defaults)
    # The usage is asked for only when the quota can refuse: without a quota, or without GPUs, nothing is summed.
    quota_applies = resolved.policy.quota.max_gpus is not None and resolved.workload.spec.gpus_at_max_scale > 0
    problems = check_workload(resolved) + check_quota(resolved, gpus_of_others() if quota_applies else 0)
    return Admission(resolved, problems)
