"""GKE ComputeClasses for SpotWithFallback: the autoscaler tries the spot pool, then on-demand.

A ComputeClass is cluster-scoped and shared by every workload of its shape, so it carries the
operator's managed-by and shape labels but no workload label or owner reference.
"""

from mlworkload.builders.metadata import Manifest
from mlworkload.builders.nodepools import pool_shape
from mlworkload.constants import LABEL_MANAGED_BY, LABEL_POOL_SHAPE, MANAGED_BY
from mlworkload.policy.resolve import ResolvedWorkload


def build_compute_classes(resolved: ResolvedWorkload) -> list[Manifest]:
    classes: dict[str, Manifest] = {}
    for group in resolved.groups:
        shape = pool_shape(group)
        if shape is None or shape.compute_class is None:
            continue
        classes[shape.compute_class] = {
            "apiVersion": "cloud.google.com/v1",
            "kind": "ComputeClass",
            "metadata": {
                "name": shape.compute_class,
                "labels": {LABEL_MANAGED_BY: MANAGED_BY, LABEL_POOL_SHAPE: shape.compute_class},
            },
            "spec": {
                # Each pool in its own rule: a rule's pool list has no order, the rules do.
                "priorities": [{"nodepools": [name]} for name, _ in shape.pools()],
                "nodePoolAutoCreation": {"enabled": False},
                # Never let the autoscaler improvise a node outside the two pools.
                "whenUnsatisfiable": "DoNotScaleUp",
            },
        }
    return [classes[name] for name in sorted(classes)]
