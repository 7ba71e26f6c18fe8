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
