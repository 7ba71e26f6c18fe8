"""Choosing the one policy that governs a namespace."""

from collections.abc import Iterable, Mapping, Sequence

from mlworkload.api.policy import MLWorkloadPolicy


def governs(policy: MLWorkloadPolicy, namespace_labels: Mapping[str, str] | None) -> bool:
    """Whether the policy selects a namespace with these labels (None: labels unknown -> yes)."""
    selector = policy.spec.namespace_selector
    if namespace_labels is None or selector is None:
        return True
    return selector.matches(dict(namespace_labels))


def select_policy(
    policies: Iterable[MLWorkloadPolicy], namespace_labels: Mapping[str, str] | None
) -> MLWorkloadPolicy | None:
    """The governing policy: among those selecting the namespace, highest priority, then lowest name.

    Alphabetical tie-breaking makes the choice stable whatever order the API server lists them in.
    """
    candidates = [policy for policy in policies if governs(policy, namespace_labels)]
    if not candidates:
        return None
    return min(candidates, key=lambda policy: (-policy.spec.priority, policy.name))


class GoverningPolicies:
    """`select_policy` for one set of policy objects, once per namespace while its labels stay the same.

    Holding the policies themselves (not copies, not names) is what makes the cache safe: `built_for`
    compares by identity, so a changed policy (a new object, parsed from a new resourceVersion) or a
    view whose policies were replaced (a fresh read) never sees an answer chosen among other policies.
    Safe to share between the event loop and kopf's handler threads: a race only repeats a selection.
    """

    def __init__(self, policies: Iterable[MLWorkloadPolicy]) -> None:
        self.policies: tuple[MLWorkloadPolicy, ...] = tuple(policies)
        # namespace -> (the labels it was chosen for, the choice); None labels: unknown (every policy governs)
        self._chosen: dict[str, tuple[dict[str, str] | None, MLWorkloadPolicy | None]] = {}

    def built_for(self, policies: Sequence[MLWorkloadPolicy]) -> bool:
        return len(policies) == len(self.policies) and all(a is b for a, b in zip(policies, self.policies, strict=True))

    def of(self, namespace: str, labels: Mapping[str, str] | None) -> MLWorkloadPolicy | None:
        """The governing policy of a namespace with these labels."""
        chosen = self._chosen.get(namespace)
        if chosen is not None and chosen[0] == labels:
            return chosen[1]
        snapshot = None if labels is None else dict(labels)
        policy = select_policy(self.policies, snapshot)
        self._chosen[namespace] = (snapshot, policy)
        return policy
