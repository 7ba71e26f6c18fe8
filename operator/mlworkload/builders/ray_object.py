"""The Ray object an MLWorkload becomes, by type."""

from mlworkload.api.workload import WorkloadType
from mlworkload.builders.metadata import Manifest
from mlworkload.builders.raycluster import build_ray_cluster
from mlworkload.builders.rayjob import build_ray_job
from mlworkload.builders.rayservice import build_ray_service
from mlworkload.policy.resolve import ResolvedWorkload


def build_ray_object(resolved: ResolvedWorkload) -> Manifest:
    """The RayCluster, RayJob or RayService of the workload."""
    builders = {
        WorkloadType.CLUSTER: build_ray_cluster,
        WorkloadType.JOB: build_ray_job,
        WorkloadType.SERVICE: build_ray_service,
    }
    return builders[resolved.type](resolved)
