"""RayService (ray.io/v1): a Ray Serve application on a Ray cluster KubeRay upgrades in place."""

from mlworkload.builders.metadata import Manifest
from mlworkload.builders.raycluster import build_ray_cluster_spec, ray_object
from mlworkload.policy.resolve import ResolvedWorkload
from mlworkload.yamlio import dump


def build_ray_service(resolved: ResolvedWorkload) -> Manifest:
    serve = resolved.workload.spec.serve
    assert serve is not None, "a Service workload always has spec.serve (enforced by the API)"
    spec = {"serveConfigV2": dump(serve.config), "rayClusterConfig": build_ray_cluster_spec(resolved)}
    return ray_object(resolved, "RayService", spec)
