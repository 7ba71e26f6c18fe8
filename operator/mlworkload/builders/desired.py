"""Desired state of one workload: every Kubernetes object, and the GCP plan. Pure; no I/O."""

from collections.abc import Mapping, Sequence

from mlworkload.api.workload import WorkloadType
from mlworkload.builders.backendconfig import build_backend_config
from mlworkload.builders.computeclass import build_compute_classes
from mlworkload.builders.endpoints import exposed_endpoints
from mlworkload.builders.iam import build_iam_bindings, build_iap_bindings
from mlworkload.builders.ingress import build_ingress, build_managed_certificate
from mlworkload.builders.metadata import Manifest
from mlworkload.builders.networkpolicy import build_network_policies
from mlworkload.builders.nodepools import build_node_pools
from mlworkload.builders.pdb import build_pod_disruption_budgets
from mlworkload.builders.ray_object import build_ray_object
from mlworkload.builders.service import build_endpoint_service
from mlworkload.builders.serviceaccount import build_service_account
from mlworkload.gcp.plan import GcpPlan
from mlworkload.policy.resolve import ResolvedWorkload
from mlworkload.problems import Problem, Refused


def build_objects(resolved: ResolvedWorkload) -> list[Manifest]:
    """Kubernetes objects in the order they are applied: identity, isolation and disruption budgets before the
    Ray pods that rely on them, the load balancer last."""
    objects = [
        build_service_account(resolved),
        *build_network_policies(resolved),
        *build_compute_classes(resolved),
        *build_pod_disruption_budgets(resolved),
    ]
    # A Service past the policy's runtime limit (controller/idle.py) has no RayService: left out here, the owned
    # one is pruned (controller/apply.py delete_stale); its Service, Ingress and NetworkPolicies stay.
    if not (resolved.idle_suspended and resolved.workload.spec.type is WorkloadType.SERVICE):
        objects.append(build_ray_object(resolved))
    for endpoint in exposed_endpoints(resolved):
        certificate = build_managed_certificate(resolved, endpoint)
        objects += [
            build_endpoint_service(resolved, endpoint),
            build_backend_config(resolved, endpoint),
            *([certificate] if certificate else []),
            build_ingress(resolved, endpoint),
        ]
    return objects


def build_gcp_plan(resolved: ResolvedWorkload, backends: Mapping[str, Sequence[str]] | None = None) -> GcpPlan:
    """Node pools and IAM bindings. Refused when they are needed and no GKE cluster is known.

    `backends`: the backend services GKE made for each Ingress, by Ingress name (IAP access is granted
    on them); None offline, where the plan shows placeholders.
    """
    gcp = resolved.gcp
    if gcp is None:
        bindings = build_iam_bindings(resolved, "unknown") + build_iap_bindings(resolved, "unknown", "unknown", None)
        needs_gcp = any(group.machine_type for group in resolved.groups) or bool(bindings)
        if needs_gcp:
            raise Refused(
                [Problem("spec", "node pools or IAM bindings are needed but no GKE cluster is known: set"
                         " spec.gcp in the governing MLWorkloadPolicy, or MLW_GCP_PROJECT, MLW_GCP_LOCATION and"
                         " MLW_GKE_CLUSTER")]
            )  # fmt: skip
        return GcpPlan()
    return GcpPlan(
        node_pools=build_node_pools(resolved, gcp.project, gcp.location, gcp.cluster),
        iam_bindings=build_iam_bindings(resolved, gcp.project)
        + build_iap_bindings(resolved, gcp.project, gcp.location, backends),
    )
