"""KubeRay's three status models, translated into one observation.

RayCluster reports conditions (HeadPodReady, RayClusterProvisioned, ReplicaFailure,
RayClusterSuspended); RayJob a deployment status, a Ray job status and a reason; RayService
conditions (Ready, UpgradeInProgress) and per-application statuses. The controller needs one
answer: is Ray ready, is it progressing, did it finish, did it fail for good.
"""

import dataclasses
import re
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any


class RayState(StrEnum):
    ABSENT = "Absent"
    PROVISIONING = "Provisioning"
    READY = "Ready"
    SUSPENDED = "Suspended"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"


@dataclass(frozen=True, slots=True)
class RayObservation:
    state: RayState
    reason: str  # PascalCase, for the RayReady condition
    message: str = ""
    kuberay_state: str = ""  # KubeRay's own word, shown in status.ray.state
    progressing: bool = False  # an upgrade or a retry is under way
    permanent: bool = False  # retrying will not fix it (Stalled)
    job: dict[str, Any] | None = None  # status.job for a RayJob
    workers: str = ""  # "ready/desired" worker pods of the Ray cluster, as KubeRay counts them; "" when unknown


def _conditions(status: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c.get("type", ""): c for c in status.get("conditions") or [] if isinstance(c, dict)}


def _is_true(conditions: dict[str, dict[str, Any]], kind: str) -> bool:
    return conditions.get(kind, {}).get("status") == "True"


def _workers(cluster_status: Any) -> str:
    """KubeRay's worker counts of a RayCluster status, as "ready/desired"."""
    if not isinstance(cluster_status, dict) or "desiredWorkerReplicas" not in cluster_status:
        return ""
    return f"{int(cluster_status.get('readyWorkerReplicas') or 0)}/{int(cluster_status['desiredWorkerReplicas'] or 0)}"


def observe_ray_cluster(status: dict[str, Any]) -> RayObservation:
    conditions = _conditions(status)
    state = str(status.get("state", ""))
    if _is_true(conditions, "RayClusterSuspended") or state == "suspended":
        return RayObservation(RayState.SUSPENDED, "RayClusterSuspended", "the Ray cluster is suspended", state)
    if _is_true(conditions, "ReplicaFailure"):
        message = conditions["ReplicaFailure"].get("message", "") or "a Ray pod could not be created"
        return RayObservation(RayState.PROVISIONING, "ReplicaFailure", message, state or "failed")
    provisioned = _is_true(conditions, "RayClusterProvisioned")
    head_ready = _is_true(conditions, "HeadPodReady")
    if (provisioned and head_ready) or (not conditions and state == "ready"):
        return RayObservation(RayState.READY, "RayClusterReady", "all Ray pods are ready", state or "ready")
    waiting = "the head pod is not ready" if not head_ready else "worker pods are not ready yet"
    return RayObservation(RayState.PROVISIONING, "RayClusterProvisioning", waiting, state)


# KubeRay's JobFailedReason values (ray-operator/apis/ray/v1/rayjob_types.go), each reported as the workload's own
# reason; any other (JobDeploymentStatusTransitionGracePeriodExceeded, a newer one) as RayJobFailed. Two came
# with KubeRay 1.6 and 1.7, set in ray-operator/controllers/ray/rayjob_controller.go:
# - "PreRunningDeadlineExceeded" (v1.6.0, checkPreRunningDeadlineAndUpdateStatusIfNeeded): the job was not Running
#   spec.preRunningDeadlineSeconds after its StartTime; KubeRay's message is "The RayJob has passed the
#   preRunningDeadlineSeconds. StartTime: %v. PreRunningDeadlineSeconds: %d". Retried under backoffLimit.
# - "JobStatusCheckTimeoutExceeded" (v1.7.0, checkJobStatusCheckTimeoutAndUpdateStatusIfNeeded): the Ray dashboard
#   answered no job status check for RAYJOB_STATUS_CHECK_TIMEOUT_SECONDS (KubeRay's setting, default 300); its
#   message is "Job status checks have been failing since %v; exceeded timeout of %ds". Never retried
#   (checkBackoffLimitAndUpdateStatusIfNeeded: "not eligible for retry").
PRE_RUNNING_DEADLINE_EXCEEDED = "PreRunningDeadlineExceeded"
JOB_STATUS_CHECK_TIMEOUT_EXCEEDED = "JobStatusCheckTimeoutExceeded"
_JOB_FAILURE_REASONS = {
    "DeadlineExceeded",
    "AppFailed",
    "SubmissionFailed",
    "ValidationFailed",
    "PreRunningDeadlineExceeded",
    "JobStatusCheckTimeoutExceeded",
}
_PRE_RUNNING_SECONDS = re.compile(r"PreRunningDeadlineSeconds: (\d+)")


def _never_started(kuberay_message: str) -> str:
    seconds = _PRE_RUNNING_SECONDS.search(kuberay_message)
    when = f"{seconds[1]} s after KubeRay began to start it" if seconds else "by its deadline"
    return (
        f"the job never started: it was not running {when} (spec.job.preRunningDeadlineSeconds, by default the"
        " policy's lifecycle.maxJobPendingSeconds)."
        " Usually its Ray pods found no node: no Spot capacity (a stockout),"
        " the project's GPU quota in the region, or node pools at their maximum size; or pulling the image took"
        " that long. See NodePoolsReady and the Ray pods' events"
        + (f". KubeRay: {kuberay_message}" if kuberay_message else "")
    )


def _status_unknown_too_long(kuberay_message: str) -> str:
    return (
        "KubeRay could not reach the Ray dashboard of the job's cluster to check the job's status for too long"
        " (KubeRay's RAYJOB_STATUS_CHECK_TIMEOUT_SECONDS, default 300 s), and failed it without retrying; the"
        " job itself may have been running. Usually the head pod was restarted, evicted or overloaded, or"
        " a NetworkPolicy keeps KubeRay's operator from the dashboard (port 8265)"
        + (f". KubeRay: {kuberay_message}" if kuberay_message else "")
    )


# What a bare KubeRay message does not say: what happened to the user's job, and what usually causes it.
_EXPLAINED: dict[str, Callable[[str], str]] = {
    PRE_RUNNING_DEADLINE_EXCEEDED: _never_started,
    JOB_STATUS_CHECK_TIMEOUT_EXCEEDED: _status_unknown_too_long,
}


def _job_status(status: dict[str, Any]) -> dict[str, Any]:
    job = {
        "status": status.get("jobStatus", ""),
        "jobId": status.get("jobId", ""),
        "attempts": int(status.get("succeeded", 0) or 0) + int(status.get("failed", 0) or 0),
        "message": status.get("message", ""),
    }
    job.update({key: status[key] for key in ("startTime", "endTime") if status.get(key)})
    if job["attempts"] == 0 and status.get("jobDeploymentStatus") not in (None, "", "New"):
        job["attempts"] = 1
    return job


def observe_ray_job(status: dict[str, Any]) -> RayObservation:
    deployment = str(status.get("jobDeploymentStatus", ""))
    job_status = str(status.get("jobStatus", ""))
    reason = str(status.get("reason", ""))
    message = str(status.get("message", ""))
    job = _job_status(status)

    def seen(
        state: RayState, why: str, text: str, *, progressing: bool = False, permanent: bool = False
    ) -> RayObservation:
        return RayObservation(state, why, text, deployment or "New", progressing, permanent, job=job)

    if deployment == "Complete" and job_status == "SUCCEEDED":
        return seen(RayState.SUCCEEDED, "RayJobSucceeded", message or "the job succeeded")
    if deployment == "Complete" and job_status == "STOPPED":
        return seen(RayState.FAILED, "RayJobStopped", message or "the job was stopped", permanent=True)
    if deployment in {"Failed", "ValidationFailed"} or (deployment == "Complete" and job_status != "SUCCEEDED"):
        why = reason if reason in _JOB_FAILURE_REASONS else "RayJobFailed"
        if reason in _EXPLAINED:
            return seen(RayState.FAILED, why, _EXPLAINED[reason](message), permanent=True)
        return seen(RayState.FAILED, why, message or f"the job ended with {job_status or deployment}", permanent=True)
    if deployment in {"Suspended", "Suspending"}:
        return seen(RayState.SUSPENDED, "RayJobSuspended", "the job is suspended")
    if deployment == "Running" and job_status == "RUNNING":
        return seen(RayState.READY, "RayJobRunning", message or "the job is running")
    if deployment == "Retrying":
        # KubeRay retries PreRunningDeadlineExceeded (never JobStatusCheckTimeoutExceeded), reason kept until it resets.
        never_started = reason == PRE_RUNNING_DEADLINE_EXCEEDED
        text = f"retrying (backoffLimit): {_never_started(message)}" if never_started else message
        return seen(RayState.PROVISIONING, "RayJobRetrying", text or "the job is being retried", progressing=True)
    return seen(RayState.PROVISIONING, "RayJobStarting", message or f"the job is {deployment or 'new'}")


_UNHEALTHY_APPS = {"DEPLOY_FAILED", "UNHEALTHY"}


def observe_ray_service(status: dict[str, Any]) -> RayObservation:
    conditions = _conditions(status)
    applications = (status.get("activeServiceStatus") or {}).get("applicationStatuses") or {}
    failing = sorted(
        f"{name}: {app.get('status')}" + (f" ({app['message']})" if app.get("message") else "")
        for name, app in applications.items()
        if isinstance(app, dict) and app.get("status") in _UNHEALTHY_APPS
    )
    upgrading = _is_true(conditions, "UpgradeInProgress")
    state = str(status.get("serviceStatus", ""))
    if _is_true(conditions, "Ready") and not failing:
        message = "serving; an upgrade is in progress" if upgrading else "serving"
        return RayObservation(RayState.READY, "RayServiceRunning", message, state or "Running", progressing=upgrading)
    if failing:
        return RayObservation(
            RayState.PROVISIONING, "ServeApplicationsUnhealthy", "; ".join(failing), state, progressing=upgrading
        )
    ready = conditions.get("Ready", {})
    message = ready.get("message") or "waiting for the Serve applications to become ready"
    return RayObservation(RayState.PROVISIONING, ready.get("reason") or "RayServiceStarting", message, state,
                          progressing=upgrading)  # fmt: skip


_OBSERVERS = {"RayCluster": observe_ray_cluster, "RayJob": observe_ray_job, "RayService": observe_ray_service}


def _cluster_status(kind: str, status: dict[str, Any]) -> Any:
    """Where each kind keeps the status of its Ray cluster (a RayService's: the active one, serving traffic)."""
    if kind == "RayJob":
        return status.get("rayClusterStatus")
    if kind == "RayService":
        return (status.get("activeServiceStatus") or {}).get("rayClusterStatus")
    return status


def observe_ray(kind: str, ray_object: dict[str, Any] | None) -> RayObservation:
    """The state of the workload's Ray object, or ABSENT when it does not exist (yet)."""
    if ray_object is None:
        return RayObservation(RayState.ABSENT, "RayObjectMissing", f"the {kind} has not been created yet")
    status = ray_object.get("status") or {}
    return dataclasses.replace(_OBSERVERS[kind](status), workers=_workers(_cluster_status(kind, status)))
