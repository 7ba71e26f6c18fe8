"""RayJob (ray.io/v1): a batch job on its own Ray cluster, deleted after the job ends."""

from typing import Any

from mlworkload.builders.metadata import Manifest
from mlworkload.builders.pods import build_submitter_template
from mlworkload.builders.raycluster import build_ray_cluster_spec, kueue_owns_suspend, ray_object
from mlworkload.policy.resolve import ResolvedWorkload
from mlworkload.yamlio import dump


def build_ray_job(resolved: ResolvedWorkload) -> Manifest:
    job = resolved.workload.spec.job
    assert job is not None, "a Job workload always has spec.job (enforced by the API)"
    spec: dict[str, Any] = {
        "entrypoint": job.entrypoint,
        "submissionMode": "K8sJobMode",
        # The only way KubeRay honours ttlSecondsAfterFinished; GPUs are not left idling.
        "shutdownAfterJobFinishes": True,
        "ttlSecondsAfterFinished": job.ttl_seconds_after_finished,
        "backoffLimit": job.backoff_limit,
        "rayClusterSpec": build_ray_cluster_spec(resolved),
        "submitterPodTemplate": build_submitter_template(resolved),
    }
    if not kueue_owns_suspend(resolved):
        spec["suspend"] = resolved.workload.spec.suspend
    if job.runtime_env:
        spec["runtimeEnvYAML"] = dump(job.runtime_env)
    if resolved.active_deadline_seconds is not None:
        spec["activeDeadlineSeconds"] = resolved.active_deadline_seconds
    if resolved.pre_running_deadline_seconds is not None:
        # KubeRay >= 1.6: fails the job with reason PreRunningDeadlineExceeded when it is not Running this long
        # after its StartTime (checkPreRunningDeadlineAndUpdateStatusIfNeeded, rayjob_controller.go).
        spec["preRunningDeadlineSeconds"] = resolved.pre_running_deadline_seconds
    return ray_object(resolved, "RayJob", spec)
