"""RayCluster (ray.io/v1), and the RayClusterSpec that RayJob and RayService embed too."""

from mlworkload.builders.metadata import Manifest, object_meta, queue_labels
from mlworkload.builders.names import ray_object_name
from mlworkload.builders.pods import autoscaler_container_options, build_head_template, build_worker_template
from mlworkload.constants import RAY_API_VERSION
from mlworkload.policy.resolve import ResolvedWorkload


def _head_start_params(resolved: ResolvedWorkload) -> dict[str, str]:
    params = {"dashboard-host": "0.0.0.0"}
    if not resolved.workload.spec.head.schedulable:
        params["num-cpus"] = "0"  # the head holds the GCS; tasks there compete with it
    return params


def build_ray_cluster_spec(resolved: ResolvedWorkload) -> Manifest:
    """The RayClusterSpec shared by all three kinds."""
    spec = resolved.workload.spec
    cluster: Manifest = {
        "rayVersion": spec.ray.version,
        "enableInTreeAutoscaling": spec.autoscaling.enabled,
        "headGroupSpec": {
            "rayStartParams": _head_start_params(resolved),
            "template": build_head_template(resolved),
        },
        "workerGroupSpecs": [
            {
                "groupName": group.name,
                "replicas": group.spec.replicas,
                "minReplicas": group.spec.effective_min_replicas,
                "maxReplicas": group.spec.effective_max_replicas,
                "rayStartParams": {},
                "template": build_worker_template(resolved, group),
            }
            for group in resolved.groups
        ],
    }
    if resolved.token_auth:
        # KubeRay makes the token Secret and gives RAY_AUTH_MODE/RAY_AUTH_TOKEN to every Ray container,
        # the submitter and the autoscaler; it refuses Ray versions before 2.52.0 itself.
        cluster["authOptions"] = {"mode": "token"}
    if spec.autoscaling.enabled:
        cluster["autoscalerOptions"] = {
            "upscalingMode": "Default",
            "idleTimeoutSeconds": spec.autoscaling.idle_timeout_seconds,
            # The sidecar's hardening and its Kubernetes token (the head template declares the volume).
            **autoscaler_container_options(),
        }
    return cluster


def ray_object(resolved: ResolvedWorkload, kind: str, spec: Manifest) -> Manifest:
    meta = object_meta(resolved, ray_object_name(resolved))
    meta["labels"] = {**meta["labels"], **queue_labels(resolved)}
    return {"apiVersion": RAY_API_VERSION, "kind": kind, "metadata": meta, "spec": spec}


def kueue_owns_suspend(resolved: ResolvedWorkload) -> bool:
    """A queued Ray object's spec.suspend is Kueue's: its webhook creates the object suspended
    (ApplyDefaultForSuspend, pkg/controller/jobs/rayjob/rayjob_webhook.go) and its reconciler unsuspends it on
    admission (RunWithPodSetsInfo: "j.Spec.Suspend = false", rayjob_controller.go). The builders leave the field
    out, so that server-side apply neither sets nor owns it: no write fight (docs/platform/quotas.md)."""
    return resolved.queue is not None


def build_ray_cluster(resolved: ResolvedWorkload) -> Manifest:
    spec = build_ray_cluster_spec(resolved)
    if not kueue_owns_suspend(resolved):
        # The user's suspend, or the operator's after an idle window or the runtime limit (controller/idle.py).
        spec["suspend"] = resolved.workload.spec.suspend or resolved.idle_suspended
    return ray_object(resolved, "RayCluster", spec)
