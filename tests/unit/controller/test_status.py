"""Status computation: phase, kstatus conditions and their transition times, without a server."""

import datetime

from mlworkload.api.workload import (
    Condition,
    DisruptionsStatus,
    IdleStatus,
    MLWorkloadStatus,
    NodePoolStatus,
    Phase,
    PreemptionStatus,
)
from mlworkload.controller.raystatus import RayObservation, RayState
from mlworkload.controller.reconcile import Reconciler, reconcile
from mlworkload.controller.status import Observation, compute_status
from mlworkload.gcp.provisioner import DryRunProvisioner, Readiness
from mlworkload.policy import ClusterView
from mlworkload.problems import Problem
from tests.support.documents import permissive_policy, workload
from tests.support.fake_kube import FakeKubeApi
from tests.support.kuberay import preempted, worker_pod

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


# --- preemptions ------------------------------------------------------------------------------------------------

PREEMPTED = PreemptionStatus(time="2026-11-23T11:58:00Z", pod="llm-serve-gpu-worker-x7tzd", node="gke-spot-3",
                             group="gpu", reason="NodeShutdown", message="terminated")  # fmt: skip
DISRUPTIONS = DisruptionsStatus(count=1, last_preemption=PREEMPTED, recent_pods=["uid-1"])
RECOVERING = Readiness(False, "RecoveringFromPreemption", "worker group gpu lost pod ...; 1/2 workers ready")


def test_a_preemption_keeps_ready_and_reconciles_until_ray_has_its_workers_back() -> None:
    status = compute_status(seen(ray=RUNNING, disruptions=DISRUPTIONS, recovering=RECOVERING), None, NOW)
    assert conditions(status)["Ready"] == ("True", "RayServiceRunning")
    assert conditions(status)["Reconciling"] == ("True", "RecoveringFromPreemption")
    assert next(c for c in status.conditions if c.type == "Reconciling").message == RECOVERING.message
    assert status.disruptions == DISRUPTIONS
    assert status.to_dict()["disruptions"] == {
        "count": 1, "recentPods": ["uid-1"],
        "lastPreemption": {"time": "2026-11-23T11:58:00Z", "pod": "llm-serve-gpu-worker-x7tzd", "node": "gke-spot-3",
                           "group": "gpu", "reason": "NodeShutdown",
                           "message": "terminated"},
    }  # fmt: skip
    recovered = compute_status(seen(ray=RUNNING), status, LATER)  # no read this time: the record stays
    assert conditions(recovered)["Reconciling"] == ("False", "UpToDate")
    assert recovered.disruptions == DISRUPTIONS


def test_recovery_says_more_than_ray_catching_up_but_a_stall_says_most() -> None:
    unhealthy = RayObservation(RayState.PROVISIONING, "ServeApplicationsUnhealthy", "app: UNHEALTHY", "Running")
    status = compute_status(seen(ray=unhealthy, recovering=RECOVERING), None, NOW)
    assert conditions(status)["Reconciling"] == ("True", "RecoveringFromPreemption")
    assert conditions(status)["Ready"] == ("False", "ServeApplicationsUnhealthy")
    stalled = Readiness(False, "QuotaExceeded", "GPUS_ALL_REGIONS", permanent=True)
    status = compute_status(seen(ray=RUNNING, node_pools=stalled, recovering=RECOVERING), None, NOW)
    assert (conditions(status)["Stalled"], conditions(status)["Reconciling"]) == (
        ("True", "QuotaExceeded"), ("False", "UpToDate"))  # fmt: skip


def job(state: RayState, reason: str, **fields: object) -> RayObservation:
    report = {"status": "FAILED", "attempts": 2, "message": "Job entrypoint command failed with exit code 1",
              "startTime": "2026-11-23T11:50:00Z", "endTime": "2026-11-23T11:59:00Z"} | fields  # fmt: skip
    return RayObservation(state, reason, str(report["message"]), "Failed", permanent=state is RayState.FAILED,
                          job=report)  # fmt: skip


def test_a_job_attempt_that_lost_a_worker_to_a_preemption_says_so() -> None:
    status = compute_status(seen(ray=job(RayState.FAILED, "AppFailed"), disruptions=DISRUPTIONS), None, NOW)
    note = ("attempt 2 was preempted (spot): worker pod llm-serve-gpu-worker-x7tzd of group gpu on node"
            " gke-spot-3 (NodeShutdown) at 2026-11-23T11:58:00Z; KubeRay: Job entrypoint command failed with exit"
            " code 1")  # fmt: skip
    assert status.job is not None
    assert status.job.message == note
    assert status.job.attempts == 2
    stalled = next(c for c in status.conditions if c.type == "Stalled")
    assert (stalled.reason, stalled.message) == ("AppFailed", note)
    retrying = compute_status(seen(ray=job(RayState.PROVISIONING, "RayJobRetrying", status="RUNNING"),
                                   disruptions=DISRUPTIONS), None, NOW)  # fmt: skip
    assert next(c for c in retrying.conditions if c.type == "Reconciling").message.startswith("attempt 2 was preempted")


def test_a_preemption_outside_the_attempt_is_not_its_cause() -> None:
    for ray in (job(RayState.FAILED, "AppFailed", startTime="2026-11-23T11:59:00Z"),  # before this attempt began
                job(RayState.FAILED, "AppFailed", endTime="2026-11-23T11:55:00Z"),  # after it had failed
                job(RayState.READY, "RayJobRunning", status="RUNNING")):  # fmt: skip
        status = compute_status(seen(ray=ray, disruptions=DISRUPTIONS), None, NOW)
        assert status.job is not None
        assert "preempted" not in status.job.message


# --- the whole reconcile: pods read only while Ray is short of workers, and nothing written twice --------------

VIEW = ClusterView(policies=[permissive_policy().obj()], default_labels={})
READY_CLUSTER = {"state": "ready", "readyWorkerReplicas": 2, "desiredWorkerReplicas": 2,
                 "conditions": [{"type": "HeadPodReady", "status": "True"},
                                {"type": "RayClusterProvisioned", "status": "True"}]}  # fmt: skip


async def test_a_preempted_worker_pod_is_counted_once(kube: FakeKubeApi, reconciler: Reconciler) -> None:
    kube.put(workload().group("spot", capacity="Spot", replicas=2).set("metadata.generation", 1).doc)
    body = lambda: kube.objects["MLWorkload", "team-nlp", "demo"]  # noqa: E731
    await reconcile(reconciler, body(), VIEW)
    kube.objects["RayCluster", "team-nlp", "demo"]["status"] = READY_CLUSTER
    pods = [worker_pod("team-nlp", "demo", "spot", f"demo-spot-worker-{n}", node=f"gke-spot-{n}") for n in "ab"]
    for pod in pods:
        kube.put(pod)
    await reconcile(reconciler, body(), VIEW)
    assert "list Pod" not in kube.reads  # all workers ready: no read
    assert "disruptions" not in kube.status_of("MLWorkload", "team-nlp", "demo")
    # A Spot VM reclaimed: the kubelet marks the pod, KubeRay counts one ready worker fewer.
    kube.put(preempted(kube.objects["Pod", "team-nlp", "demo-spot-worker-a"], at="2026-11-23T11:58:00Z"))
    kube.objects["RayCluster", "team-nlp", "demo"]["status"] = READY_CLUSTER | {"readyWorkerReplicas": 1}
    outcome = await reconcile(reconciler, body(), VIEW)
    assert outcome.status_written
    status = kube.status_of("MLWorkload", "team-nlp", "demo")
    assert status["disruptions"]["count"] == 1
    assert status["disruptions"]["lastPreemption"] == {
        "time": "2026-11-23T11:58:00Z", "pod": "demo-spot-worker-a", "node": "gke-spot-a", "group": "spot",
        "reason": "NodeShutdown", "message": "Pod was terminated in response to imminent node shutdown."}  # fmt: skip
    state = {c["type"]: (c["status"], c["reason"]) for c in status["conditions"]}
    assert (state["Ready"], state["Reconciling"]) == (("True", "RayClusterReady"), ("True", "RecoveringFromPreemption"))
    # The same pod on the next pass: nothing new, nothing written.
    writes = len(kube.writes)
    again = await reconcile(reconciler, body(), VIEW)
    assert (again.status_written, kube.writes[writes:]) == (False, [])
    assert kube.status_of("MLWorkload", "team-nlp", "demo")["disruptions"]["count"] == 1
    # The pod replaced and ready: recovered, the record stays.
    del kube.objects["Pod", "team-nlp", "demo-spot-worker-a"]
    kube.put(worker_pod("team-nlp", "demo", "spot", "demo-spot-worker-c", node="gke-spot-c"))
    kube.objects["RayCluster", "team-nlp", "demo"]["status"] = READY_CLUSTER
    await reconcile(reconciler, body(), VIEW)
    status = kube.status_of("MLWorkload", "team-nlp", "demo")
    assert {c["type"]: c["reason"] for c in status["conditions"]}["Reconciling"] == "UpToDate"
    assert status["disruptions"]["count"] == 1


# --- idle Clusters: the window in status, written when it changes only, then the suspension -------------------

IDLE_VIEW = ClusterView(policies=[permissive_policy().set("lifecycle.maxClusterIdleSeconds", 600).obj()],
                        default_labels={})  # fmt: skip
AT_THE_FLOOR = READY_CLUSTER | {"readyWorkerReplicas": 0, "desiredWorkerReplicas": 0}


async def test_an_idle_cluster_is_suspended_after_its_window_with_no_writes_meanwhile(kube: FakeKubeApi) -> None:
    clock = [NOW]
    reconciler = Reconciler(kube=kube, gcp=DryRunProvisioner(), clock=lambda: clock[0])
    doc = workload().group(replicas=1, minReplicas=0, maxReplicas=4).set("spec.autoscaling", {"enabled": True})
    kube.put(doc.set("metadata.generation", 1).doc)
    body = lambda: kube.objects["MLWorkload", "team-nlp", "demo"]  # noqa: E731
    ray = lambda: kube.objects["RayCluster", "team-nlp", "demo"]  # noqa: E731
    await reconcile(reconciler, body(), IDLE_VIEW)
    ray()["status"] = READY_CLUSTER | {"readyWorkerReplicas": 1, "desiredWorkerReplicas": 1}  # a worker busy
    await reconcile(reconciler, body(), IDLE_VIEW)
    assert "idle" not in kube.status_of("MLWorkload", "team-nlp", "demo")
    ray()["status"] = AT_THE_FLOOR  # the autoscaler removed it: idle from now
    await reconcile(reconciler, body(), IDLE_VIEW)
    assert kube.status_of("MLWorkload", "team-nlp", "demo")["idle"] == {
        "since": "2026-11-23T12:00:00Z", "deadline": "2026-11-23T12:10:00Z", "reason": "IdleTimeout"}  # fmt: skip
    writes = len(kube.writes)
    clock[0] = NOW + datetime.timedelta(seconds=599)
    steady = await reconcile(reconciler, body(), IDLE_VIEW)
    assert (steady.status_written, kube.writes[writes:]) == (False, [])  # the window runs: nothing written
    clock[0] = NOW + datetime.timedelta(seconds=600)
    suspended = await reconcile(reconciler, body(), IDLE_VIEW)
    assert suspended.status_written
    assert ray()["spec"]["suspend"] is True
    status = kube.status_of("MLWorkload", "team-nlp", "demo")
    assert status["phase"] == "Suspended"
    assert status["idle"]["suspendedAt"] == "2026-11-23T12:10:00Z"
    state = {c["type"]: (c["status"], c["reason"]) for c in status["conditions"]}
    assert (state["Ready"], state["Reconciling"], state["Stalled"]) == (
        ("False", "IdleTimeout"), ("False", "UpToDate"), ("False", "UpToDate"))  # fmt: skip
    assert body()["spec"].get("suspend") is None  # the user's spec is untouched
    ray()["status"] = {"state": "suspended", "conditions": [{"type": "RayClusterSuspended", "status": "True"}]}
    await reconcile(reconciler, body(), IDLE_VIEW)
    writes = len(kube.writes)
    clock[0] += datetime.timedelta(hours=5)
    again = await reconcile(reconciler, body(), IDLE_VIEW)
    assert (again.status_written, kube.writes[writes:]) == (False, [])  # suspended: nothing moves
    # The resume gesture: a spec change (a new generation).
    body()["metadata"]["generation"] = 2
    await reconcile(reconciler, body(), IDLE_VIEW)
    assert ray()["spec"]["suspend"] is False
    assert "idle" not in kube.status_of("MLWorkload", "team-nlp", "demo")


RUNTIME_VIEW = ClusterView(policies=[permissive_policy().set("lifecycle.maxClusterRuntimeSeconds", 3600).obj()],
                           default_labels={})  # fmt: skip


async def test_a_cluster_is_suspended_at_the_runtime_limit_with_no_writes_before(kube: FakeKubeApi) -> None:
    clock = [NOW]
    reconciler = Reconciler(kube=kube, gcp=DryRunProvisioner(), clock=lambda: clock[0])
    doc = workload().group(replicas=2).set("metadata.generation", 1)  # no autoscaler: never idle
    kube.put(doc.set("metadata.creationTimestamp", "2026-11-23T11:30:00Z").doc)
    body = lambda: kube.objects["MLWorkload", "team-nlp", "demo"]  # noqa: E731
    ray = lambda: kube.objects["RayCluster", "team-nlp", "demo"]  # noqa: E731
    await reconcile(reconciler, body(), RUNTIME_VIEW)
    ray()["status"] = READY_CLUSTER  # busy: both workers ready
    await reconcile(reconciler, body(), RUNTIME_VIEW)
    assert kube.status_of("MLWorkload", "team-nlp", "demo")["idle"] == {
        "deadline": "2026-11-23T12:30:00Z", "reason": "RuntimeLimit"}  # fmt: skip
    writes = len(kube.writes)
    clock[0] = NOW + datetime.timedelta(seconds=1799)
    steady = await reconcile(reconciler, body(), RUNTIME_VIEW)
    assert (steady.status_written, kube.writes[writes:]) == (False, [])  # before the deadline: nothing written
    clock[0] = NOW + datetime.timedelta(seconds=1800)
    suspended = await reconcile(reconciler, body(), RUNTIME_VIEW)
    assert suspended.status_written
    assert ray()["spec"]["suspend"] is True
    status = kube.status_of("MLWorkload", "team-nlp", "demo")
    assert status["phase"] == "Suspended"
    assert (status["idle"]["suspendedAt"], status["idle"]["reason"]) == ("2026-11-23T12:30:00Z", "RuntimeLimit")
    state = {c["type"]: (c["status"], c["reason"]) for c in status["conditions"]}
    assert state["Ready"] == ("False", "RuntimeLimit")
    # The resume gesture restarts the count: the next deadline is an hour after it.
    clock[0] = NOW + datetime.timedelta(hours=2)
    body()["metadata"]["generation"] = 2
    await reconcile(reconciler, body(), RUNTIME_VIEW)
    assert ray()["spec"]["suspend"] is False
    assert kube.status_of("MLWorkload", "team-nlp", "demo")["idle"] == {
        "deadline": "2026-11-23T15:00:00Z", "reason": "RuntimeLimit", "resumedAt": "2026-11-23T14:00:00Z"}  # fmt: skip


READY_SERVICE = {"serviceStatus": "Running",
                 "conditions": [{"type": "Ready", "status": "True", "reason": "NonZeroServeEndpoints"},
                                {"type": "UpgradeInProgress", "status": "False"}],
                 "activeServiceStatus": {"applicationStatuses": {"app": {"status": "RUNNING"}}}}  # fmt: skip


async def test_a_service_past_the_runtime_limit_loses_its_rayservice_and_a_spec_change_brings_it_back(
    kube: FakeKubeApi,
) -> None:
    clock = [NOW]
    reconciler = Reconciler(kube=kube, gcp=DryRunProvisioner(), clock=lambda: clock[0])
    doc = workload().service().set("metadata.generation", 1)
    kube.put(doc.set("metadata.creationTimestamp", "2026-11-23T11:30:00Z").doc)
    body = lambda: kube.objects["MLWorkload", "team-nlp", "demo"]  # noqa: E731
    await reconcile(reconciler, body(), RUNTIME_VIEW)
    kube.objects["RayService", "team-nlp", "demo"]["status"] = READY_SERVICE
    await reconcile(reconciler, body(), RUNTIME_VIEW)
    status = kube.status_of("MLWorkload", "team-nlp", "demo")
    assert status["idle"] == {"deadline": "2026-11-23T12:30:00Z", "reason": "RuntimeLimit"}
    assert status["phase"] == "Running"
    ours = {key for key in kube.objects if key[0] != "MLWorkload"}
    writes = len(kube.writes)
    clock[0] = NOW + datetime.timedelta(seconds=1800)
    due = await reconcile(reconciler, body(), RUNTIME_VIEW)
    assert due.status_written
    # The RayService, and nothing else of ours, is deleted.
    assert [w for w in kube.writes[writes:] if not w.startswith("status ")] == ["delete RayService/demo"]
    assert {key for key in kube.objects if key[0] != "MLWorkload"} == ours - {("RayService", "team-nlp", "demo")}
    status = kube.status_of("MLWorkload", "team-nlp", "demo")
    assert status["phase"] == "Suspended"
    assert (status["idle"]["suspendedAt"], status["idle"]["reason"]) == ("2026-11-23T12:30:00Z", "RuntimeLimit")
    found = {c["type"]: (c["status"], c["reason"], c["message"]) for c in status["conditions"]}
    assert found["Ready"][:2] == ("False", "RuntimeLimit")
    assert "Serve endpoints are down until a spec change resumes it" in found["Ready"][2]
    assert found["RayReady"][:2] == ("False", "RuntimeLimit")  # not RayObjectMissing: the suspension wins
    assert (found["Reconciling"][:2], found["Stalled"][:2]) == (("False", "UpToDate"), ("False", "UpToDate"))
    assert "ray" not in status
    # The next passes, however late: nothing is written.
    writes = len(kube.writes)
    clock[0] = NOW + datetime.timedelta(hours=5)
    again = await reconcile(reconciler, body(), RUNTIME_VIEW)
    assert (again.status_written, kube.writes[writes:]) == (False, [])
    # The resume gesture (a spec change): a new RayService, and the count restarts.
    body()["metadata"]["generation"] = 2
    await reconcile(reconciler, body(), RUNTIME_VIEW)
    assert ("RayService", "team-nlp", "demo") in kube.objects
    status = kube.status_of("MLWorkload", "team-nlp", "demo")
    assert status["idle"] == {
        "deadline": "2026-11-23T18:00:00Z", "reason": "RuntimeLimit", "resumedAt": "2026-11-23T17:00:00Z"}  # fmt: skip
    assert status["phase"] != "Suspended"


def test_a_user_suspend_is_reported_as_suspended_not_idle() -> None:
    idle = IdleStatus(since="2026-11-23T11:00:00Z", deadline="2026-11-23T11:10:00Z",
                      suspended_at="2026-11-23T11:10:00Z", suspended_generation=4)  # fmt: skip
    by_operator = compute_status(seen(suspended=True, idle=idle, idle_known=True), None, NOW)
    assert conditions(by_operator)["Ready"] == ("False", "IdleTimeout")
    by_user = compute_status(seen(suspended=True, suspended_by_user=True, idle=idle, idle_known=True), None, NOW)
    assert conditions(by_user)["Ready"] == ("False", "Suspended")
    # A refused workload decides nothing: its record stays as it was.
    kept = compute_status(seen(refusal=[Problem("spec", "no")]), by_operator, NOW)
    assert kept.idle == idle


# --- Kueue: QueueAdmitted ---------------------------------------------------------------------------------------

HELD_JOB = RayObservation(RayState.SUSPENDED, "RayJobSuspended", "the job is suspended", "Suspended",
                          job={"status": ""})  # fmt: skip


def test_a_job_kueue_holds_is_waiting_for_quota_not_suspended() -> None:
    """Argo CD shows Progressing with the reason (kstatus Reconciling=True), never a settled Suspended."""
    status = compute_status(seen(ray_kind="RayJob", ray=HELD_JOB, queue="urgent", queue_held=True,
                                 node_pools=Readiness(True, "Provisioned"), identity=Readiness(True, "Ready")),
                            None, NOW)  # fmt: skip
    found = conditions(status)
    assert found["QueueAdmitted"] == ("False", "WaitingForQuota")
    assert found["Reconciling"] == ("True", "WaitingForQuota")
    assert found["Ready"] == ("False", "WaitingForQuota")
    assert found["Stalled"] == ("False", "UpToDate")
    assert status.phase is Phase.PENDING
    message = next(c.message for c in status.conditions if c.type == "QueueAdmitted")
    assert "'urgent'" in message


def test_an_admitted_job_runs_with_queue_admitted_true() -> None:
    running = RayObservation(RayState.READY, "RayJobRunning", "running", "Running", job={"status": "RUNNING"})
    status = compute_status(seen(ray_kind="RayJob", ray=running, queue="urgent", queue_held=False,
                                 node_pools=Readiness(True, "Provisioned"), identity=Readiness(True, "Ready")),
                            None, NOW)  # fmt: skip
    found = conditions(status)
    assert found["QueueAdmitted"] == ("True", "Admitted")
    assert (found["Ready"][0], found["Reconciling"][0], status.phase) == ("True", "False", Phase.RUNNING)


def test_queue_admitted_is_absent_when_not_queued_and_false_before_the_ray_object_exists() -> None:
    assert "QueueAdmitted" not in conditions(compute_status(seen(ray=RUNNING), None, NOW))
    waiting = compute_status(seen(ray_kind="RayJob", queue="urgent"), None, NOW)
    assert conditions(waiting)["QueueAdmitted"] == ("False", "WaitingForQuota")
    # A finished job stays finished, even if the Ray object's suspend flag were set again.
    done = RayObservation(RayState.SUCCEEDED, "RayJobSucceeded", "ok", "Complete", job={"status": "SUCCEEDED"})
    finished = compute_status(seen(ray_kind="RayJob", ray=done, queue="urgent", queue_held=True), None, NOW)
    assert finished.phase is Phase.SUCCEEDED
