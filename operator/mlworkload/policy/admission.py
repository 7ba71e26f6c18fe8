"""The admission verdict: the same code for `mlworkload validate` and the validating webhook."""

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from mlworkload.api.policy import MLWorkloadPolicy, PolicyGcp
from mlworkload.api.workload import MLWorkload
from mlworkload.policy.checks import check_quota, check_workload
from mlworkload.policy.resolve import ResolvedWorkload, resolve
from mlworkload.policy.selection import governs, select_policy
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


def gpus_in_use(
    workloads: Iterable[MLWorkload],
    policy: MLWorkloadPolicy | None,
    namespace_labels: Mapping[str, Mapping[str, str]] | None,
    excluding: MLWorkload,
) -> int:
    """GPUs at max scale of every other workload in the namespaces the policy governs.

    `namespace_labels` maps namespace -> labels; None means labels are unknown (offline), in which
    case every given workload counts as governed.
    """
    total = 0
    for other in workloads:
        if (other.namespace, other.name) == (excluding.namespace, excluding.name):
            continue
        labels = None if namespace_labels is None else namespace_labels.get(other.namespace, {})
        if policy is None or governs(policy, labels):
            total += other.spec.gpus_at_max_scale
    return total


def admit(
    workload: MLWorkload,
    policies: Iterable[MLWorkloadPolicy],
    namespace_labels: Mapping[str, str] | None,
    gcp: PolicyGcp | None = None,
    gpus_of_others: int = 0,
) -> Admission:
    """Select the governing policy, apply its defaults and run every check, quota included."""
    policy = select_policy(policies, namespace_labels)
    resolved = resolve(workload, policy, gcp)
    problems = check_workload(resolved) + check_quota(resolved, gpus_of_others)
    return Admission(resolved, problems)
