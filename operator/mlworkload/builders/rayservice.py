"""RayService (ray.io/v1): a Ray Serve application on a Ray cluster, replaced as its upgradeStrategy says."""

from typing import Any

from mlworkload.builders.metadata import Manifest
from mlworkload.builders.raycluster import build_ray_cluster_spec, ray_object
from mlworkload.policy.resolve import ResolvedWorkload
from mlworkload.yamlio import dump


def build_ray_service(resolved: ResolvedWorkload) -> Manifest:
    serve = resolved.workload.spec.serve
    assert serve is not None, "a Service workload always has spec.serve (enforced by the API)"
    spec: dict[str, Any] = {"serveConfigV2": dump(serve.config), "rayClusterConfig": build_ray_cluster_spec(resolved)}
    if serve.upgrade_strategy is not None:
        # As asked, in KubeRay's own shape (RayServiceUpgradeStrategy). None asked: KubeRay's default, NewCluster
        # (unless KubeRay's operator runs with ENABLE_ZERO_DOWNTIME=false), which the policy judged as NewCluster.
        spec["upgradeStrategy"] = serve.upgrade_strategy.to_dict()
    return ray_object(resolved, "RayService", spec)
