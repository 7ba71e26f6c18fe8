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

Everything comes from the RayCluster as the watch cache holds it (observe.py keeps its worker counts) and the
window from the workload's status (`status.idle`), so a restart resumes it, and it is written only when it
changes: zero writes while a window runs.
"""

import datetime
from dataclasses import dataclass
from typing import Any

from mlworkload.api.workload import IdleStatus, MLWorkload
from mlworkload.controller.raystatus import RayState, observe_ray_cluster


def rfc3339(now: datetime.datetime) -> str:
    return now.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(value: str | None) -> datetime.datetime | None:
    if not value:
        return None
    try:
        return datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def floor_of(workload: MLWorkload) -> int:
    """Workers the autoscaler keeps however idle Ray is: the sum of the groups' minReplicas."""
    return sum(group.effective_min_replicas for group in workload.spec.worker_groups)


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


def decide(
    previous: IdleStatus | None, *, window: int | None, idle: bool, generation: int, now: datetime.datetime
) -> IdleDecision:
    """The idle record after this observation.

    - Suspended for idleness before: it stays so while the spec generation is the one it was suspended at; any
      spec change (the resume gesture) clears the record, and a new window opens once it is idle again.
    - No window (no limit, or not observable): no record.
    - Not idle now: no record (the window restarts at the next idle observation).
    - Idle: the window opened at the first idle observation is kept (its deadline follows a changed limit); past
      the deadline, the suspension.
    """
    if previous is not None and previous.suspended_at is not None:
        if previous.suspended_generation == generation:
            return IdleDecision(previous, suspend=True)
        previous = None  # resumed by a spec change
    if window is None or not idle:
        return IdleDecision(None, suspend=False)
    since = parse_time(previous.since) if previous is not None else None
    if since is None or since > now:
        since = now
    deadline = since + datetime.timedelta(seconds=window)
    record = IdleStatus(since=rfc3339(since), deadline=rfc3339(deadline))
    if now < deadline:
        return IdleDecision(record, suspend=False)
    suspended = record.model_copy(update={"suspended_at": rfc3339(now), "suspended_generation": generation})
    return IdleDecision(suspended, suspend=True, newly_suspended=True)


def describe(record: IdleStatus) -> str:
    """The Ready condition's and the Event's message for a Cluster suspended for idleness."""
    return (
        f"suspended at {record.suspended_at}: idle since {record.since} (every worker group at its minReplicas,"
        " spec.lifecycle.idleSeconds or the policy's lifecycle.maxClusterIdleSeconds); any spec change resumes it,"
        ' e.g. kubectl patch mlw NAME --type merge -p \'{"spec":{"suspend":true}}\' then'
        ' \'{"spec":{"suspend":false}}\''
    )


def seconds_until(deadline: str | None, now: datetime.datetime) -> float | None:
    """Seconds until an open window's deadline (0 when due); None without one."""
    when = parse_time(deadline)
    return None if when is None else max(0.0, (when - now).total_seconds())
