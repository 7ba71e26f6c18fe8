"""What the workload's pods say that its Ray object does not: pods the cluster autoscaler cannot place, and worker
pods Kubernetes took away (preemptions).

Scale-up failures: a node pool made with 0 nodes only meets GCE when the autoscaler scales it up for a pending
pod. When that fails, the autoscaler posts a `FailedScaleUp` Warning on the pod ("Node scale up in zones
... associated with this pod failed: GCE quota exceeded. Pod is at risk of not being scheduled.",
or "GCE out of resources" for a stockout). The same failure kinds as a failed pool creation apply.

Preemptions: see below. Both read the pods only when Ray's own status says something is missing, and one LIST
serves both in a reconcile that needs both.
"""

import contextlib
import datetime
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, cast

import kopf

from mlworkload.api.workload import (
    MAX_RECENT_PREEMPTIONS,
    DisruptionsStatus,
    MLWorkloadStatus,
    Phase,
    PreemptionStatus,
)
from mlworkload.constants import CONDITION_RAY_READY, CONDITION_RECONCILING, LABEL_GROUP, LABEL_ROLE, LABEL_WORKLOAD
from mlworkload.controller.kube import RESOURCES, KubeApi, Manifest
from mlworkload.controller.raystatus import RayObservation, RayState
from mlworkload.controller.timestamps import parse_rfc3339
from mlworkload.gcp.errors import FailureKind, classify_message
from mlworkload.gcp.provisioner import Readiness
from mlworkload.metrics import PREEMPTIONS
from mlworkload.policy.resolve import ResolvedWorkload

PODS = RESOURCES["v1", "Pod"]
EVENTS = RESOURCES["v1", "Event"]
FAILED_SCALE_UP: Final = "FailedScaleUp"
# An older failure says nothing about now: the autoscaler repeats the event while it keeps failing.
RECENT: Final = datetime.timedelta(minutes=10)
_SURFACED: Final = frozenset({FailureKind.QUOTA, FailureKind.STOCKOUT})


def _when(event: Mapping[str, Any]) -> datetime.datetime | None:
    stamp = event.get("lastTimestamp") or event.get("eventTime") or (event.get("series") or {}).get("lastObservedTime")
    return parse_rfc3339(stamp)


def scale_up_failure(
    events: Iterable[Mapping[str, Any]], pods: Collection[str], now: datetime.datetime
) -> Readiness | None:
    """The newest recent quota/stockout scale-up failure of one of `pods`, as a NodePoolsReady blocker."""
    found: list[tuple[datetime.datetime, str, str]] = []
    for event in events:
        pod = (event.get("involvedObject") or {}).get("name")
        when = _when(event)
        if event.get("reason") != FAILED_SCALE_UP or pod not in pods or when is None or now - when > RECENT:
            continue
        found.append((when, str(pod), str(event.get("message") or "")))
    for _, pod, message in sorted(found, reverse=True):
        failure = classify_message(message)
        if failure.kind in _SURFACED:
            return Readiness(False, failure.kind.value, f"pod {pod} cannot get a node: {message}", permanent=True)
    return None


async def observe_scale_up(
    kube: KubeApi, namespace: str, workload: str, now: datetime.datetime, listed: Sequence[Manifest] | None = None
) -> Readiness | None:
    """Read the workload's pending pods and their autoscaler events (two LISTs; only while Ray is not ready).
    `listed`: the workload's pods, when this reconcile already read them (then only the events are read)."""
    if listed is not None:
        pods = [pod for pod in listed if (pod.get("status") or {}).get("phase") == "Pending"]
    else:
        pods = await kube.list(PODS, namespace, {LABEL_WORKLOAD: workload}, {"status.phase": "Pending"})
    if not pods:
        return None
    events = await kube.list(EVENTS, namespace, {}, {"involvedObject.kind": "Pod", "reason": FAILED_SCALE_UP})
    return scale_up_failure(events, {pod["metadata"]["name"] for pod in pods}, now)


# --- preemptions --------------------------------------------------------------------------------------------
#
# Kubernetes marks a pod it is about to take away with the condition DisruptionTarget ("Pod disruption
# conditions", concepts/workloads/pods/disruptions): its reason says who takes it.
# - "TerminationByKubelet: Pod has been terminated by the kubelet, because of either node pressure eviction, the
#   graceful node shutdown, or preemption for system critical pods." A Spot VM's reclaim is a graceful node
#   shutdown: the kubelet's message is then "Pod was terminated in response to imminent node shutdown." (also the
#   pod's status.message, with status.reason "Terminated"; "Shutdown" before Kubernetes 1.22). Node pressure (the
#   node was low on memory) is no preemption: the workload's own use may have caused it.
# - "PreemptionByScheduler: Pod is due to be preempted by a scheduler in order to accommodate a new Pod with a
#   higher priority."
# - "DeletionByPodGC: Pod, that is bound to a no longer existing Node, is due to be deleted by Pod garbage
#   collection." and "DeletionByTaintManager" (a NoExecute taint, such as an unreachable node's): the node went
#   away under the pod, which is how a reclaimed Spot VM looks when its shutdown was not graceful.
# - "EvictionByEvictionAPI" is a voluntary disruption (a drain, a scale-down), which PodDisruptionBudgets govern:
#   not counted.
# Each preempted worker pod is counted once, by uid (status.disruptions.recentPods keeps the latest ones).

WORKER_ROLE: Final = "worker"
DISRUPTION_TARGET: Final = "DisruptionTarget"
REASON_NODE_SHUTDOWN: Final = "NodeShutdown"
REASON_RECOVERING: Final = "RecoveringFromPreemption"
EVENT_PREEMPTED: Final = "Preempted"
_PREEMPTING: Final = frozenset({"PreemptionByScheduler", "DeletionByPodGC", "DeletionByTaintManager"})
_CRITICAL_POD_PREEMPTION: Final = "Preempted in order to admit critical pod"  # the kubelet's message
EVENTS_PER_PASS: Final = 10  # a mass reclaim is summed up, not posted pod by pod
REASON_JOB_RETRYING: Final = "RayJobRetrying"  # raystatus.py's reason while KubeRay retries a RayJob


@dataclass(frozen=True, slots=True)
class Preemption:
    """One worker pod Kubernetes took away."""

    uid: str
    pod: str
    node: str
    group: str
    reason: str
    message: str
    time: str  # RFC 3339, as Kubernetes wrote it

    def status(self) -> PreemptionStatus:
        return PreemptionStatus(time=self.time, pod=self.pod, node=self.node, group=self.group, reason=self.reason,
                                message=self.message)  # fmt: skip

    def describe(self) -> str:
        where = f" on node {self.node}" if self.node else ""
        return f"worker pod {self.pod} of group {self.group or '?'}{where} was preempted ({self.reason}) at {self.time}"


def _shutdown(message: str) -> bool:
    """The kubelet's node shutdown message ("... in response to imminent node shutdown.")."""
    return "node shutdown" in message


def preemption_of(pod: Mapping[str, Any]) -> Preemption | None:
    """The preemption a worker pod's status shows, if any."""
    meta, status = pod.get("metadata") or {}, pod.get("status") or {}
    labels = meta.get("labels") or {}
    if labels.get(LABEL_ROLE) != WORKER_ROLE:
        return None
    condition = next((c for c in status.get("conditions") or []
                      if c.get("type") == DISRUPTION_TARGET and c.get("status") == "True"), None)  # fmt: skip
    pod_message = str(status.get("message") or "")
    if condition is not None:
        why, message = str(condition.get("reason") or ""), str(condition.get("message") or "")
        when = condition.get("lastTransitionTime")
        if why == "TerminationByKubelet" and _shutdown(message):
            why = REASON_NODE_SHUTDOWN
        elif why == "TerminationByKubelet" and _CRITICAL_POD_PREEMPTION not in message:
            return None  # node-pressure eviction
        elif why not in _PREEMPTING and why != "TerminationByKubelet":
            return None  # an eviction through the API: voluntary
    elif status.get("reason") == "Shutdown" or (status.get("reason") == "Terminated" and _shutdown(pod_message)):
        # A kubelet older than the DisruptionTarget condition (before Kubernetes 1.26): the pod's own status.
        why, message, when = REASON_NODE_SHUTDOWN, pod_message, None
    else:
        return None
    if not isinstance(when, str):  # when the pod stopped being ready, else when it was created
        ready: Mapping[str, Any] = next((c for c in status.get("conditions") or [] if c.get("type") == "Ready"), {})
        when = ready.get("lastTransitionTime") or meta.get("creationTimestamp") or ""
    return Preemption(
        uid=str(meta.get("uid") or meta.get("name") or ""), pod=str(meta.get("name") or ""),
        node=str((pod.get("spec") or {}).get("nodeName") or ""), group=str(labels.get(LABEL_GROUP) or ""),
        reason=why, message=message, time=str(when),
    )  # fmt: skip


def preemptions(pods: Iterable[Mapping[str, Any]]) -> list[Preemption]:
    """The preempted worker pods among `pods`, oldest first."""
    found = [seen for seen in map(preemption_of, pods) if seen is not None]
    return sorted(found, key=lambda seen: (seen.time, seen.pod))


def record_preemptions(
    previous: DisruptionsStatus | None, seen: Sequence[Preemption]
) -> tuple[DisruptionsStatus | None, list[Preemption]]:
    """The disruptions status with the preemptions not counted yet, and those (previous when none are new)."""
    counted = set(previous.recent_pods) if previous is not None else set()
    new = [preemption for preemption in seen if preemption.uid not in counted]
    if not new:
        return previous, []
    recent = [*(previous.recent_pods if previous is not None else []), *(p.uid for p in new)]
    status = DisruptionsStatus(
        count=(previous.count if previous is not None else 0) + len(new),
        last_preemption=new[-1].status(),
        recent_pods=recent[-MAX_RECENT_PREEMPTIONS:],
    )
    return status, new


def worker_counts(workers: str) -> tuple[int, int] | None:
    """KubeRay's "ready/desired" worker counts (RayObservation.workers), None when unknown."""
    ready, _, desired = workers.partition("/")
    return (int(ready), int(desired)) if ready.isdigit() and desired.isdigit() else None


@dataclass(frozen=True)
class DisruptionView:
    """What one reconcile learned of preemptions: the status to write, the new ones (for the event and the metric),
    whether the workload is recovering from one, and the pods it listed (for the scale-up check)."""

    status: DisruptionsStatus | None
    new: Sequence[Preemption] = ()
    recovering: Readiness | None = None
    pods: list[Manifest] | None = None


def _was_recovering(previous: MLWorkloadStatus | None) -> bool:
    return previous is not None and any(
        c.type == CONDITION_RECONCILING and c.status == "True" and c.reason == REASON_RECOVERING
        for c in previous.conditions
    )


def _ray_reason_before(previous: MLWorkloadStatus | None) -> str:
    return next((c.reason for c in previous.conditions if c.type == CONDITION_RAY_READY), "") if previous else ""


def _attempt_ended(ray: RayObservation, previous: MLWorkloadStatus | None) -> bool:
    """A RayJob attempt failed since the last status (the job failed, or KubeRay retries it): whether a preemption
    ended it is worth one read."""
    failed = ray.state is RayState.FAILED or ray.reason == REASON_JOB_RETRYING
    return ray.job is not None and failed and ray.reason != _ray_reason_before(previous)


def needs_pod_read(ray: RayObservation, previous: MLWorkloadStatus | None) -> bool:
    """Pods are read only when Ray lost workers it had (KubeRay counts fewer ready than desired in a cluster that
    was running), while a recovery is under way, or once when a RayJob attempt failed: a steady workload, or one
    still coming up, costs no read."""
    counts = worker_counts(ray.workers)
    short = counts is not None and counts[0] < counts[1]
    live = ray.state in {RayState.READY, RayState.PROVISIONING}
    was_up = ray.state is RayState.READY or (previous is not None and previous.phase is Phase.RUNNING)
    return (short and live and (was_up or _was_recovering(previous))) or _attempt_ended(ray, previous)


def _recovering(
    ray: RayObservation, last: PreemptionStatus | None, new: Sequence[Preemption], previous: MLWorkloadStatus | None
) -> Readiness | None:
    counts = worker_counts(ray.workers)
    if last is None or counts is None or counts[0] >= counts[1]:
        return None
    if ray.state not in {RayState.READY, RayState.PROVISIONING} or not (new or _was_recovering(previous)):
        return None
    where = f" on node {last.node}" if last.node else ""
    message = (f"worker group {last.group or '?'} lost pod {last.pod}{where} to a preemption ({last.reason}) at"
               f" {last.time}; {counts[0]}/{counts[1]} workers ready")  # fmt: skip
    return Readiness(False, REASON_RECOVERING, message)


async def observe_disruptions(
    kube: KubeApi, namespace: str, workload: str, ray: RayObservation, previous: MLWorkloadStatus | None
) -> DisruptionView:
    """Preemptions of the workload's worker pods since the last status, and whether it is recovering from one."""
    before = previous.disruptions if previous is not None else None
    if not needs_pod_read(ray, previous):
        last = before.last_preemption if before is not None else None
        return DisruptionView(before, recovering=_recovering(ray, last, (), previous))
    pods = await kube.list(PODS, namespace, {LABEL_WORKLOAD: workload})
    status, new = record_preemptions(before, preemptions(pods))
    last = status.last_preemption if status is not None else None
    return DisruptionView(status, new, _recovering(ray, last, new, previous), pods)


def report_preemptions(body: Mapping[str, Any], resolved: ResolvedWorkload, new: Sequence[Preemption]) -> None:
    """The metric, once per preemption, and an Event on the workload (kopf's poster: only inside the operator)."""
    capacities = {group.name: group for group in resolved.groups}
    for preemption in new:
        group = capacities.get(preemption.group)
        accelerator = group.spec.accelerator.type if group is not None and group.spec.accelerator else "none"
        capacity = group.capacity.value if group is not None else "unknown"
        PREEMPTIONS.labels(namespace=resolved.namespace, accelerator=accelerator, capacity=capacity).inc()
    if not new:
        return
    messages = [preemption.describe() for preemption in new[:EVENTS_PER_PASS]]
    if len(new) > EVENTS_PER_PASS:
        messages[-1] += f" (and {len(new) - EVENTS_PER_PASS} more worker pods)"
    target = body if isinstance(body, kopf.Body) else kopf.Body(cast(kopf.RawBody, body))
    for message in messages:
        with contextlib.suppress(LookupError):  # no kopf context: unit tests and tools post nothing
            kopf.info(target, reason=EVENT_PREEMPTED, message=f"{message}; Ray reschedules its work")
