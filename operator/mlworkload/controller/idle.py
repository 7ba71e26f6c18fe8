"""When a Cluster is idle, and when it has been idle long enough to be suspended: pure functions.

Idle, as the operator defines and observes it (docs/users/workload-types.md):

- the workload is of type Cluster, with the Ray autoscaler on (`spec.autoscaling.enabled`): the autoscaler is
  what removes workers once Ray has no task or actor for them (after its own `idleTimeoutSeconds`), so workers
  back at their floor mean Ray asked for nothing more. Without the autoscaler the workers never move: nothing
  can be observed, and the cluster is never suspended for idleness;
- the RayCluster is ready (its head runs; KubeRay's conditions), not suspended;
- KubeRay's `status.desiredWorkerReplicas` is at most the sum of the worker groups' `minReplicas`, and
  `readyWorkerReplicas` at most that too (no worker above the floor is wanted or still running);

and all of it without a break for the whole window (`spec.lifecycle.idleSeconds`, by default and at most the
policy's `lifecycle.maxClusterIdleSeconds`). Any other observation ends the window; the next idle one opens a new
one. What is not seen: a driver (a notebook, `ray.init()` through Ray Client) connected but holding no
resources, Serve traffic to deployments that fit on the floor, Ray jobs that need no more than the floor: Ray's
own APIs are not read (the operator needs no new access for this, and no route to the head's dashboard).

The runtime limit (the policy's `lifecycle.maxClusterRuntimeSeconds`, types Cluster and Service) counts from the
later of the workload's creation and its last resume from the operator's suspension, busy or idle, and suspends it
(reason RuntimeLimit) with the same resume gesture (any spec change): a Cluster the same way as an idle one, a
Service by deleting its RayService (KubeRay's RayService has no suspend; builders/desired.py leaves it out and
apply.delete_stale prunes it), so its Serve endpoints are down until a resume creates a new one. Not for a queued
Cluster (Kueue owns its spec.suspend), like the idle window, which stays Cluster-only. `status.idle` holds the
earlier of the two deadlines and which one it is, so that one timer wakes for either.

Everything comes from the RayCluster as the watch cache holds it (observe.py keeps its worker counts) and the
window from the workload's status (`status.idle`), so a restart resumes it, and it is written only when it
changes: zero writes while a window runs.
"""

import datetime
from dataclasses import dataclass
from typing import Any

from mlworkload.api.workload import IdleStatus, MLWorkload, WorkloadType
from mlworkload.constants import REASON_IDLE_TIMEOUT, REASON_RUNTIME_LIMIT
from mlworkload.controller.raystatus import RayState, observe_ray_cluster
from mlworkload.controller.timestamps import parse_rfc3339
from mlworkload.policy.resolve import ResolvedWorkload


def rfc3339(now: datetime.datetime) -> str:
    return now.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def floor_of(workload: MLWorkload) -> int:
    """Workers the autoscaler keeps however idle Ray is: the sum of the groups' minReplicas."""
    return sum(group.effective_min_replicas for group in workload.spec.worker_groups)


def runtime_limit(resolved: ResolvedWorkload) -> int | None:
    """The policy's lifecycle.maxClusterRuntimeSeconds, where the operator can enforce it: type Cluster (its
    RayCluster suspended) or Service (its RayService deleted), not queued (Kueue owns the Ray object's
    spec.suspend). None: not enforced (type Job: its own job.activeDeadlineSeconds)."""
    kind = resolved.workload.spec.type
    if kind not in {WorkloadType.CLUSTER, WorkloadType.SERVICE} or resolved.queue is not None:
        return None
    return resolved.policy.lifecycle.max_cluster_runtime_seconds


def is_idle(ray_cluster: dict[str, Any] | None, floor: int) -> bool:
    """Whether the RayCluster, as last seen, is idle: ready, and no worker wanted or ready above the floor."""
    if ray_cluster is None:
        return False
    status = ray_cluster.get("status") or {}
    if observe_ray_cluster(status).state is not RayState.READY or "desiredWorkerReplicas" not in status:
        return False
    desired = int(status.get("desiredWorkerReplicas") or 0)
    ready = int(status.get("readyWorkerReplicas") or 0)
    return desired <= floor and ready <= floor


@dataclass(frozen=True, slots=True)
class IdleDecision:
    record: IdleStatus | None  # what status.idle says next
    suspend: bool  # the operator holds the RayCluster suspended
    newly_suspended: bool = False  # this decision suspends it (an Event follows the status write)

    @property
    def reason(self) -> str:
        """Why the record's deadline suspends (or suspended) it: IdleTimeout or RuntimeLimit."""
        return limit_reason(self.record)


def limit_reason(record: IdleStatus | None) -> str:
    """Which limit a record's deadline is; records written before the runtime limit carry none: idleness."""
    return REASON_RUNTIME_LIMIT if record is not None and record.reason == REASON_RUNTIME_LIMIT else REASON_IDLE_TIMEOUT


def decide(
    previous: IdleStatus | None,
    *,
    window: int | None,
    idle: bool,
    generation: int,
    now: datetime.datetime,
    runtime: int | None = None,
    created: datetime.datetime | None = None,
) -> IdleDecision:
    """The idle record after this observation.

    - Suspended by the operator before (idle or runtime): it stays so while the spec generation is the one it was
      suspended at; any spec change (the resume gesture) clears the suspension and the idle window, and restarts
      the runtime count (`resumedAt`); a new window opens once it is idle again.
    - The idle window (`window`, None: none): no window while not idle (it restarts at the next idle
      observation); idle, the window opened at the first idle observation is kept (its deadline follows a changed
      limit).
    - The runtime limit (`runtime`, the policy's lifecycle.maxClusterRuntimeSeconds, None: none): counted from
      the later of `created` (metadata.creationTimestamp) and the last resume, busy or idle.
    - The record holds the earlier of the two deadlines and which one it is (a tie: idleness); no deadline, no
      record. Past it, the suspension, for that reason.
    """
    resumed = parse_rfc3339(previous.resumed_at) if previous is not None else None
    if previous is not None and previous.suspended_at is not None:
        if previous.suspended_generation == generation:
            return IdleDecision(previous, suspend=True)
        previous, resumed = None, now  # resumed by a spec change
    since = None
    if window is not None and idle:
        since = parse_rfc3339(previous.since) if previous is not None else None
        if since is None or since > now:
            since = now
    deadlines = []
    if since is not None and window is not None:
        deadlines.append((since + datetime.timedelta(seconds=window), REASON_IDLE_TIMEOUT))
    start = max((when for when in (created, resumed) if when is not None), default=None)
    if runtime is not None and start is not None:
        deadlines.append((start + datetime.timedelta(seconds=runtime), REASON_RUNTIME_LIMIT))
    if not deadlines:
        return IdleDecision(None, suspend=False)
    deadline, reason = min(deadlines, key=lambda item: item[0])  # min keeps the first of equals: idleness
    record = IdleStatus(
        since=rfc3339(since) if since is not None else None,
        deadline=rfc3339(deadline),
        reason=reason,
        # Only while a runtime limit counts from it: without one, a resumed Cluster keeps no record.
        resumed_at=rfc3339(resumed) if resumed is not None and runtime is not None else None,
    )
    if now < deadline:
        return IdleDecision(record, suspend=False)
    suspended = record.model_copy(update={"suspended_at": rfc3339(now), "suspended_generation": generation})
    return IdleDecision(suspended, suspend=True, newly_suspended=True)


_RESUME = (
    "; any spec change resumes it,"
    ' e.g. kubectl patch mlw NAME --type merge -p \'{"spec":{"suspend":true}}\' then'
    ' \'{"spec":{"suspend":false}}\''
)


def describe(record: IdleStatus, *, service: bool = False) -> str:
    """The Ready condition's and the Event's message for a Cluster the operator suspended, or a Service whose
    RayService it deleted at the runtime limit (`service`)."""
    if service:
        start = f"its last resume at {record.resumed_at}" if record.resumed_at else "its creation"
        return (
            f"suspended at {record.suspended_at}: it ran the policy's lifecycle.maxClusterRuntimeSeconds (from"
            f" {start}, until {record.deadline}), so its RayService was deleted: the Serve endpoints are down until"
            " a spec change resumes it (a new RayService, started from scratch), e.g. kubectl edit mlw NAME"
        )
    if limit_reason(record) == REASON_RUNTIME_LIMIT:
        start = f"its last resume at {record.resumed_at}" if record.resumed_at else "its creation"
        return (
            f"suspended at {record.suspended_at}: it ran the policy's lifecycle.maxClusterRuntimeSeconds (from"
            f" {start}, until {record.deadline})" + _RESUME
        )
    return (
        f"suspended at {record.suspended_at}: idle since {record.since} (every worker group at its minReplicas,"
        " spec.lifecycle.idleSeconds or the policy's lifecycle.maxClusterIdleSeconds)" + _RESUME
    )


def seconds_until(deadline: str | None, now: datetime.datetime) -> float | None:
    """Seconds until an open window's deadline (0 when due); None without one."""
    when = parse_rfc3339(deadline)
    return None if when is None else max(0.0, (when - now).total_seconds())
