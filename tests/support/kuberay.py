"""A small KubeRay stand-in: moves Ray objects through the status values real KubeRay (v1.7) writes,
so the operator's status translation is exercised end to end against the API server."""

import copy
from typing import Any, Protocol

RAY = "ray.io/v1"
STAMP = "2026-11-23T12:00:00Z"


class StatusWriter(Protocol):
    def patch_status(
        self, api_version: str, kind: str, name: str, status: dict[str, Any], namespace: str | None = None
    ) -> dict[str, Any]: ...


def condition(kind: str, status: str, reason: str, message: str = "") -> dict[str, str]:
    """A metav1.Condition as KubeRay writes it (every required field present)."""
    return {"type": kind, "status": status, "reason": reason, "message": message, "lastTransitionTime": STAMP}


class KubeRaySimulator:
    def __init__(self, api: StatusWriter) -> None:
        self.api = api

    def cluster_ready(self, namespace: str, name: str, workers: int = 1) -> None:
        self.api.patch_status(RAY, "RayCluster", name, {
            "state": "ready", "readyWorkerReplicas": workers, "desiredWorkerReplicas": workers,
            "conditions": [condition("HeadPodReady", "True", "HeadPodRunningAndReady"),
                           condition("RayClusterProvisioned", "True", "AllPodRunningAndReadyFirstTime")],
        }, namespace)  # fmt: skip

    def cluster_suspended(self, namespace: str, name: str) -> None:
        self.api.patch_status(RAY, "RayCluster", name, {
            "state": "suspended", "readyWorkerReplicas": 0,
            "conditions": [condition("HeadPodReady", "False", "HeadPodNotFound"),
                           condition("RayClusterProvisioned", "False", "RayClusterPodsProvisioning"),
                           condition("RayClusterSuspended", "True", "RayClusterSuspended")],
        }, namespace)  # fmt: skip

    def job(self, namespace: str, name: str, deployment: str, job_status: str = "", **extra: Any) -> None:
        status = {"jobDeploymentStatus": deployment, "jobId": f"{name}-abc12", **extra}
        if job_status:
            status["jobStatus"] = job_status
        self.api.patch_status(RAY, "RayJob", name, status, namespace)

    def job_running(self, namespace: str, name: str) -> None:
        self.job(namespace, name, "Running", "RUNNING", startTime=STAMP)

    def job_succeeded(self, namespace: str, name: str) -> None:
        self.job(namespace, name, "Complete", "SUCCEEDED", succeeded=1, startTime=STAMP, endTime=STAMP,
                 message="Job finished successfully.")  # fmt: skip

    def job_failed(self, namespace: str, name: str, message: str) -> None:
        self.job(namespace, name, "Failed", "FAILED", failed=3, reason="AppFailed", message=message,
                 startTime=STAMP, endTime=STAMP)  # fmt: skip

    def job_never_started(self, namespace: str, name: str, deadline_seconds: int) -> None:
        """KubeRay >= 1.6 when the job is not Running preRunningDeadlineSeconds after its StartTime
        (rayjob_controller.go, checkPreRunningDeadlineAndUpdateStatusIfNeeded), with no retry left: the Ray job
        was never submitted, so its jobStatus is still JobStatusNew (empty)."""
        self.job(namespace, name, "Failed", failed=1, succeeded=0, reason="PreRunningDeadlineExceeded",
                 message="The RayJob has passed the preRunningDeadlineSeconds. StartTime: 2026-11-23 12:00:00 +0000"
                         f" UTC. PreRunningDeadlineSeconds: {deadline_seconds}",
                 startTime=STAMP, endTime=STAMP)  # fmt: skip

    def job_status_unknown(self, namespace: str, name: str, timeout_seconds: int = 300) -> None:
        """KubeRay >= 1.7 when the Ray dashboard answered no job status check for RAYJOB_STATUS_CHECK_TIMEOUT_SECONDS
        (rayjob_controller.go, checkJobStatusCheckTimeoutAndUpdateStatusIfNeeded); never retried."""
        self.job(namespace, name, "Failed", "RUNNING", failed=1, succeeded=0, reason="JobStatusCheckTimeoutExceeded",
                 message="Job status checks have been failing since 2026-11-23 12:00:00; exceeded timeout of"
                         f" {timeout_seconds}s",
                 startTime=STAMP, endTime=STAMP)  # fmt: skip

    def service_running(self, namespace: str, name: str, applications: tuple[str, ...] = ("app",)) -> None:
        self.api.patch_status(RAY, "RayService", name, {
            "serviceStatus": "Running",
            "conditions": [condition("Ready", "True", "NonZeroServeEndpoints", "serving"),
                           condition("UpgradeInProgress", "False", "NoPendingCluster")],
            "activeServiceStatus": {"rayClusterName": f"{name}-raycluster-x1b2c",
                                    "applicationStatuses": {a: {"status": "RUNNING"} for a in applications}},
        }, namespace)  # fmt: skip

    def cluster_workers(self, namespace: str, name: str, ready: int, desired: int) -> None:
        """A ready RayCluster whose worker count moved (KubeRay counts Running and Ready worker pods: a preempted
        one drops out until its replacement is ready)."""
        self.api.patch_status(RAY, "RayCluster", name, {"readyWorkerReplicas": ready, "desiredWorkerReplicas": desired},
                              namespace)  # fmt: skip


# --- worker pods, as KubeRay makes them and as Kubernetes marks them when it takes them away ---------------------

NODE_SHUTDOWN_MESSAGE = "Pod was terminated in response to imminent node shutdown."


def worker_pod(
    namespace: str, workload: str, group: str, name: str, *, node: str, ready: bool = True
) -> dict[str, Any]:
    """A worker pod of `workload`'s `group` on `node`, Running (and Ready unless `ready` is False). KubeRay copies
    the template's labels (the operator's) and adds its own."""
    labels = {"app.kubernetes.io/managed-by": "mlworkload", "mlworkload.io/workload": workload,
              "mlworkload.io/role": "worker", "mlworkload.io/group": group, "ray.io/node-type": "worker",
              "ray.io/group": group, "ray.io/cluster": workload}  # fmt: skip
    flag = "True" if ready else "False"
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "spec": {"nodeName": node, "containers": [{"name": "ray-worker", "image": "rayproject/ray:2.41.0"}]},
        "status": {"phase": "Running", "conditions": [
            {"type": "Ready", "status": flag, "lastTransitionTime": STAMP},
            {"type": "ContainersReady", "status": flag, "lastTransitionTime": STAMP},
        ]},
    }  # fmt: skip


def preempted(
    pod: dict[str, Any], *, at: str = STAMP, reason: str = "TerminationByKubelet", message: str = NODE_SHUTDOWN_MESSAGE
) -> dict[str, Any]:
    """The pod's status as the kubelet leaves it after a graceful node shutdown (a Spot VM's reclaim): the
    DisruptionTarget condition, phase Failed, reason Terminated (other `reason`s: PreemptionByScheduler,
    DeletionByPodGC, ...)."""
    status = {
        "phase": "Failed",
        "reason": "Terminated",
        "message": message,
        "conditions": [
            {"type": "DisruptionTarget", "status": "True", "reason": reason, "message": message,
             "lastTransitionTime": at},
            {"type": "Ready", "status": "False", "lastTransitionTime": at},
            {"type": "ContainersReady", "status": "False", "lastTransitionTime": at},
        ],
    }  # fmt: skip
    return {**copy.deepcopy(pod), "status": status}
