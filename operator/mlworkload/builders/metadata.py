"""Ownership labels and owner references carried by every child object and pod template."""

from typing import Any

from mlworkload.constants import (
    API_VERSION,
    KUEUE_LABEL_PRIORITY_CLASS,
    KUEUE_LABEL_QUEUE_NAME,
    LABEL_GROUP,
    LABEL_MANAGED_BY,
    LABEL_ROLE,
    LABEL_WORKLOAD,
    MANAGED_BY,
    WORKLOAD_KIND,
)
from mlworkload.policy.resolve import ResolvedWorkload

Manifest = dict[str, Any]


def selector_labels(resolved: ResolvedWorkload) -> dict[str, str]:
    """The labels that identify a workload's objects and pods (used in selectors)."""
    return {LABEL_MANAGED_BY: MANAGED_BY, LABEL_WORKLOAD: resolved.name}


def object_labels(resolved: ResolvedWorkload) -> dict[str, str]:
    """Ownership labels plus the cost labels the policy requires, for every child object."""
    return {**resolved.cost_labels, **selector_labels(resolved)}


def queue_labels(resolved: ResolvedWorkload) -> dict[str, str]:
    """Kueue's labels for a queued Ray object (RayJob or RayCluster): kueue.x-k8s.io/queue-name puts it in a
    LocalQueue, kueue.x-k8s.io/priority-class gives it a WorkloadPriorityClass (Kueue's docs,
    site/content/en/docs/tasks/run/rayjobs.md: "metadata: labels: kueue.x-k8s.io/queue-name: user-queue")."""
    if resolved.queue is None:
        return {}
    labels = {KUEUE_LABEL_QUEUE_NAME: resolved.queue}
    if resolved.priority_class is not None:
        labels[KUEUE_LABEL_PRIORITY_CLASS] = resolved.priority_class
    return labels


def pod_labels(resolved: ResolvedWorkload, role: str, group: str) -> dict[str, str]:
    """Labels for a pod template: KubeRay does not copy the Ray object's labels to its pods."""
    return {**object_labels(resolved), LABEL_ROLE: role, LABEL_GROUP: group}


def owner_references(resolved: ResolvedWorkload) -> list[dict[str, Any]]:
    """An owner reference to the MLWorkload, when its uid is known (not offline)."""
    uid = resolved.workload.metadata.uid
    if not uid:
        return []
    return [
        {
            "apiVersion": API_VERSION,
            "kind": WORKLOAD_KIND,
            "name": resolved.name,
            "uid": uid,
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]


def object_meta(resolved: ResolvedWorkload, name: str, annotations: dict[str, str] | None = None) -> Manifest:
    """metadata for a namespaced child: name, namespace, labels, owner reference."""
    meta: Manifest = {"name": name, "namespace": resolved.namespace, "labels": object_labels(resolved)}
    if annotations:
        meta["annotations"] = annotations
    references = owner_references(resolved)
    if references:
        meta["ownerReferences"] = references
    return meta
