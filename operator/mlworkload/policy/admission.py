"""The admission verdict: the same code for `mlworkload validate`, the webhook and the reconciler."""

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from mlworkload.api.meta import LabelSelector
from mlworkload.api.policy import MLWorkloadPolicy
from mlworkload.api.workload import MLWorkload
from mlworkload.policy.checks import check_quota, check_workload
from mlworkload.policy.resolve import PlatformDefaults, ResolvedWorkload, resolve
from mlworkload.policy.selection import select_policy
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


@dataclass(frozen=True, slots=True)
class ClusterView:
    """What admission needs to know beyond the workload itself.

    `default_labels` applies to namespaces missing from `namespace_labels`; None means "unknown",
    which is how the offline CLI makes every given policy govern every workload.
    """

    policies: Sequence[MLWorkloadPolicy] = ()
    namespace_labels: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    default_labels: Mapping[str, str] | None = None
    usage: Sequence[WorkloadGpus] = ()
    broken: Sequence[BrokenPolicy] = ()

    def labels_of(self, namespace: str) -> Mapping[str, str] | None:
        return self.namespace_labels.get(namespace, self.default_labels)


def gpus_in_use(
    usage: Iterable[WorkloadGpus], policy: MLWorkloadPolicy | None, view: ClusterView, excluding: MLWorkload
) -> int:
    """GPUs at max scale of every other workload whose governing policy is this one.

    A namespace that a higher-priority policy governs does not count against this policy's quota,
    even when this policy's selector matches it too.
    """
    if policy is None:
        return 0
    return sum(
        other.gpus
        for other in usage
        if (other.namespace, other.name) != (excluding.namespace, excluding.name)
        and _governing_name(view, other.namespace) == policy.name
    )


def _governing_name(view: ClusterView, namespace: str) -> str | None:
    governing = select_policy(view.policies, view.labels_of(namespace))
    return governing.name if governing else None


def admit(
    workload: MLWorkload,
    policies: Iterable[MLWorkloadPolicy],
    namespace_labels: Mapping[str, str] | None,
    defaults: PlatformDefaults | None = None,
    gpus_of_others: int = 0,
) -> Admission:
    """Select the governing policy, apply its defaults and run every check, quota included."""
    policy = select_policy(policies, namespace_labels)
    resolved = resolve(workload, policy, defaults)
    problems = check_workload(resolved) + check_quota(resolved, gpus_of_others)
    return Admission(resolved, problems)


def admit_in(view: ClusterView, workload: MLWorkload, defaults: PlatformDefaults | None = None) -> Admission:
    """`admit` with the namespace's labels and the quota usage taken from a view of the cluster."""
    labels = view.labels_of(workload.namespace)
    policy = select_policy(view.policies, labels)
    others = gpus_in_use(view.usage, policy, view, excluding=workload)
    verdict = admit(workload, view.policies, labels, defaults, gpus_of_others=others)
    unreadable = [
        Problem("metadata.namespace", rule=UNREADABLE_POLICY_RULE,
                message=f"MLWorkloadPolicy {broken.name} may govern this namespace and cannot be read"
                f" ({broken.problem}); its workloads are refused until the platform team fixes it")
        for broken in view.broken if broken.may_govern(labels, policy)
    ]  # fmt: skip
    return Admission(verdict.resolved, unreadable + verdict.problems) if unreadable else verdict
