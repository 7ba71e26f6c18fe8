"""KubeRay's status models -> one RayObservation, for every state each kind reports."""

from typing import Any

import pytest

from mlworkload.controller.raystatus import RayState, observe_ray


def conditions(**statuses: str) -> list[dict[str, Any]]:
    return [{"type": kind, "status": status, "reason": kind, "message": f"{kind} message"}
            for kind, status in statuses.items()]  # fmt: skip


CLUSTER = {
    "no status yet": ({}, RayState.PROVISIONING, "RayClusterProvisioning"),
    "head up, workers coming": (
        {"conditions": conditions(HeadPodReady="True", RayClusterProvisioned="False")},
        RayState.PROVISIONING, "RayClusterProvisioning",
    ),
    "ready": (
        {"state": "ready", "conditions": conditions(HeadPodReady="True", RayClusterProvisioned="True")},
        RayState.READY, "RayClusterReady",
    ),
    "old KubeRay without conditions": ({"state": "ready"}, RayState.READY, "RayClusterReady"),
    "replica failure": (
        {"conditions": conditions(HeadPodReady="True", ReplicaFailure="True")}, RayState.PROVISIONING, "ReplicaFailure"
    ),
    "suspended": ({"conditions": conditions(RayClusterSuspended="True")}, RayState.SUSPENDED, "RayClusterSuspended"),
}  # fmt: skip


@pytest.mark.parametrize(("status", "state", "reason"), CLUSTER.values(), ids=CLUSTER.keys())
def test_ray_cluster(status: dict[str, Any], state: RayState, reason: str) -> None:
    seen = observe_ray("RayCluster", {"status": status})
    assert (seen.state, seen.reason) == (state, reason)


def test_replica_failure_keeps_kuberays_message() -> None:
    seen = observe_ray("RayCluster", {"status": {"conditions": conditions(ReplicaFailure="True")}})
    assert seen.message == "ReplicaFailure message"
    assert not seen.permanent


JOB = {
    "new": ({"jobDeploymentStatus": "New"}, RayState.PROVISIONING, "RayJobStarting", False),
    "initializing": ({"jobDeploymentStatus": "Initializing", "jobStatus": "PENDING"}, RayState.PROVISIONING,
                     "RayJobStarting", False),
    "running": ({"jobDeploymentStatus": "Running", "jobStatus": "RUNNING"}, RayState.READY, "RayJobRunning", False),
    "succeeded": ({"jobDeploymentStatus": "Complete", "jobStatus": "SUCCEEDED"}, RayState.SUCCEEDED,
                  "RayJobSucceeded", False),
    "app failed": ({"jobDeploymentStatus": "Failed", "jobStatus": "FAILED", "reason": "AppFailed"}, RayState.FAILED,
                   "AppFailed", True),
    "deadline": ({"jobDeploymentStatus": "Failed", "reason": "DeadlineExceeded"}, RayState.FAILED,
                 "DeadlineExceeded", True),
    "complete but failed": ({"jobDeploymentStatus": "Complete", "jobStatus": "FAILED"}, RayState.FAILED,
                            "RayJobFailed", True),
    "validation failed": ({"jobDeploymentStatus": "ValidationFailed", "reason": "ValidationFailed"},
                          RayState.FAILED, "ValidationFailed", True),
    "retrying": ({"jobDeploymentStatus": "Retrying", "failed": 1}, RayState.PROVISIONING, "RayJobRetrying", False),
    "never started": ({"jobDeploymentStatus": "Failed", "reason": "PreRunningDeadlineExceeded"}, RayState.FAILED,
                      "PreRunningDeadlineExceeded", True),
    "status unknown too long": ({"jobDeploymentStatus": "Failed", "jobStatus": "RUNNING",
                                 "reason": "JobStatusCheckTimeoutExceeded"}, RayState.FAILED,
                                "JobStatusCheckTimeoutExceeded", True),
    "another KubeRay reason": ({"jobDeploymentStatus": "Failed", "jobStatus": "FAILED",
                                "reason": "JobDeploymentStatusTransitionGracePeriodExceeded"}, RayState.FAILED,
                               "RayJobFailed", True),
    "suspended": ({"jobDeploymentStatus": "Suspended"}, RayState.SUSPENDED, "RayJobSuspended", False),
}  # fmt: skip


@pytest.mark.parametrize(("status", "state", "reason", "permanent"), JOB.values(), ids=JOB.keys())
def test_ray_job(status: dict[str, Any], state: RayState, reason: str, permanent: bool) -> None:
    seen = observe_ray("RayJob", {"status": status})
    assert (seen.state, seen.reason, seen.permanent) == (state, reason, permanent)
    assert seen.job is not None


def test_ray_job_outcome_fields() -> None:
    seen = observe_ray("RayJob", {"status": {
        "jobDeploymentStatus": "Complete", "jobStatus": "SUCCEEDED", "jobId": "j-1", "succeeded": 1, "failed": 1,
        "startTime": "2026-11-23T10:00:00Z", "endTime": "2026-11-23T11:00:00Z", "message": "done"}})  # fmt: skip
    assert seen.job == {"status": "SUCCEEDED", "jobId": "j-1", "attempts": 2, "message": "done",
                        "startTime": "2026-11-23T10:00:00Z", "endTime": "2026-11-23T11:00:00Z"}  # fmt: skip
    assert seen.progressing is False
    assert observe_ray("RayJob", {"status": {"jobDeploymentStatus": "Retrying"}}).progressing


# KubeRay v1.7.0, ray-operator/controllers/ray/rayjob_controller.go: checkPreRunningDeadlineAndUpdateStatusIfNeeded
# sets reason PreRunningDeadlineExceeded (rayjob_types.go, since v1.6.0) and this message (fmt.Sprintf of "The RayJob
# has passed the preRunningDeadlineSeconds. StartTime: %v. PreRunningDeadlineSeconds: %d");
# checkJobStatusCheckTimeoutAndUpdateStatusIfNeeded sets JobStatusCheckTimeoutExceeded (since v1.7.0) and
# "Job status checks have been failing since %v; exceeded timeout of %ds".
NEVER_STARTED = {
    "jobDeploymentStatus": "Failed", "reason": "PreRunningDeadlineExceeded", "failed": 1, "succeeded": 0,
    "message": "The RayJob has passed the preRunningDeadlineSeconds. StartTime: 2026-11-23 12:00:00 +0000 UTC."
               " PreRunningDeadlineSeconds: 600",
    "startTime": "2026-11-23T12:00:00Z", "endTime": "2026-11-23T12:10:00Z",
}  # fmt: skip
STATUS_UNKNOWN = {
    "jobDeploymentStatus": "Failed", "jobStatus": "RUNNING", "reason": "JobStatusCheckTimeoutExceeded", "failed": 1,
    "message": "Job status checks have been failing since 2026-11-23 12:00:00; exceeded timeout of 300s",
}  # fmt: skip


def test_a_job_that_never_started_says_for_how_long_and_what_usually_causes_it() -> None:
    seen = observe_ray("RayJob", {"status": NEVER_STARTED})
    assert (seen.state, seen.reason, seen.permanent) == (RayState.FAILED, "PreRunningDeadlineExceeded", True)
    assert seen.message.startswith(
        "the job never started: it was not running 600 s after KubeRay began to start it"
        " (spec.job.preRunningDeadlineSeconds, by default the policy's lifecycle.maxJobPendingSeconds)."
        " Usually its Ray pods found no node: no Spot capacity (a stockout),"
        " the project's GPU quota in the region, or node pools at their maximum size"
    )
    assert seen.message.endswith(f"KubeRay: {NEVER_STARTED['message']}")  # KubeRay's own words are kept
    assert seen.job is not None
    assert (seen.job["status"], seen.job["attempts"], seen.job["message"]) == ("", 1, NEVER_STARTED["message"])


def test_a_never_started_job_without_kuberays_message_still_explains() -> None:
    seen = observe_ray("RayJob", {"status": {"jobDeploymentStatus": "Failed", "reason": "PreRunningDeadlineExceeded"}})
    assert seen.message.startswith("the job never started: it was not running by its deadline")
    assert "KubeRay:" not in seen.message


def test_a_job_whose_status_kuberay_could_not_check_says_what_that_means() -> None:
    seen = observe_ray("RayJob", {"status": STATUS_UNKNOWN})
    assert (seen.state, seen.reason, seen.permanent) == (RayState.FAILED, "JobStatusCheckTimeoutExceeded", True)
    assert seen.message.startswith(
        "KubeRay could not reach the Ray dashboard of the job's cluster to check the job's status for too long"
        " (KubeRay's RAYJOB_STATUS_CHECK_TIMEOUT_SECONDS, default 300 s), and failed it without retrying"
    )
    assert seen.message.endswith(f"KubeRay: {STATUS_UNKNOWN['message']}")


def test_a_retry_after_the_pre_running_deadline_says_why() -> None:
    """KubeRay retries PreRunningDeadlineExceeded under backoffLimit (only DeadlineExceeded and
    JobStatusCheckTimeoutExceeded are "not eligible for retry"), keeping the reason until the retry resets it."""
    seen = observe_ray("RayJob", {"status": {**NEVER_STARTED, "jobDeploymentStatus": "Retrying"}})
    assert (seen.state, seen.reason, seen.progressing) == (RayState.PROVISIONING, "RayJobRetrying", True)
    assert seen.message.startswith("retrying (backoffLimit): the job never started: it was not running 600 s")


def service(ready: str, upgrading: str = "False", **apps: str) -> dict[str, Any]:
    return {"status": {
        "conditions": conditions(Ready=ready, UpgradeInProgress=upgrading),
        "activeServiceStatus": {"applicationStatuses": {n: {"status": s, "message": f"{n} says {s}"}
                                                        for n, s in apps.items()}},
    }}  # fmt: skip


def test_ray_service_states() -> None:
    assert observe_ray("RayService", service("True", llm="RUNNING")).state is RayState.READY
    upgrading = observe_ray("RayService", service("True", "True", llm="RUNNING"))
    assert (upgrading.state, upgrading.progressing) == (RayState.READY, True)
    starting = observe_ray("RayService", service("False", llm="DEPLOYING"))
    assert (starting.state, starting.reason, starting.message) == (RayState.PROVISIONING, "Ready", "Ready message")
    failing = observe_ray("RayService", service("True", llm="DEPLOY_FAILED", ok="RUNNING"))
    assert (failing.state, failing.reason) == (RayState.PROVISIONING, "ServeApplicationsUnhealthy")
    assert failing.message == "llm: DEPLOY_FAILED (llm says DEPLOY_FAILED)"


def test_a_missing_object_is_absent() -> None:
    assert observe_ray("RayJob", None).state is RayState.ABSENT


def test_a_stopped_ray_job_is_final() -> None:
    seen = observe_ray("RayJob", {"status": {"jobDeploymentStatus": "Complete", "jobStatus": "STOPPED"}})
    assert (seen.state, seen.reason, seen.permanent) == (RayState.FAILED, "RayJobStopped", True)


WORKER_COUNTS = {"readyWorkerReplicas": 2, "desiredWorkerReplicas": 4, "availableWorkerReplicas": 2}
WORKERS = {
    "RayCluster": {"state": "ready", **WORKER_COUNTS},
    "RayJob": {"jobDeploymentStatus": "Running", "rayClusterStatus": WORKER_COUNTS},
    "RayService": {"activeServiceStatus": {"rayClusterStatus": WORKER_COUNTS}},
}


@pytest.mark.parametrize(("kind", "status"), WORKERS.items(), ids=WORKERS.keys())
def test_the_worker_counts_come_from_the_ray_cluster_of_each_kind(kind: str, status: dict[str, Any]) -> None:
    assert observe_ray(kind, {"status": status}).workers == "2/4"
    assert observe_ray(kind, {"status": {}}).workers == ""  # KubeRay has not counted yet: no column, not 0/0
    assert observe_ray(kind, None).workers == ""
