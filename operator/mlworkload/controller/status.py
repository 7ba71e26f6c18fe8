"""MLWorkload status as a pure function of what the reconcile observed.

Conditions follow kstatus: `Ready` says the workload does what it was asked; `Reconciling` is True
while the operator or Ray is still moving towards that; `Stalled` is True when it cannot get there
without a change to the spec, the policy or GCP quota. kubectl wait, Argo CD and Flux read them.
"""

import dataclasses
import datetime
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from mlworkload.api.workload import (
    Condition,
    DisruptionsStatus,
    GpuStatus,
    IamBindingStatus,
    IdleStatus,
    JobRunStatus,
    MLWorkloadStatus,
    NodePoolStatus,
    Phase,
    RayObjectStatus,
)
from mlworkload.constants import (
    CONDITION_DEGRADED,
    CONDITION_ENDPOINTS_READY,
    CONDITION_IDENTITY_READY,
    CONDITION_NETWORK_POLICIES_ENFORCED,
    CONDITION_NODE_POOLS_READY,
    CONDITION_POLICY_ADMITTED,
    CONDITION_QUEUE_ADMITTED,
    CONDITION_RAY_READY,
    CONDITION_READY,
    CONDITION_RECONCILING,
    CONDITION_STALLED,
    REASON_ALLOWED,
    REASON_CHILD_CONFLICT,
    REASON_DELETING,
    REASON_NODE_POOL_DEGRADED,
    REASON_POLICY_VIOLATION,
    REASON_QUEUE_ADMITTED,
    REASON_SUSPENDED,
    REASON_UP_TO_DATE,
    REASON_WAITING_FOR_QUOTA,
)
from mlworkload.controller.idle import describe as describe_idle
from mlworkload.controller.idle import limit_reason
from mlworkload.controller.raystatus import RayObservation, RayState
from mlworkload.controller.timestamps import parse_rfc3339, rfc3339
from mlworkload.gcp.provisioner import NO_IDENTITY, NO_NODE_POOLS, Readiness
from mlworkload.problems import Problem

Status = Literal["True", "False", "Unknown"]


@dataclass(frozen=True, slots=True)
class Observation:
    """Everything status depends on, gathered by one reconcile."""

    generation: int
    ray_kind: str
    ray_name: str
    refusal: Sequence[Problem] = ()  # the workload is not admitted: nothing is applied
    refusal_reason: str = REASON_POLICY_VIOLATION
    conflicts: Sequence[Problem] = ()  # admitted, but a child's name is taken by a foreign object
    write_failure: Readiness | None = None  # the Kubernetes API refused a child's write
    ray: RayObservation | None = None
    node_pools: Readiness = NO_NODE_POOLS
    pools: Sequence[NodePoolStatus] = ()
    identity: Readiness = NO_IDENTITY
    bindings: Sequence[IamBindingStatus] = ()
    suspended: bool = False  # by the user (spec.suspend) or the operator (idle.suspendedAt: idle or runtime limit)
    suspended_by_user: bool = False  # spec.suspend: reported as Suspended even when idle as well
    deleting: bool = False
    gpus: GpuStatus | None = None
    endpoints: Readiness | None = None  # what GKE has made of the exposed endpoints (never blocks Ready)
    network_policies: Readiness | None = None  # a warning: isolation is not enforced (never blocks Ready)
    degraded: str | None = None  # GKE's word on node pools that are RUNNING_WITH_ERROR (never blocks Ready)
    dashboard_url: str | None = None
    serve_url: str | None = None
    extra_conditions: Sequence[Condition] = field(default_factory=tuple)
    # Preemptions of worker pods (scaleup.observe_disruptions); None: as the previous status says.
    disruptions: DisruptionsStatus | None = None
    recovering: Readiness | None = None  # Ray is short of workers since a preemption (never blocks Ready)
    # The idle window or suspension (controller/idle.py); unless `idle_known`, as the previous status says (a
    # refused or deleted workload keeps its record: nothing is decided for it).
    idle: IdleStatus | None = None
    idle_known: bool = False
    queue: str | None = None  # the Kueue LocalQueue the Ray object waits in (resolve_queue); None: not queued
    queue_held: bool = False  # the queued Ray object exists and Kueue holds it (its spec.suspend is true)


@dataclass(frozen=True, slots=True)
class ConditionFactory:
    """Conditions of one status write: the transition time is kept while a condition's status is unchanged."""

    generation: int
    previous: dict[str, Condition]
    stamp: str

    def __call__(self, kind: str, status: bool, reason: str, message: str) -> Condition:
        value: Status = "True" if status else "False"
        before = self.previous.get(kind)
        unchanged = before is not None and before.status == value
        return Condition(
            type=kind,
            status=value,
            reason=reason,
            message=message,
            last_transition_time=before.last_transition_time if unchanged and before else self.stamp,
            observed_generation=self.generation,
        )


def _phase(seen: Observation, ray: RayObservation, ready: bool) -> Phase:
    if seen.deleting:
        return Phase.DELETING
    if seen.refusal or ray.reason == REASON_WAITING_FOR_QUOTA:
        return Phase.PENDING
    if ray.state is RayState.FAILED:
        return Phase.FAILED
    if ray.state is RayState.SUCCEEDED:
        return Phase.SUCCEEDED
    if seen.suspended or ray.state is RayState.SUSPENDED:
        return Phase.SUSPENDED
    if ready:
        return Phase.RUNNING
    return Phase.PENDING if ray.state is RayState.ABSENT else Phase.PROVISIONING


def _blocker(seen: Observation, ray: RayObservation) -> Readiness | None:
    """The first unmet dependency, in the order they are provisioned."""
    if seen.refusal:
        return Readiness(False, seen.refusal_reason, "; ".join(map(str, seen.refusal)), permanent=True)
    if seen.conflicts:
        return Readiness(False, REASON_CHILD_CONFLICT, "; ".join(map(str, seen.conflicts)), permanent=True)
    if seen.write_failure is not None and seen.write_failure.permanent:
        return seen.write_failure
    for dependency in (seen.node_pools, seen.identity):
        if not dependency.ready:
            return dependency
    if ray.state in {RayState.READY, RayState.SUCCEEDED}:
        return None
    return Readiness(False, ray.reason, ray.message, permanent=ray.permanent)


def _with_preempted_attempt(ray: RayObservation, disruptions: DisruptionsStatus | None) -> RayObservation:
    """A RayJob attempt that failed (for good, or retried under backoffLimit) while one of its worker pods was
    preempted says so: the application may well be fine. A preemption counts for the attempt when it came at or
    after the attempt's start (KubeRay sets status.startTime anew for each attempt) and not after its end."""
    last = disruptions.last_preemption if disruptions is not None else None
    failed = ray.state is RayState.FAILED or ray.reason == "RayJobRetrying"
    if ray.job is None or last is None or not failed:
        return ray
    when, start, end = (parse_rfc3339(last.time), parse_rfc3339(ray.job.get("startTime")),
                        parse_rfc3339(ray.job.get("endTime")))  # fmt: skip
    if when is None or (start is not None and when < start) or (end is not None and when > end):
        return ray
    attempt = int(ray.job.get("attempts") or 0) or 1
    what = "by a higher-priority pod" if last.reason == "PreemptionByScheduler" else "spot"
    where = f" on node {last.node}" if last.node else ""
    note = (f"attempt {attempt} was preempted ({what}): worker pod {last.pod} of group {last.group or '?'}{where}"
            f" ({last.reason}) at {last.time}")  # fmt: skip
    job = {**ray.job, "message": f"{note}; KubeRay: {ray.job['message']}" if ray.job.get("message") else note}
    return dataclasses.replace(ray, message=f"{note}; KubeRay: {ray.message}" if ray.message else note, job=job)


def _waiting_for_quota(seen: Observation, ray: RayObservation) -> RayObservation:
    """A queued Ray object Kueue holds suspended is waiting for quota, not suspended: Progressing for Argo CD
    (Reconciling True, reason WaitingForQuota), never Suspended (settled) nor Stalled. KubeRay itself reports the
    held object as suspended (RayJob deployment status Suspended, RayCluster state suspended)."""
    held = seen.queue is not None and seen.queue_held and not (seen.refusal or seen.deleting or seen.suspended)
    if not held or ray.state in {RayState.ABSENT, RayState.SUCCEEDED, RayState.FAILED}:
        return ray
    message = (f"waiting for quota in Kueue queue {seen.queue!r}: Kueue holds the {seen.ray_kind} suspended until"
               " its ClusterQueue admits it (kubectl get workloads.kueue.x-k8s.io shows its place)")  # fmt: skip
    return dataclasses.replace(ray, state=RayState.PROVISIONING, reason=REASON_WAITING_FOR_QUOTA, message=message,
                               progressing=False, permanent=False)  # fmt: skip


def _queue_condition(seen: Observation, ray: RayObservation, cond: "ConditionFactory") -> list[Condition]:
    """QueueAdmitted, for a queued workload: Kueue's admission as the Ray object shows it."""
    if seen.queue is None or seen.refusal:
        return []
    if ray.reason == REASON_WAITING_FOR_QUOTA:
        return [cond(CONDITION_QUEUE_ADMITTED, False, REASON_WAITING_FOR_QUOTA, ray.message)]
    if ray.state is RayState.ABSENT:
        absent = f"the {seen.ray_kind} is not created yet; it will wait in Kueue queue {seen.queue!r}"
        return [cond(CONDITION_QUEUE_ADMITTED, False, REASON_WAITING_FOR_QUOTA, absent)]
    return [cond(CONDITION_QUEUE_ADMITTED, True, REASON_QUEUE_ADMITTED,
                 f"Kueue admitted the {seen.ray_kind} from queue {seen.queue!r}")]  # fmt: skip


def _suspended_why(seen: Observation, idle: IdleStatus | None) -> tuple[str, str]:
    """Ready's reason while suspended: the user's spec.suspend, else the operator's suspension (IdleTimeout or
    RuntimeLimit)."""
    if idle is not None and idle.suspended_at is not None and not seen.suspended_by_user:
        return limit_reason(idle), describe_idle(idle, service=seen.ray_kind == "RayService")
    return REASON_SUSPENDED, "the workload is suspended"


def _withdrawn(seen: Observation, ray: RayObservation, idle: IdleStatus | None) -> RayObservation:
    """A Service whose RayService the operator deleted at the runtime limit: its absence is the suspension, not a
    RayService still to be created (RayObjectMissing)."""
    suspended = seen.suspended and not seen.suspended_by_user and idle is not None and idle.suspended_at is not None
    if seen.ray_kind != "RayService" or ray.state is not RayState.ABSENT or not suspended or seen.refusal:
        return ray
    assert idle is not None
    return RayObservation(RayState.ABSENT, limit_reason(idle), describe_idle(idle, service=True))


def compute_status(seen: Observation, previous: MLWorkloadStatus | None, now: datetime.datetime) -> MLWorkloadStatus:
    """The status to write. Transition times are kept for conditions whose status did not change."""
    stamp = rfc3339(now)
    before = {c.type: c for c in previous.conditions} if previous else {}
    if seen.ray is not None:
        ray = seen.ray
    elif seen.deleting:
        ray = RayObservation(RayState.ABSENT, REASON_DELETING, "the workload is being deleted")
    else:
        ray = RayObservation(RayState.ABSENT, "NotStarted", "waiting for admission")
    disruptions = seen.disruptions if seen.disruptions is not None else previous.disruptions if previous else None
    ray = _waiting_for_quota(seen, _with_preempted_attempt(ray, disruptions))
    idle = seen.idle if seen.idle_known else previous.idle if previous else None
    ray = _withdrawn(seen, ray, idle)
    blocker = _blocker(seen, ray)
    suspended = (seen.suspended or ray.state is RayState.SUSPENDED) and not seen.refusal
    ready = blocker is None and not suspended and not seen.deleting
    stalled = blocker is not None and blocker.permanent
    settled = ready or stalled or suspended or ray.state in {RayState.SUCCEEDED, RayState.FAILED}
    # A write that will be retried keeps the operator at work, and says so, without taking Ready from a
    # workload that runs: a 409 or a 503 must not make Argo CD flip a healthy service to Progressing.
    retrying = seen.write_failure if seen.write_failure is not None and not seen.write_failure.permanent else None
    # Short of workers since a preemption: at work again (Ray replaces them), whatever else is going on, unless a
    # person must act first; Ready stays as it is.
    recovering = seen.recovering if not (seen.deleting or suspended or (blocker and blocker.permanent)) else None
    reconciling = (not settled) or ray.progressing or retrying is not None or recovering is not None

    cond = ConditionFactory(seen.generation, before, stamp)
    if ready:
        ready_why = (ray.reason, ray.message)
    elif suspended:
        ready_why = _suspended_why(seen, idle)
    elif seen.deleting:
        ready_why = (REASON_DELETING, "the workload is being deleted")
    else:
        assert blocker is not None
        ready_why = (blocker.reason, blocker.message)
    if not reconciling:
        reconciling_why = (REASON_UP_TO_DATE, "")
    elif retrying is not None:
        reconciling_why = (retrying.reason, retrying.message)
    elif recovering is not None:
        reconciling_why = (recovering.reason, recovering.message)
    elif blocker is not None:
        reconciling_why = (blocker.reason, blocker.message)
    else:  # ready, with an upgrade under way
        reconciling_why = (ray.reason, ray.message)
    stalled_why = (blocker.reason, blocker.message) if stalled and blocker else (REASON_UP_TO_DATE, "")
    refusal = "; ".join(map(str, seen.refusal))
    conditions = [
        cond(CONDITION_READY, ready, *ready_why),
        cond(CONDITION_RECONCILING, reconciling, *reconciling_why),
        cond(CONDITION_STALLED, stalled, *stalled_why),
        cond(CONDITION_POLICY_ADMITTED, not seen.refusal, seen.refusal_reason if seen.refusal else REASON_ALLOWED,
             refusal or "admitted by policy"),
        cond(CONDITION_NODE_POOLS_READY, seen.node_pools.ready, seen.node_pools.reason, seen.node_pools.message),
        cond(CONDITION_IDENTITY_READY, seen.identity.ready, seen.identity.reason, seen.identity.message),
        cond(CONDITION_RAY_READY, ray.state in {RayState.READY, RayState.SUCCEEDED}, ray.reason, ray.message),
        *_queue_condition(seen, ray, cond),
        *seen.extra_conditions,
    ]  # fmt: skip
    for kind, readiness in ((CONDITION_ENDPOINTS_READY, seen.endpoints),
                            (CONDITION_NETWORK_POLICIES_ENFORCED, seen.network_policies)):  # fmt: skip
        if readiness is not None:
            conditions.append(cond(kind, readiness.ready, readiness.reason, readiness.message))
    if seen.degraded:
        conditions.append(cond(CONDITION_DEGRADED, True, REASON_NODE_POOL_DEGRADED, seen.degraded))
    return MLWorkloadStatus(
        observed_generation=seen.generation,
        phase=_phase(seen, ray, ready),
        conditions=conditions,
        ray=RayObjectStatus(kind=seen.ray_kind, name=seen.ray_name, state=ray.kuberay_state, workers=ray.workers)
        if ray.state is not RayState.ABSENT
        else None,
        node_pools=list(seen.pools),
        iam_bindings=list(seen.bindings),
        gpus=seen.gpus,
        dashboard_url=seen.dashboard_url,
        serve_url=seen.serve_url,
        job=JobRunStatus.model_validate(ray.job) if ray.job is not None else None,
        disruptions=disruptions,
        idle=idle,
    )
