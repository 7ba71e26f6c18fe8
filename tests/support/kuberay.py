"""A small KubeRay stand-in: moves Ray objects through the status values real KubeRay (v1.7) writes,
so the operator's status translation is exercised end to end against the API server."""

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

    def service_running(self, namespace: str, name: str, applications: tuple[str, ...] = ("app",)) -> None:
        self.api.patch_status(RAY, "RayService", name, {
            "serviceStatus": "Running",
            "conditions": [condition("Ready", "True", "NonZeroServeEndpoints", "serving"),
                           condition("UpgradeInProgress", "False", "NoPendingCluster")],
            "activeServiceStatus": {"rayClusterName": f"{name}-raycluster-x1b2c",
                                    "applicationStatuses": {a: {"status": "RUNNING"} for a in applications}},
        }, namespace)  # fmt: skip
