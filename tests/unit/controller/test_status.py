"""Status computation: phase, kstatus conditions and their transition times, without a server."""

import datetime

from mlworkload.api.workload import Condition, MLWorkloadStatus, NodePoolStatus
from mlworkload.controller.raystatus import RayObservation, RayState
from mlworkload.controller.status import Observation, compute_status
from mlworkload.gcp.provisioner import Readiness
from mlworkload.problems import Problem

NOW = datetime.datetime(2026, 11, 23, 12, 0, tzinfo=datetime.UTC)
LATER = NOW + datetime.timedelta(minutes=5)


def seen(**fields: object) -> Observation:
    base: dict[str, object] = {"generation": 4, "ray_kind": "RayService", "ray_name": "llm-serve"}
    return Observation(**(base | fields))  # type: ignore[arg-type]


def conditions(status: MLWorkloadStatus) -> dict[str, tuple[str, str]]:
    return {c.type: (c.status, c.reason) for c in status.conditions}


RUNNING = RayObservation(RayState.READY, "RayServiceRunning", "serving", "Running")


def test_ready_workload_matches_the_api_md_example() -> None:
    status = compute_status(seen(ray=RUNNING, node_pools=Readiness(True, "Provisioned"),
                                 identity=Readiness(True, "Bound")), None, NOW)  # fmt: skip
    assert status.phase.value == "Running"  # type: ignore[union-attr]
    assert status.observed_generation == 4
    assert conditions(status) == {
        "Ready": ("True", "RayServiceRunning"), "Reconciling": ("False", "UpToDate"),
        "Stalled": ("False", "UpToDate"), "PolicyAdmitted": ("True", "Allowed"),
        "NodePoolsReady": ("True", "Provisioned"), "IdentityReady": ("True", "Bound"),
        "RayReady": ("True", "RayServiceRunning"),
    }  # fmt: skip
    assert all(c.observed_generation == 4 for c in status.conditions)
    assert status.ray is not None
    assert (status.ray.kind, status.ray.name, status.ray.state) == ("RayService", "llm-serve", "Running")


def test_a_policy_violation_stalls_and_nothing_is_ready() -> None:
    problems = [Problem("spec.storage.bucket", "'gs://x' is not allowed")]
    status = compute_status(seen(refusal=problems), None, NOW)
    assert status.phase.value == "Pending"  # type: ignore[union-attr]
    found = {c.type: c for c in status.conditions}
    assert (found["Stalled"].status, found["Stalled"].reason) == ("True", "PolicyViolation")
    assert found["Stalled"].message == "spec.storage.bucket: 'gs://x' is not allowed"
    assert (found["PolicyAdmitted"].status, found["Ready"].status, found["Reconciling"].status) == (
        "False", "False", "False")  # fmt: skip


def test_provisioning_node_pools_is_reconciling_not_stalled() -> None:
    status = compute_status(seen(node_pools=Readiness(False, "Provisioning", "creating mlw-l4x1-spot"),
                                 pools=[NodePoolStatus(name="mlw-l4x1-spot", capacity="Spot", state="PROVISIONING",
                                                       operation="operation-1")]), None, NOW)  # fmt: skip
    assert status.phase.value == "Pending"  # type: ignore[union-attr]
    assert conditions(status)["Reconciling"] == ("True", "Provisioning")
    assert conditions(status)["Stalled"] == ("False", "UpToDate")
    assert conditions(status)["Ready"] == ("False", "Provisioning")
    assert status.node_pools[0].operation == "operation-1"


def test_quota_exhaustion_stalls_with_the_gcp_reason() -> None:
    status = compute_status(seen(node_pools=Readiness(False, "QuotaExceeded", "GPUS_ALL_REGIONS", permanent=True),
                                 ray=RUNNING), None, NOW)  # fmt: skip
    assert conditions(status)["Stalled"] == ("True", "QuotaExceeded")
    assert conditions(status)["Ready"] == ("False", "QuotaExceeded")


def test_ray_still_starting_is_provisioning() -> None:
    starting = RayObservation(RayState.PROVISIONING, "RayClusterProvisioning", "the head pod is not ready")
    status = compute_status(seen(ray=starting), None, NOW)
    assert status.phase.value == "Provisioning"  # type: ignore[union-attr]
    assert conditions(status)["Reconciling"] == ("True", "RayClusterProvisioning")


def test_job_outcomes() -> None:
    done = RayObservation(RayState.SUCCEEDED, "RayJobSucceeded", "ok", "Complete", job={"status": "SUCCEEDED"})
    status = compute_status(seen(ray=done), None, NOW)
    assert status.phase.value == "Succeeded"  # type: ignore[union-attr]
    assert conditions(status)["Ready"] == ("True", "RayJobSucceeded")
    assert conditions(status)["Reconciling"] == ("False", "UpToDate")
    assert status.job is not None
    assert status.job.status == "SUCCEEDED"
    failed = RayObservation(RayState.FAILED, "AppFailed", "exit 1", "Failed", permanent=True, job={"status": "FAILED"})
    status = compute_status(seen(ray=failed), None, NOW)
    assert status.phase.value == "Failed"  # type: ignore[union-attr]
    assert conditions(status)["Stalled"] == ("True", "AppFailed")


def test_suspension_is_neither_ready_nor_reconciling() -> None:
    status = compute_status(seen(suspended=True, ray=RayObservation(RayState.SUSPENDED, "RayClusterSuspended")), None,
                            NOW)  # fmt: skip
    assert status.phase.value == "Suspended"  # type: ignore[union-attr]
    assert conditions(status)["Ready"] == ("False", "Suspended")
    assert conditions(status)["Reconciling"] == ("False", "UpToDate")


def test_an_upgrade_keeps_ready_and_sets_reconciling() -> None:
    upgrading = RayObservation(RayState.READY, "RayServiceRunning", "upgrade", "Running", progressing=True)
    status = compute_status(seen(ray=upgrading), None, NOW)
    assert conditions(status)["Ready"] == ("True", "RayServiceRunning")
    assert conditions(status)["Reconciling"] == ("True", "RayServiceRunning")


def test_deleting() -> None:
    status = compute_status(seen(deleting=True, ray=RUNNING), None, NOW)
    assert status.phase.value == "Deleting"  # type: ignore[union-attr]
    assert conditions(status)["Ready"] == ("False", "Deleting")


def test_transition_times_change_only_with_the_status() -> None:
    first = compute_status(seen(ray=RUNNING), None, NOW)
    again = compute_status(seen(ray=RUNNING), first, LATER)
    assert again == first  # nothing changed: the same status, so nothing to write
    broken = RayObservation(RayState.PROVISIONING, "ReplicaFailure", "quota")
    changed = compute_status(seen(ray=broken), first, LATER)
    times = {c.type: c.last_transition_time for c in changed.conditions}
    assert times["Ready"] == "2026-11-23T12:05:00Z"
    assert times["PolicyAdmitted"] == "2026-11-23T12:00:00Z"


def test_extra_conditions_are_appended() -> None:
    warning = Condition(type="NetworkPolicyEnforced", status="Unknown", reason="DataplaneUnknown")
    status = compute_status(seen(ray=RUNNING, extra_conditions=[warning]), None, NOW)
    assert status.conditions[-1] == warning


def test_a_degraded_node_pool_is_reported_without_taking_ready() -> None:
    message = "node pool mlw-team-l4x1-spot: [GCE_STOCKOUT] in us-central1-b"
    status = compute_status(seen(ray=RUNNING, node_pools=Readiness(True, "Provisioned"), degraded=message), None, NOW)
    state = conditions(status)
    assert (state["Ready"], state["Stalled"], state["Degraded"]) == (
        ("True", "RayServiceRunning"), ("False", "UpToDate"), ("True", "NodePoolDegraded")
    )  # fmt: skip
    assert next(c for c in status.conditions if c.type == "Degraded").message == message
    assert "Degraded" not in conditions(compute_status(seen(ray=RUNNING), None, NOW))
