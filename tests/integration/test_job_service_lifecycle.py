"""Job and Service lifecycle from KubeRay 1.6-1.7, end to end: the real operator against the in-memory API server,
with the KubeRay stand-in writing Ray object statuses as KubeRay does.

- spec.job.preRunningDeadlineSeconds (default: the policy's lifecycle.maxJobPendingSeconds) reaches the RayJob; when
  KubeRay fails the job for it (reason PreRunningDeadlineExceeded, KubeRay >= 1.6), the workload is Stalled with
  that reason and a message that says the job never started, for how long, and what usually causes it;
- KubeRay's JobStatusCheckTimeoutExceeded (KubeRay >= 1.7) is its own reason too;
- spec.serve.upgradeStrategy reaches the RayService as asked, within the policy's lifecycle.allowedUpgradeStrategies:
  a strategy the policy does not list is refused (PolicyAdmitted=False, Stalled=PolicyViolation), and admitted once
  the policy lists it.
"""

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.support.documents import WorkloadDoc, permissive_policy, workload
from tests.support.kube import KubeEmulatorServer, wait_until
from tests.support.kuberay import KubeRaySimulator
from tests.support.observed import workload_condition, workload_status
from tests.support.operator import free_port, running_operator

NS = "team-life"
POLICY = "life"
MLW = "mlworkload.io/v1alpha1"
RAY = "ray.io/v1"
WAIT = 30.0  # seconds; the operator is usually there in well under one
PENDING_LIMIT = 1800  # the policy's lifecycle.maxJobPendingSeconds
INCREMENTAL = {
    "type": "NewClusterWithIncrementalUpgrade",
    "clusterUpgradeOptions": {"gatewayClassName": "gke-l7-rilb", "maxSurgePercent": 25, "stepSizePercent": 5,
                              "intervalSeconds": 30},
}  # fmt: skip


@pytest.fixture(scope="module")
def server() -> Iterator[KubeEmulatorServer]:
    with KubeEmulatorServer() as emulator:
        emulator.put_object(
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS, "labels": {"team": "life"}}}
        )
        lifecycle = {"maxJobPendingSeconds": PENDING_LIMIT, "allowedUpgradeStrategies": ["NewCluster", "None"]}
        rules = permissive_policy(POLICY).set("namespaceSelector", {"matchLabels": {"team": "life"}})
        emulator.put_object(rules.set("lifecycle", lifecycle).doc)
        yield emulator


@pytest.fixture(scope="module", autouse=True)
def operator(server: KubeEmulatorServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    kubeconfig = server.kubeconfig(tmp_path_factory.mktemp("kube") / "config")
    with running_operator(kubeconfig, webhook_port=free_port()):
        yield


def status(server: KubeEmulatorServer, name: str) -> dict[str, Any]:
    return workload_status(server, NS, name)


def condition(server: KubeEmulatorServer, name: str, kind: str) -> dict[str, Any]:
    return workload_condition(server, NS, name, kind)


def ray_spec(server: KubeEmulatorServer, kind: str, name: str) -> dict[str, Any]:
    return (server.get_object(RAY, kind, name, NS) or {}).get("spec") or {}


# --- Job: preRunningDeadlineSeconds and KubeRay's failure reasons ----------------------------------------------


def test_a_job_that_never_starts_is_stalled_with_kuberays_reason_and_what_usually_causes_it(
    server: KubeEmulatorServer, kuberay: KubeRaySimulator, create: Callable[[WorkloadDoc], str]
) -> None:
    """KubeRay v1.7.0 (rayjob_controller.go, checkPreRunningDeadlineAndUpdateStatusIfNeeded) sets reason
    PreRunningDeadlineExceeded and "The RayJob has passed the preRunningDeadlineSeconds. StartTime: %v.
    PreRunningDeadlineSeconds: %d"; the stand-in writes exactly that."""
    late = create(workload("late", NS).gpu_group().job(preRunningDeadlineSeconds=600))
    defaulted = create(workload("defaulted", NS).job())
    wait_until(lambda: ray_spec(server, "RayJob", late), timeout=WAIT, what="the RayJob of late")
    assert ray_spec(server, "RayJob", late)["preRunningDeadlineSeconds"] == 600
    wait_until(lambda: ray_spec(server, "RayJob", defaulted), timeout=WAIT, what="the RayJob of defaulted")
    assert ray_spec(server, "RayJob", defaulted)["preRunningDeadlineSeconds"] == PENDING_LIMIT  # the policy's

    kuberay.job_never_started(NS, late, 600)
    wait_until(lambda: condition(server, late, "Stalled").get("status") == "True", timeout=WAIT, what="Stalled=True")
    stalled = condition(server, late, "Stalled")
    assert stalled["reason"] == "PreRunningDeadlineExceeded"
    assert stalled["message"].startswith(
        "the job never started: it was not running 600 s after KubeRay began to start it"
        " (spec.job.preRunningDeadlineSeconds, by default the policy's lifecycle.maxJobPendingSeconds)."
        " Usually its Ray pods found no node: no Spot capacity (a stockout),"
        " the project's GPU quota in the region, or node pools at their maximum size"
    )
    assert "KubeRay: The RayJob has passed the preRunningDeadlineSeconds." in stalled["message"]
    assert status(server, late)["phase"] == "Failed"
    ready = condition(server, late, "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "PreRunningDeadlineExceeded")
    assert status(server, late)["job"]["attempts"] == 1
    assert condition(server, defaulted, "Stalled").get("status") == "False"  # the other job is untouched


def test_a_job_whose_status_kuberay_cannot_check_is_stalled_with_its_own_reason(
    server: KubeEmulatorServer, kuberay: KubeRaySimulator, create: Callable[[WorkloadDoc], str]
) -> None:
    """KubeRay v1.7.0 (checkJobStatusCheckTimeoutAndUpdateStatusIfNeeded): reason JobStatusCheckTimeoutExceeded,
    never retried; not the generic RayJobFailed."""
    name = create(workload("unknown", NS).job(backoffLimit=2))
    wait_until(lambda: ray_spec(server, "RayJob", name), timeout=WAIT, what="the RayJob")
    kuberay.job_running(NS, name)
    wait_until(lambda: status(server, name).get("phase") == "Running", timeout=WAIT, what="phase Running")
    kuberay.job_status_unknown(NS, name)
    wait_until(lambda: condition(server, name, "Stalled").get("status") == "True", timeout=WAIT, what="Stalled=True")
    stalled = condition(server, name, "Stalled")
    assert stalled["reason"] == "JobStatusCheckTimeoutExceeded"
    assert stalled["message"].startswith(
        "KubeRay could not reach the Ray dashboard of the job's cluster to check the job's status for too long"
    )
    assert stalled["message"].endswith("KubeRay: Job status checks have been failing since 2026-11-23 12:00:00;"
                                       " exceeded timeout of 300s")  # fmt: skip
    assert status(server, name)["phase"] == "Failed"


# --- Service: upgradeStrategy within the policy ------------------------------------------------------------------


def test_a_service_upgrade_strategy_reaches_the_rayservice_and_follows_spec_changes(
    server: KubeEmulatorServer, kuberay: KubeRaySimulator, create: Callable[[WorkloadDoc], str]
) -> None:
    name = create(workload("frozen", NS).service().set("spec.serve.upgradeStrategy", {"type": "None"}))
    wait_until(lambda: ray_spec(server, "RayService", name), timeout=WAIT, what="the RayService")
    assert ray_spec(server, "RayService", name)["upgradeStrategy"] == {"type": "None"}
    kuberay.service_running(NS, name)
    wait_until(lambda: condition(server, name, "Ready").get("status") == "True", timeout=WAIT, what="Ready=True")

    server.patch_object(MLW, "MLWorkload", name, {"spec": {"serve": {"upgradeStrategy": {"type": "NewCluster"}}}}, NS)
    wait_until(lambda: ray_spec(server, "RayService", name).get("upgradeStrategy") == {"type": "NewCluster"},
               timeout=WAIT, what="the RayService's strategy changed to NewCluster")  # fmt: skip
    server.patch_object(MLW, "MLWorkload", name, {"spec": {"serve": {"upgradeStrategy": None}}}, NS)
    wait_until(lambda: "upgradeStrategy" not in ray_spec(server, "RayService", name), timeout=WAIT,
               what="the strategy left to KubeRay's default")  # fmt: skip
    assert condition(server, name, "PolicyAdmitted")["status"] == "True"


def test_a_strategy_the_policy_does_not_list_is_refused_until_it_does(
    server: KubeEmulatorServer, create: Callable[[WorkloadDoc], str]
) -> None:
    doc = workload("gradual", NS).service().set("spec.autoscaling.enabled", True)
    name = create(doc.set("spec.serve.upgradeStrategy", INCREMENTAL))
    wait_until(lambda: condition(server, name, "Stalled").get("reason") == "PolicyViolation", timeout=WAIT,
               what="Stalled=PolicyViolation")  # fmt: skip
    refusal = (
        "spec.serve.upgradeStrategy.type: NewClusterWithIncrementalUpgrade is not allowed by policy life"
        " (lifecycle.allowedUpgradeStrategies); allowed: NewCluster, None"
    )
    assert condition(server, name, "Stalled")["message"] == refusal
    admitted = condition(server, name, "PolicyAdmitted")
    assert (admitted["status"], admitted["reason"], admitted["message"]) == ("False", "PolicyViolation", refusal)
    assert server.get_object(RAY, "RayService", name, NS) is None  # nothing is applied for a refused workload

    everything = ["NewCluster", "NewClusterWithIncrementalUpgrade", "None"]
    server.patch_object(
        MLW, "MLWorkloadPolicy", POLICY, {"spec": {"lifecycle": {"allowedUpgradeStrategies": everything}}}
    )
    try:
        wait_until(lambda: ray_spec(server, "RayService", name), timeout=WAIT, what="the RayService once allowed")
        assert ray_spec(server, "RayService", name)["upgradeStrategy"] == INCREMENTAL
        assert ray_spec(server, "RayService", name)["rayClusterConfig"]["enableInTreeAutoscaling"] is True
        assert condition(server, name, "PolicyAdmitted")["status"] == "True"
    finally:
        server.patch_object(MLW, "MLWorkloadPolicy", POLICY,
                            {"spec": {"lifecycle": {"allowedUpgradeStrategies": ["NewCluster", "None"]}}})  # fmt: skip
