"""Pod templates of the Ray head, the workers and the job submitter.

KubeRay fills in the `ray start` command; these templates carry what it does not: resources,
GKE placement, the Workload Identity ServiceAccount, ownership labels and hardening.
"""

from typing import Any

from mlworkload.api.workload import EnvVar
from mlworkload.builders.metadata import Manifest, pod_labels
from mlworkload.builders.names import service_account_name
from mlworkload.builders.scheduling import HEAD_PLACEMENT, Placement, worker_placement
from mlworkload.constants import (
    GPU_RESOURCE,
    PORT_CLIENT,
    PORT_DASHBOARD,
    PORT_GCS,
    PORT_METRICS,
    PORT_SERVE,
)
from mlworkload.policy.resolve import ResolvedGroup, ResolvedWorkload

# Ray's default (60 s) is too short when a large GPU image imports torch before registering.
WORKER_REGISTER_TIMEOUT_ENV = "RAY_worker_register_timeout_seconds"
WORKER_REGISTER_TIMEOUT_SECONDS = "600"

HEAD_PORTS = (
    ("gcs-server", PORT_GCS),
    ("dashboard", PORT_DASHBOARD),
    ("client", PORT_CLIENT),
    ("serve", PORT_SERVE),
    ("metrics", PORT_METRICS),
)

_SHM_VOLUME = {"name": "dshm", "emptyDir": {"medium": "Memory"}}
_SHM_MOUNT = {"name": "dshm", "mountPath": "/dev/shm"}
_CONTAINER_SECURITY = {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}
_POD_SECURITY = {"seccompProfile": {"type": "RuntimeDefault"}}


def container_env(resolved: ResolvedWorkload) -> list[dict[str, Any]]:
    """The user's environment, plus the operator's defaults the user did not override."""
    user: list[EnvVar] = resolved.workload.spec.ray.env
    env = [variable.to_dict() for variable in user]
    if all(variable.name != WORKER_REGISTER_TIMEOUT_ENV for variable in user):
        env.append({"name": WORKER_REGISTER_TIMEOUT_ENV, "value": WORKER_REGISTER_TIMEOUT_SECONDS})
    return env


def _resources(cpu: str, memory: str, gpus: int = 0) -> dict[str, Any]:
    requests = {"cpu": cpu, "memory": memory}
    limits: dict[str, str] = {"memory": memory}
    if gpus:
        limits[GPU_RESOURCE] = str(gpus)
    return {"requests": requests, "limits": limits}


def _pod_template(
    resolved: ResolvedWorkload,
    *,
    role: str,
    group: str,
    container: Manifest,
    placement: Placement,
    automount_token: bool,
) -> Manifest:
    spec: Manifest = {
        "serviceAccountName": service_account_name(resolved),
        "automountServiceAccountToken": automount_token,
        "securityContext": dict(_POD_SECURITY),
        "containers": [container],
        "volumes": [dict(_SHM_VOLUME)],
    }
    placement.apply_to(spec)
    return {"metadata": {"labels": pod_labels(resolved, role, group)}, "spec": spec}


def _ray_container(resolved: ResolvedWorkload, name: str, resources: dict[str, Any]) -> Manifest:
    return {
        "name": name,
        "image": resolved.image,
        "env": container_env(resolved),
        "resources": resources,
        "volumeMounts": [dict(_SHM_MOUNT)],
        "securityContext": dict(_CONTAINER_SECURITY),
    }


def build_head_template(resolved: ResolvedWorkload) -> Manifest:
    head = resolved.workload.spec.head
    container = _ray_container(resolved, "ray-head", _resources(head.resources.cpu, head.resources.memory))
    container["ports"] = [{"name": name, "containerPort": port} for name, port in HEAD_PORTS]
    # Only the head runs the autoscaler, the one Ray process that calls the Kubernetes API.
    automount = resolved.workload.spec.autoscaling.enabled
    return _pod_template(
        resolved, role="head", group="head", container=container, placement=HEAD_PLACEMENT, automount_token=automount
    )


def build_worker_template(resolved: ResolvedWorkload, group: ResolvedGroup) -> Manifest:
    spec = group.spec
    gpus = spec.accelerator.count if spec.accelerator else 0
    container = _ray_container(resolved, "ray-worker", _resources(spec.resources.cpu, spec.resources.memory, gpus))
    placement = worker_placement(group)
    return _pod_template(
        resolved, role="worker", group=group.name, container=container, placement=placement, automount_token=False
    )


def build_submitter_template(resolved: ResolvedWorkload) -> Manifest:
    """The RayJob submitter pod. KubeRay supplies its command when none is set."""
    container = {
        "name": "ray-job-submitter",
        "image": resolved.image,
        "env": container_env(resolved),
        "resources": {
            "requests": {"cpu": "500m", "memory": "200Mi"},
            "limits": {"cpu": "1", "memory": "1Gi"},
        },
        "securityContext": dict(_CONTAINER_SECURITY),
    }
    template = _pod_template(
        resolved,
        role="submitter",
        group="submitter",
        container=container,
        placement=HEAD_PLACEMENT,
        automount_token=False,
    )
    template["spec"]["restartPolicy"] = "Never"
    del template["spec"]["volumes"]
    return template
