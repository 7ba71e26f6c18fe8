"""Autoscaler scale-up failures on a workload's pods become a NodePoolsReady blocker; preempted worker pods are
counted once each, and reported while Ray recovers."""

import dataclasses
import datetime
from typing import Any

import pytest
from prometheus_client import REGISTRY

from mlworkload.api.workload import MAX_RECENT_PREEMPTIONS, Condition, MLWorkloadStatus, Phase
from mlworkload.controller.raystatus import RayObservation, RayState
from mlworkload.controller.scaleup import (
    needs_pod_read,
    observe_disruptions,
    preemption_of,
    preemptions,
    record_preemptions,
    report_preemptions,
    scale_up_failure,
)
from tests.support.clock import NOW
from tests.support.documents import permissive_policy, resolved, workload
from tests.support.fake_kube import FakeKubeApi
from tests.support.kuberay import STAMP, preempted, worker_pod

QUOTA = ("Node scale up in zones us-central1-a associated with this pod failed: GCE quota exceeded. "
         "Pod is at risk of not being scheduled.")  # fmt: skip
STOCKOUT = ("Node scale up in zones us-central1-b associated with this pod failed: GCE out of resources. "
            "Pod is at risk of not being scheduled.")  # fmt: skip


def event(pod: str, message: str, minutes_ago: float = 1, reason: str = "FailedScaleUp") -> dict[str, object]:
    stamp = (NOW - datetime.timedelta(minutes=minutes_ago)).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {"reason": reason, "message": message, "lastTimestamp": stamp,
            "involvedObject": {"kind": "Pod", "name": pod}}  # fmt: skip


@pytest.mark.parametrize(
    ("events", "reason"),
    [
        ([event("w-gpu-1", QUOTA)], "QuotaExceeded"),
        ([event("w-gpu-1", STOCKOUT)], "Stockout"),
        ([event("w-gpu-1", QUOTA, minutes_ago=5), event("w-gpu-2", STOCKOUT, minutes_ago=1)], "Stockout"),  # newest
        ([event("other-pod", QUOTA)], None),  # not one of the workload's pods
        ([event("w-gpu-1", QUOTA, minutes_ago=30)], None),  # old news: the autoscaler repeats a live failure
        ([event("w-gpu-1", QUOTA, reason="TriggeredScaleUp")], None),
        ([event("w-gpu-1", "pod didn't trigger scale-up: 1 max node group size reached")], None),
    ],
)
def test_scale_up_failures(events: list[dict[str, object]], reason: str | None) -> None:
    readiness = scale_up_failure(events, {"w-gpu-1", "w-gpu-2"}, NOW)
    if reason is None:
        assert readiness is None
        return
    assert readiness is not None
    assert (readiness.ready, readiness.reason, readiness.permanent) == (False, reason, True)
    assert "cannot get a node" in readiness.message


def test_an_event_without_a_time_is_ignored() -> None:
    undated = event("w-gpu-1", QUOTA)
    del undated["lastTimestamp"]
    assert scale_up_failure([undated], {"w-gpu-1"}, NOW) is None


# --- preemptions of worker pods ------------------------------------------------------------------------------

WORKER = worker_pod("team-nlp", "demo", "spot", "demo-spot-worker-a", node="gke-spot-1")
LATE = "2026-11-23T12:05:00Z"


@pytest.mark.parametrize(
    ("pod", "reason"),
    [
        (preempted(WORKER), "NodeShutdown"),  # a Spot VM reclaimed: graceful node shutdown
        (preempted(WORKER, reason="PreemptionByScheduler", message="Preempted by a pod with higher priority"),
         "PreemptionByScheduler"),
        (preempted(WORKER, reason="DeletionByPodGC", message="PodGC: node no longer exists"), "DeletionByPodGC"),
        (preempted(WORKER, reason="DeletionByTaintManager", message="Taint manager: deleting due to NoExecute"),
         "DeletionByTaintManager"),
        (preempted(WORKER, message="Preempted in order to admit critical pod"), "TerminationByKubelet"),
        (preempted(WORKER, reason="EvictionByEvictionAPI", message="Eviction API: evicting"), None),  # voluntary
        (preempted(WORKER, message="The node was low on resource: memory."), None),  # node pressure, not preemption
        (WORKER, None),
    ],
    ids=["node-shutdown", "scheduler", "podgc", "taint", "critical-pod", "eviction", "node-pressure", "running"],
)  # fmt: skip
def test_which_disruptions_are_preemptions(pod: dict[str, object], reason: str | None) -> None:
    found = preemption_of(pod)
    if reason is None:
        assert found is None
        return
    assert found is not None
    assert (found.reason, found.pod, found.node, found.group) == (reason, "demo-spot-worker-a", "gke-spot-1", "spot")


def test_a_kubelet_without_the_disruption_condition_is_read_from_the_pod_status() -> None:
    legacy = preempted(WORKER)
    legacy["status"]["conditions"] = [c for c in legacy["status"]["conditions"] if c["type"] != "DisruptionTarget"]
    found = preemption_of(legacy)
    assert found is not None
    assert (found.reason, found.time) == ("NodeShutdown", STAMP)  # when the pod stopped being ready


def test_the_head_is_no_worker() -> None:
    head = preempted(WORKER)
    head["metadata"]["labels"] = {**head["metadata"]["labels"], "mlworkload.io/role": "head"}
    assert preemption_of(head) is None


def named(pod: dict[str, Any], name: str, uid: str) -> dict[str, Any]:
    return {**pod, "metadata": {**pod["metadata"], "name": name, "uid": uid}}


def test_each_preempted_pod_is_counted_once_and_the_record_stays_bounded() -> None:
    first = preemptions([named(preempted(WORKER), "a", "uid-a"), named(WORKER, "b", "uid-b")])
    status, new = record_preemptions(None, first)
    assert status is not None
    assert ([p.pod for p in new], status.count, status.recent_pods) == (["a"], 1, ["uid-a"])
    assert status.last_preemption is not None
    assert (status.last_preemption.pod, status.last_preemption.reason) == ("a", "NodeShutdown")
    again, none = record_preemptions(status, first)  # the same pod, seen again: nothing new
    assert (again, none) == (status, [])
    later = preemptions([named(preempted(WORKER), "a", "uid-a"), named(preempted(WORKER, at=LATE), "b", "uid-b")])
    after, new = record_preemptions(status, later)
    assert after is not None
    assert ([p.pod for p in new], after.count, after.recent_pods) == (["b"], 2, ["uid-a", "uid-b"])
    assert after.last_preemption is not None
    assert after.last_preemption.time == LATE
    many = [named(preempted(WORKER), f"p{i}", f"uid-{i:03}") for i in range(MAX_RECENT_PREEMPTIONS + 5)]
    bounded, new = record_preemptions(after, preemptions(many))
    assert bounded is not None
    assert (len(new), bounded.count) == (MAX_RECENT_PREEMPTIONS + 5, MAX_RECENT_PREEMPTIONS + 7)
    assert len(bounded.recent_pods) == MAX_RECENT_PREEMPTIONS


RUNNING = RayObservation(RayState.READY, "RayClusterReady", "all Ray pods are ready", "ready", workers="2/2")
SHORT = dataclasses.replace(RUNNING, workers="1/2")


def recovering_before() -> MLWorkloadStatus:
    condition = Condition(type="Reconciling", status="True", reason="RecoveringFromPreemption", message="",
                          last_transition_time=STAMP)  # fmt: skip
    return MLWorkloadStatus(phase=Phase.RUNNING, conditions=[condition])


JOB_RUNNING = RayObservation(RayState.READY, "RayJobRunning", "", "Running", job={"attempts": 1}, workers="2/2")
JOB_FAILED = RayObservation(RayState.FAILED, "AppFailed", "exit 1", "Failed", job={"attempts": 1}, workers="0/2")


@pytest.mark.parametrize(
    ("ray", "previous", "read"),
    [
        (RUNNING, None, False),  # steady: no read
        (SHORT, None, True),  # a running cluster lost a worker
        (dataclasses.replace(SHORT, state=RayState.PROVISIONING), None, False),  # still coming up
        (dataclasses.replace(SHORT, state=RayState.PROVISIONING), recovering_before(), True),
        (dataclasses.replace(RUNNING, workers=""), None, False),  # KubeRay did not count
        (JOB_FAILED, None, True),  # an attempt failed: was it preempted?
        (JOB_FAILED, MLWorkloadStatus(conditions=[Condition(type="RayReady", status="False", reason="AppFailed",
                                                            message="", last_transition_time=STAMP)]), False),
        (JOB_RUNNING, None, False),
    ],
    ids=["steady", "short", "provisioning", "recovering", "uncounted", "job-failed", "job-failed-seen", "job"],
)  # fmt: skip
def test_pods_are_read_only_when_ray_lost_workers(
    ray: RayObservation, previous: MLWorkloadStatus | None, read: bool
) -> None:
    assert needs_pod_read(ray, previous) is read


async def test_a_preempted_worker_is_recorded_and_recovery_reported() -> None:
    kube = FakeKubeApi()
    kube.put(named(preempted(WORKER), "demo-spot-worker-a", "uid-a"))
    kube.put(named(WORKER, "demo-spot-worker-b", "uid-b"))
    steady = await observe_disruptions(kube, "team-nlp", "demo", RUNNING, None)
    assert (steady.status, steady.new, steady.recovering, kube.reads) == (None, (), None, [])
    view = await observe_disruptions(kube, "team-nlp", "demo", SHORT, None)
    assert kube.reads == ["list Pod"]
    assert view.status is not None
    assert view.status.count == 1
    assert [p.pod for p in view.new] == ["demo-spot-worker-a"]
    assert view.recovering is not None
    assert view.recovering.reason == "RecoveringFromPreemption"
    assert "lost pod demo-spot-worker-a on node gke-spot-1 to a preemption (NodeShutdown)" in view.recovering.message
    assert view.recovering.message.endswith("1/2 workers ready")
    # Back to full strength: no read, no recovery; the record stays.
    previous = MLWorkloadStatus(disruptions=view.status)
    done = await observe_disruptions(kube, "team-nlp", "demo", RUNNING, previous)
    assert (done.status, done.new, done.recovering, kube.reads) == (view.status, (), None, ["list Pod"])


def test_preemptions_are_counted_per_namespace_accelerator_and_capacity() -> None:
    doc = workload().group("spot", capacity="Spot").gpu_group("swf", capacity="SpotWithFallback")
    resolved_workload = resolved(doc, permissive_policy())
    gpu_worker = worker_pod("team-nlp", "demo", "swf", "demo-swf-worker-b", node="gke-spot-2")
    seen = preemptions([named(preempted(WORKER), "a", "uid-a"), named(preempted(gpu_worker), "b", "uid-b")])

    def count(accelerator: str, capacity: str) -> float:
        value = REGISTRY.get_sample_value("mlworkload_preemptions_total", {
            "namespace": "team-nlp", "accelerator": accelerator, "capacity": capacity})  # fmt: skip
        return value or 0.0

    before = (count("none", "Spot"), count("nvidia-l4", "SpotWithFallback"))
    report_preemptions(resolved_workload.workload.to_dict(), resolved_workload, seen)  # no kopf context: no Event
    assert (count("none", "Spot"), count("nvidia-l4", "SpotWithFallback")) == (before[0] + 1, before[1] + 1)
