"""PodDisruptionBudgets: voluntary disruptions (node drains, GKE node upgrades, cluster autoscaler scale-down)
never take the Ray head, and never take the last Serve worker of a Service.

A budget only ever holds back the Eviction API. A Spot VM's reclaim is no eviction: the kubelet's graceful node
shutdown terminates the pods whatever a budget says (pods.py prepares the workers for that instead).

Why `minAvailable: 1` and not `maxUnavailable` or a percentage: KubeRay's pods are owned by a RayCluster, which
has no scale subresource (its CRD declares `subresources: status` only), and Kubernetes' "Specifying a
Disruption Budget for your Application" says of pods controlled by any other controller, an operator or bare
pods: "only `.spec.minAvailable` can be used, not `.spec.maxUnavailable`" and "only an integer value can be used
with `.spec.minAvailable`, not a percentage". The disruption controller cannot count the expected pods of such
an owner ("Failed to calculate the number of expected pods: rayclusters.ray.io does not implement the scale
subresource", kuberay#2662), and a budget it cannot evaluate allows no eviction at all (its fail-safe).
Voluntary disruptions of RayServices without any budget: kuberay#1333.

Pods are selected by the operator's own labels (pods.py puts them on every template), not by KubeRay's
`ray.io/cluster`: a RayJob's and a RayService's clusters get generated names (`<job>-<random>`,
`<service>-raycluster-<random>`) that are not known when the budget is made. During a RayService upgrade both
clusters' heads match the head budget: one of the two may then be evicted, never the last.

`unhealthyPodEvictionPolicy: AlwaysAllow`: a pod that is not Ready (a crash-looping head) may always be evicted,
so a broken pod never blocks a node drain; Kubernetes recommends it for budgets that guard running pods.
"""

from mlworkload.api.workload import WorkloadType
from mlworkload.builders.metadata import Manifest, object_meta, selector_labels
from mlworkload.constants import LABEL_ROLE
from mlworkload.policy.resolve import ResolvedWorkload

PDB_API_VERSION = "policy/v1"


def head_budget_name(resolved: ResolvedWorkload) -> str:
    return f"{resolved.name}-head"


def serve_budget_name(resolved: ResolvedWorkload) -> str:
    return f"{resolved.name}-serve-workers"


def _budget(resolved: ResolvedWorkload, name: str, role: str) -> Manifest:
    return {
        "apiVersion": PDB_API_VERSION,
        "kind": "PodDisruptionBudget",
        "metadata": object_meta(resolved, name),
        "spec": {
            "minAvailable": 1,
            "selector": {"matchLabels": {**selector_labels(resolved), LABEL_ROLE: role}},
            "unhealthyPodEvictionPolicy": "AlwaysAllow",
        },
    }


def build_pod_disruption_budgets(resolved: ResolvedWorkload) -> list[Manifest]:
    """The head's budget (every type: the head holds the GCS, losing it restarts the whole Ray cluster), and for a
    Service one over all its workers (Serve replicas run on any group's workers): evictions go on while at least
    one worker is up, so a drain moves the service one node at a time instead of emptying it. A Service without
    worker groups has it too, selecting nothing (its replicas are on the head): one set of children per type."""
    budgets = [_budget(resolved, head_budget_name(resolved), "head")]
    if resolved.type is WorkloadType.SERVICE:
        budgets.append(_budget(resolved, serve_budget_name(resolved), "worker"))
    return budgets
