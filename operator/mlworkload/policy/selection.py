"""Choosing the one policy that governs a namespace."""

from collections.abc import Iterable, Mapping

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
