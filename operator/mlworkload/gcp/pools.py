"""Node pools shared by workloads: one operation per cluster at a time, kept in step with the policy, released
after a grace period, and never deleted while any installation's workloads use them.

GKE runs one node-pool operation per cluster at a time. The coordinator therefore keeps, per
cluster, a lock and the operation it is waiting for: a workload that needs a pool being created
waits for that operation (N workloads of one shape make one create), and a workload that needs
another pool, a settings update or a claim label queues behind it. When GKE answers "busy" naming
the operation that holds the cluster (one started by GKE, a person, or another installation), that
operation is polled and the next call goes as soon as it is done. Nothing here blocks on an
operation: each `ensure` polls at most once per poll interval and reports where the pool stands,
and the caller asks again later.

Who may delete what (see docs/platform/node-pools.md):

- A pool this installation creates carries `mlworkload-installation: <id>`; only that installation
  deletes it, after its own workloads left it for the grace period, and only while it carries no
  other installation's claim label.
- An installation that uses a pool another one created adds its claim label
  (`mlworkload-claim-<hash>`, UpdateNodePool with the pool's etag) and removes it after its own
  grace period without users.
- A pool made before installations were labelled (managed-by only) is adopted by the first
  installation whose workloads use it (it adds its installation label); one nobody here uses is
  never deleted.
"""

import asyncio
import datetime
import functools
import logging
import re
import time
from collections.abc import Awaitable, Callable, Collection, Mapping
from dataclasses import dataclass, field, replace
from typing import Final, ParamSpec, TypeVar

from mlworkload.api.workload import NodePoolStatus
from mlworkload.constants import GCP_LABEL_INSTALLATION
from mlworkload.gcp.errors import FailureKind, GcpError, classify_message
from mlworkload.gcp.labels import policy_labels, reserved_label
from mlworkload.gcp.nodepools import NodePools, OperationInfo, PoolInfo, claim_label
from mlworkload.gcp.plan import NodePoolPlan
from mlworkload.gcp.retry import Backoff

logger = logging.getLogger(__name__)

_P = ParamSpec("_P")
_T = TypeVar("_T")

PoolKey = tuple[str, str]  # (cluster path, pool name)
CREATE: Final = "CREATE_NODE_POOL"
DELETE: Final = "DELETE_NODE_POOL"
# The operation a busy answer names: "Operation operation-... is currently ..." or "... incompatible operation
# operation-...".
_HOLDER: Final = re.compile(r"\boperation-[A-Za-z0-9-]*[A-Za-z0-9]")


@dataclass(frozen=True, slots=True)
class PoolReport:
    """Where one pool stands, for the workload's status."""

    name: str
    state: str  # Running, Provisioning, Queued, Deleting, Failed
    operation: str = ""
    message: str = ""
    failure: GcpError | None = None
    attempts: int = 0  # failed creates in the current series
    next_attempt: str | None = None  # RFC 3339
    degraded: str = ""  # GKE's message while the pool is RUNNING_WITH_ERROR (usable, but not all is well)
    note: str = ""  # what is being done to a running pool, or why a wanted setting is kept

    @property
    def ready(self) -> bool:
        return self.state == "Running"


@dataclass(frozen=True, slots=True)
class PoolTarget:
    """The settings a pool should have; None: keep what the pool has.

    `labels` are the policy's GCP labels (no reserved key): on a pool this installation created, every other
    non-reserved label goes, except the `kept_labels` its workloads disagree on. `service_account` and
    `secure_boot` are GKE's to set at creation only: a pool that differs is reported, not changed.
    """

    max_nodes: int
    location_policy: str | None = None
    locations: tuple[str, ...] | None = None
    note: str = ""  # why a setting is kept (claimants disagree)
    labels: Mapping[str, str] | None = None
    kept_labels: frozenset[str] = frozenset()
    image_type: str | None = None
    image_streaming: bool | None = None
    disk_type: str | None = None
    disk_size_gb: int | None = None
    service_account: str | None = None
    secure_boot: bool | None = None

    @classmethod
    def of(cls, plan: NodePoolPlan) -> "PoolTarget":
        return cls(
            plan.max_nodes,
            plan.location_policy,
            tuple(plan.locations) or None,
            labels=policy_labels(plan.labels),
            image_type=plan.image_type,
            image_streaming=plan.image_streaming,
            disk_type=plan.disk_type,
            disk_size_gb=plan.disk_size_gb,
            service_account=plan.service_account,
            secure_boot=plan.secure_boot,
        )


Update = tuple[Callable[[], OperationInfo], str]  # the call, and what it does (for the message)


def wanted_labels(info: PoolInfo, target: PoolTarget) -> dict[str, str] | None:
    """The pool's labels with the policy's in place of its other non-reserved ones; None when nothing changes.

    Reserved labels (ownership, claims, GKE's `goog-` ones) and those its workloads disagree on stay as they are.
    """
    if target.labels is None:
        return None
    kept = {key: value for key, value in info.labels.items() if reserved_label(key) or key in target.kept_labels}
    wanted = {**{k: v for k, v in target.labels.items() if k not in target.kept_labels}, **kept}
    return wanted if wanted != dict(info.labels) else None


def settings_update(api: NodePools, cluster: str, info: PoolInfo, target: PoolTarget) -> Update | None:
    """The first setting GKE changes in place that differs from the target (one operation at a time), or None.

    Image streaming is turned off before the image type changes and on after it: GKE streams images to
    COS_CONTAINERD nodes only. Image and disk changes make GKE recreate the nodes (a surge upgrade).
    """
    update = functools.partial(api.update, cluster, info)
    labels = wanted_labels(info, target)
    if labels is not None:
        changed = sorted(key for key in {*labels, *info.labels} if labels.get(key) != info.labels.get(key))
        return functools.partial(update, resource_labels=labels), f"setting its GCP labels ({', '.join(changed)})"
    if target.image_streaming is False and info.image_streaming:
        return functools.partial(update, image_streaming=False), "turning image streaming off"
    if target.image_type is not None and target.image_type != info.image_type:
        return functools.partial(update, image_type=target.image_type), f"changing its image to {target.image_type}"
    if target.image_streaming and not info.image_streaming and info.image_type in ("", "COS_CONTAINERD"):
        return functools.partial(update, image_streaming=True), "turning image streaming on"
    disk_type = target.disk_type if target.disk_type not in (None, info.disk_type) else None
    disk_size = target.disk_size_gb if target.disk_size_gb not in (None, info.disk_size_gb) else None
    if disk_type is not None or disk_size is not None:
        what = " ".join(part for part in (disk_type, f"{disk_size} GB" if disk_size else None) if part)
        return functools.partial(update, disk_type=disk_type, disk_size_gb=disk_size), f"changing its disks to {what}"
    return None


def creation_drift(info: PoolInfo, target: PoolTarget) -> str:
    """What the pool was created with that the policy now says otherwise, and GKE cannot change in place."""
    kept = []
    if target.service_account is not None and info.service_account != target.service_account:
        running = "the Compute Engine default" if info.service_account in ("", "default") else info.service_account
        kept.append(f"its nodes run as {running} service account, not {target.service_account}")
    if target.secure_boot is not None and info.secure_boot != target.secure_boot:
        kept.append(f"Secure Boot is {'on' if info.secure_boot else 'off'}")
    if not kept:
        return ""
    return (f"{' and '.join(kept)}: GKE sets these when it creates a pool, so the policy's apply when this one is"
            " created again (after it is released, or deleted by hand)")  # fmt: skip


@dataclass
class _Cluster:
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    active: OperationInfo | None = None  # the operation the operator waits for on this cluster
    last_poll: float = float("-inf")
    blocking: str = ""  # an operation someone else runs on the cluster, named by GKE's busy answer
    blocking_poll: float = float("-inf")


def _failure_of(text: str) -> GcpError:
    """`Reason: message` as recorded in status, back to a GcpError (an unknown reason is a plain failure)."""
    reason, _, message = text.partition(": ")
    try:
        return GcpError(FailureKind(reason), message)
    except ValueError:
        return classify_message(text)


def _rfc3339(stamp: float) -> str:
    return datetime.datetime.fromtimestamp(stamp, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse_rfc3339(text: str) -> float | None:
    try:
        return datetime.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


class PoolCoordinator:
    def __init__(
        self,
        api: NodePools,
        *,
        backoff: Backoff,
        poll_seconds: float,
        installation: str,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._api = api
        self._backoff = backoff
        self._clock = backoff.clock
        self._wall = wall_clock  # for the next attempt time shown in status; `clock` may be monotonic
        self._poll_seconds = poll_seconds
        self.installation = installation
        self._clusters: dict[str, _Cluster] = {}
        self._failures: dict[PoolKey, GcpError] = {}  # why the last create failed, until one succeeds
        self._create_failed: set[PoolKey] = set()  # pools whose own create failed: safe to replace
        self._adopted: set[str] = set()  # operations read back from status after a restart
        self._unclaimed_since: dict[PoolKey, float] = {}
        self._described: dict[PoolKey, tuple[PoolInfo | None, float]] = {}  # GKE's answers, briefly
        self._seen: set[PoolKey] = set()  # pools seen usable: their disappearance is news
        self._lost: set[PoolKey] = set()  # seen, claimed, and now gone or deleted by someone else

    async def _describe(self, cluster: str, name: str) -> PoolInfo | None:
        """The pool as GKE last described it, re-read at most once per poll interval for all workloads."""
        key = (cluster, name)
        cached = self._described.get(key)
        if cached is not None and self._clock() - cached[1] < self._poll_seconds:
            return cached[0]
        info = await self._run(self._api.get, cluster, name)
        self._described[key] = (info, self._clock())
        return info

    def _forget(self, cluster: str, name: str) -> None:
        self._described.pop((cluster, name), None)

    @property
    def clusters(self) -> set[str]:
        return set(self._clusters)

    def _cluster(self, cluster: str) -> _Cluster:
        return self._clusters.setdefault(cluster, _Cluster())

    async def _run(self, call: Callable[_P, _T], *args: _P.args, **kwargs: _P.kwargs) -> _T:
        return await asyncio.to_thread(call, *args, **kwargs)

    def take_lost(self) -> set[PoolKey]:
        """Claimed pools found gone (or being deleted by someone else) since the last call."""
        lost, self._lost = self._lost, set()
        return lost

    # --- operations ---------------------------------------------------------------------------

    def _finished(self, cluster: str, operation: OperationInfo) -> None:
        key = (cluster, operation.pool)
        if operation.error is None:
            if operation.kind == CREATE:
                self._failures.pop(key, None)
                self._create_failed.discard(key)
                self._backoff.succeeded(key)
            logger.info("GKE operation %s on node pool %s finished", operation.name, operation.pool)
            return
        logger.warning("GKE operation %s on node pool %s failed: %s", operation.name, operation.pool, operation.error)
        if operation.kind == CREATE:
            self._failures[key] = operation.error
            self._create_failed.add(key)
            self._backoff.failed(key)
        elif operation.kind != DELETE:  # a settings or label update: not again before the backoff
            self._backoff.failed(("update", key))

    async def _poll(self, cluster: str, state: _Cluster) -> None:
        """Check the awaited operations, at most once per poll interval for all workloads together."""
        await self._poll_blocking(cluster, state)
        if state.active is None or self._clock() - state.last_poll < self._poll_seconds:
            return
        state.last_poll = self._clock()
        try:
            operation = await self._run(self._api.operation, cluster, state.active.name, state.active.pool)
        except GcpError as error:
            if error.kind is not FailureKind.NOT_FOUND:
                raise
            logger.warning("GKE operation %s is gone; reading the pool instead", state.active.name)
            self._forget(cluster, state.active.pool)
            state.active = None
            return
        if operation.done:
            state.active = None
            self._forget(cluster, operation.pool)
            self._finished(cluster, operation)

    async def _poll_blocking(self, cluster: str, state: _Cluster) -> None:
        """The operation GKE said holds the cluster: go as soon as it is done, not after a blind backoff."""
        if not state.blocking or self._clock() - state.blocking_poll < self._poll_seconds:
            return
        state.blocking_poll = self._clock()
        try:
            operation: OperationInfo | None = await self._run(self._api.operation, cluster, state.blocking, "")
        except GcpError as error:
            if error.kind is not FailureKind.NOT_FOUND:
                raise
            operation = None
        if operation is None or operation.done:
            logger.info("GKE operation %s no longer holds cluster %s", state.blocking, cluster)
            state.blocking = ""
            self._backoff.succeeded(("busy", cluster))

    async def _adopt(self, cluster: str, state: _Cluster, name: str, pool: str) -> None:
        """Resume an operation a previous operator process started (its name is in the workload status)."""
        if not name or name in self._adopted or (state.active is not None and state.active.name == name):
            return
        self._adopted.add(name)
        try:
            operation = await self._run(self._api.operation, cluster, name, pool)
        except GcpError as error:
            if error.kind is FailureKind.NOT_FOUND:
                return  # operations expire; the pool's own state tells the rest
            raise
        if not operation.done and state.active is None:
            logger.info("resuming GKE operation %s on node pool %s", name, pool)
            state.active, state.last_poll = operation, self._clock()
        elif operation.done:
            self._finished(cluster, operation)

    def _restore(self, key: PoolKey, recorded: NodePoolStatus) -> None:
        """A failed-create series recorded in status before a restart: same count, same next attempt."""
        if not recorded.attempts or key in self._failures or not recorded.last_failure:
            return
        self._failures[key] = _failure_of(recorded.last_failure)
        when = _parse_rfc3339(recorded.next_attempt_time or "")
        delay = when - self._wall() if when is not None else 0.0
        self._backoff.restore(key, recorded.attempts, delay)

    # --- ensure -------------------------------------------------------------------------------

    async def ensure(
        self,
        plan: NodePoolPlan,
        recorded: NodePoolStatus | None = None,
        *,
        target: PoolTarget | None = None,
        replaceable: Callable[[], Awaitable[bool]] | None = None,
    ) -> PoolReport:
        """Where the pool stands now, after starting whatever it needs next (never waits for GKE).

        `recorded`: what the workload's status says of this pool (an operation to resume, a failed-create
        series); `target`: the settings to keep the pool at (default: the plan's); `replaceable`: asked before
        a pool left in ERROR by a create recorded only in status is deleted to be created again.
        """
        cluster, key = plan.cluster_path, (plan.cluster_path, plan.name)
        state = self._cluster(cluster)
        async with state.lock:
            try:
                await self._poll(cluster, state)
                if recorded is not None:
                    self._restore(key, recorded)
                    await self._adopt(cluster, state, recorded.operation, plan.name)
                report = await self._ensure(plan, state, target or PoolTarget.of(plan), replaceable)
            except GcpError as error:
                report = PoolReport(plan.name, "Failed", message=str(error), failure=error)
            return self._in_series(key, report)

    def _in_series(self, key: PoolKey, report: PoolReport) -> PoolReport:
        """A report during a series of failed creates keeps the series' reason, so conditions do not flip
        between retries; the message counts the attempts and says when the next one is due."""
        failure = self._failures.get(key)
        if failure is None or report.ready:
            return report
        attempts = self._backoff.attempts(key)
        due = self._backoff.next_attempt(key)
        when = _rfc3339(self._wall() + max(due - self._clock(), 0.0)) if due is not None else None
        if report.failure is None:  # the next attempt is under way (or queued): still the same series
            message = f"{failure.message} ({attempts} failed attempt(s); attempt {attempts + 1}: {report.message})"
            return replace(report, failure=failure, message=message, attempts=attempts, next_attempt=when)
        next_at = f"next attempt at {when or 'once due'}"
        if report.failure is failure:
            message = f"{failure.message} (attempt {attempts} failed; {next_at})"
            return replace(report, message=message, attempts=attempts, next_attempt=when)
        if not report.failure.stalls:  # a passing 503 or the like does not change what the series is about
            message = f"{failure.message} (attempt {attempts} failed; {next_at}; meanwhile {report.failure})"
            return replace(report, failure=failure, message=message, attempts=attempts, next_attempt=when)
        return replace(report, attempts=attempts, next_attempt=when)

    async def _ensure(
        self,
        plan: NodePoolPlan,
        state: _Cluster,
        target: PoolTarget,
        replaceable: Callable[[], Awaitable[bool]] | None,
    ) -> PoolReport:
        cluster, key = plan.cluster_path, (plan.cluster_path, plan.name)
        self._unclaimed_since.pop(key, None)
        active = state.active
        if active is not None and active.pool == plan.name and active.kind in (CREATE, DELETE):
            verb = "Deleting" if active.kind == DELETE else "Provisioning"
            return PoolReport(plan.name, verb, active.name, f"GKE operation {active.name} is running")
        info = await self._describe(cluster, plan.name)
        if info is not None:
            return await self._existing(plan, state, info, target, replaceable)
        if key in self._failures and not self._backoff.due(key):
            failure = self._failures[key]
            return PoolReport(plan.name, "Failed", message=failure.message, failure=failure)
        return await self._create(plan, state)

    async def _existing(
        self,
        plan: NodePoolPlan,
        state: _Cluster,
        info: PoolInfo,
        target: PoolTarget,
        replaceable: Callable[[], Awaitable[bool]] | None,
    ) -> PoolReport:
        key = (plan.cluster_path, plan.name)
        if not info.managed:
            conflict = GcpError(
                FailureKind.INVALID,
                f"node pool {plan.name} exists but was not created by mlworkload (no managed-by label); "
                "rename or delete it",
            )
            return PoolReport(plan.name, "Failed", message=conflict.message, failure=conflict)
        if info.status == "STOPPING":
            message = f"node pool {plan.name} is being deleted; it is created again after"
            return PoolReport(plan.name, "Deleting", message=message)
        if info.usable:
            # Working (RUNNING_WITH_ERROR too: GKE's "partially usable"; the autoscaler retries scale-ups
            # itself): a failed-create series is over, and nothing is deleted to retry it.
            self._failures.pop(key, None)
            self._create_failed.discard(key)
            self._backoff.succeeded(key)
            self._seen.add(key)
            note = await self._maintain(plan, state, info, target)
            operation = state.active.name if state.active is not None and state.active.pool == plan.name else ""
            degraded = (info.message or "GKE reports the pool partially usable") if info.degraded else ""
            message = f"node pool {plan.name} is running" + (f"; {note}" if note else "")
            return PoolReport(plan.name, "Running", operation, message, degraded=degraded, note=note)
        if not info.failed:
            return PoolReport(plan.name, "Provisioning", message=f"node pool {plan.name} is {info.status.lower()}")
        return await self._failed(plan, state, info, replaceable)

    async def _failed(
        self, plan: NodePoolPlan, state: _Cluster, info: PoolInfo, replaceable: Callable[[], Awaitable[bool]] | None
    ) -> PoolReport:
        """A pool in ERROR: replaced only when it is this installation's, nobody else claims it, and it is
        known never to have worked (its create failed, in this process or as recorded in status)."""
        key = (plan.cluster_path, plan.name)
        failure = self._failures.get(key) or classify_message(info.message or info.status)
        report = PoolReport(plan.name, "Failed", message=failure.message, failure=failure)
        ours = info.installation == self.installation and not info.claimed_by_others(self.installation)
        if not ours or not self._backoff.due(key) or state.active is not None or state.blocking:
            return report
        never_worked = key in self._create_failed or (
            key in self._failures and replaceable is not None and await replaceable()
        )
        if not never_worked:  # a pool that once worked may hold other workloads' nodes: report, never replace
            return report
        delete = functools.partial(self._api.delete, plan.cluster_path, plan.name)
        operation = await self._mutate(plan.cluster_path, state, delete)
        self._seen.discard(key)
        return PoolReport(plan.name, "Failed", operation.name if operation else "",
                          f"{failure.message} (replacing the failed pool)", failure)  # fmt: skip

    async def _maintain(self, plan: NodePoolPlan, state: _Cluster, info: PoolInfo, target: PoolTarget) -> str:
        """Labels and settings of a working pool, one update at a time; what is being done, for the message."""
        key = (plan.cluster_path, plan.name)
        ours = info.installation == self.installation
        notes = "; ".join(part for part in (target.note, creation_drift(info, target) if ours else "") if part)
        if state.active is not None or state.blocking or not self._backoff.due(("update", key)):
            return notes  # the pool works meanwhile; the next pass looks again
        cluster, labels = plan.cluster_path, dict(info.labels)
        update: Callable[[], OperationInfo] | None = None
        if not info.installation:  # made before installations: the first installation that uses it adopts it
            labels[GCP_LABEL_INSTALLATION] = self.installation
            update, doing = functools.partial(self._api.update, cluster, info, resource_labels=labels), "adopting it"
        elif not ours:
            # Another installation's pool: its settings are its creator's; ours is a visible claim.
            if claim_label(self.installation) in labels:
                return ""
            labels[claim_label(self.installation)] = self.installation
            update, doing = functools.partial(self._api.update, cluster, info, resource_labels=labels), "claiming it"
        elif info.max_nodes != target.max_nodes or (target.location_policy or info.location_policy) != (
            info.location_policy
        ):
            policy = target.location_policy or info.location_policy or "ANY"
            update = functools.partial(
                self._api.set_autoscaling, cluster, plan.name, max_nodes=target.max_nodes, location_policy=policy
            )
            doing = f"setting autoscaling to at most {target.max_nodes} node(s), location policy {policy}"
        elif target.locations is not None and set(target.locations) != set(info.locations):
            update = functools.partial(self._api.update, cluster, info, locations=target.locations)
            doing = f"moving it to zones {', '.join(target.locations)}"
        elif (change := settings_update(self._api, cluster, info, target)) is not None:
            update, doing = change
        if update is None:
            return notes
        try:
            operation = await self._mutate(cluster, state, update)
        except GcpError as error:
            # A stale etag (someone changed the pool since it was read) is re-read on the next pass; anything
            # else waits for the backoff. Either way the pool keeps working: reported, never failed for it.
            self._forget(cluster, plan.name)
            if error.kind is not FailureKind.STALE:
                self._backoff.failed(("update", key))
            logger.warning("updating node pool %s failed: %s", plan.name, error)
            return "; ".join(part for part in (f"{doing} failed: {error.message}", notes) if part)
        if operation is None:
            return notes
        logger.info("node pool %s: %s (operation %s)", plan.name, doing, operation.name)
        return "; ".join(part for part in (doing, notes) if part)

    async def _create(self, plan: NodePoolPlan, state: _Cluster) -> PoolReport:
        if state.active is not None:
            return PoolReport(plan.name, "Queued", message=f"waiting for GKE operation {state.active.name} on "
                              f"node pool {state.active.pool}: GKE runs one at a time per cluster")  # fmt: skip
        if state.blocking:
            return PoolReport(plan.name, "Queued", message=f"waiting for GKE operation {state.blocking}, which holds "
                              "the cluster: GKE runs one at a time per cluster")  # fmt: skip
        key = (plan.cluster_path, plan.name)
        labelled = plan.model_copy(update={"labels": {**plan.labels, GCP_LABEL_INSTALLATION: self.installation}})
        try:
            operation = await self._mutate(plan.cluster_path, state, functools.partial(self._api.create, labelled))
        except GcpError as error:
            if error.kind is FailureKind.ALREADY_EXISTS:
                self._forget(*key)
                return PoolReport(plan.name, "Provisioning", message=f"node pool {plan.name} is being created")
            previous = self._failures.get(key)
            if previous is None or not previous.stalls or error.stalls:  # a series keeps its reason over a 503
                self._failures[key] = error
            self._backoff.failed(key)
            return PoolReport(plan.name, "Failed", message=error.message, failure=error)
        if operation is None:
            holder = f"GKE operation {state.blocking}" if state.blocking else "another operation"
            return PoolReport(plan.name, "Queued", message=f"the cluster is busy with {holder}; will retry")
        logger.info("creating GKE node pool %s in %s (operation %s)", plan.name, plan.cluster_path, operation.name)
        return PoolReport(plan.name, "Provisioning", operation.name, f"GKE operation {operation.name} is running")

    async def _mutate(self, cluster: str, state: _Cluster, call: Callable[[], OperationInfo]) -> OperationInfo | None:
        """Start one operation; None when the cluster is busy (wait for the operation holding it, else back off)."""
        busy = ("busy", cluster)
        if state.blocking or not self._backoff.due(busy):
            return None
        try:
            operation = await self._run(call)
        except GcpError as error:
            if error.kind is FailureKind.BUSY:
                holder = _HOLDER.search(error.message)
                if holder is not None:
                    state.blocking, state.blocking_poll = holder.group(0), self._clock()
                    logger.info("cluster %s is busy with %s; waiting for it", cluster, state.blocking)
                else:  # "too many operations" names none: exponential backoff with jitter
                    delay = self._backoff.failed(busy)
                    logger.info("cluster %s is busy, retrying in %.0fs: %s", cluster, delay, error.message)
                return None
            raise
        self._backoff.succeeded(busy)
        self._adopted.add(operation.name)  # its name comes back from status: it is ours, not one to adopt
        self._forget(cluster, operation.pool)
        state.active, state.last_poll = operation, self._clock()
        return operation

    # --- release ------------------------------------------------------------------------------

    async def collect(self, cluster: str, claimed: Collection[str], grace_seconds: float) -> list[str]:
        """One pass over the cluster's pools (one ListNodePools).

        Deletes this installation's pools its workloads left `grace_seconds` ago and no other installation
        claims; removes this installation's claim label from other pools it left as long ago; and notes
        claimed pools that vanished or are being deleted by someone else (`take_lost`). Returns the pools
        deleted.
        """
        state = self._cluster(cluster)
        deleted: list[str] = []
        async with state.lock:
            await self._poll(cluster, state)
            pools = await self._run(self._api.list, cluster)
            now = self._clock()
            listed = {info.name: info for info in pools}
            for info in pools:  # the listing is as fresh as a describe: ensure need not ask again this interval
                self._described[(cluster, info.name)] = (info, now)
            self._note_lost(cluster, state, claimed, listed)
            for key in [key for key in self._unclaimed_since if key[0] == cluster and key[1] not in listed]:
                del self._unclaimed_since[key]
            for info in pools:
                if await self._release(cluster, state, info, claimed, grace=grace_seconds, now=now):
                    deleted.append(info.name)
        return deleted

    def _note_lost(self, cluster: str, state: _Cluster, claimed: Collection[str], listed: dict[str, PoolInfo]) -> None:
        for name in claimed:
            key, info = (cluster, name), listed.get(name)
            if info is not None and info.status != "STOPPING":
                if info.usable:
                    self._seen.add(key)
                continue
            ours = state.active is not None and state.active.pool == name and state.active.kind == DELETE
            if key in self._seen and not ours:
                gone = "is gone" if info is None else "is being deleted"
                logger.warning("node pool %s, still in use, %s", name, gone)
                self._seen.discard(key)
                self._lost.add(key)
                self._forget(cluster, name)

    async def _release(
        self, cluster: str, state: _Cluster, info: PoolInfo, claimed: Collection[str], *, grace: float, now: float
    ) -> bool:
        """Delete the pool, or drop this installation's claim on it, once unused for the grace period."""
        key = (cluster, info.name)
        own_claim = claim_label(self.installation)
        ours = info.installation == self.installation
        mine = ours or own_claim in info.labels
        if not info.managed or info.name in claimed or info.status == "STOPPING" or not mine:
            self._unclaimed_since.pop(key, None)
            return False
        since = self._unclaimed_since.setdefault(key, now)
        if now - since < grace or state.active is not None or state.blocking:
            return False
        if not ours:
            labels = {k: v for k, v in info.labels.items() if k != own_claim}
            try:
                operation = await self._mutate(cluster, state, functools.partial(self._api.update, cluster, info,
                                                                                 resource_labels=labels))  # fmt: skip
            except GcpError as error:  # a stale etag: the next pass reads it again
                logger.warning("dropping the claim on node pool %s failed: %s", info.name, error)
                return False
            if operation is not None:
                logger.info("no longer using node pool %s of installation %s (operation %s)", info.name,
                            info.installation or "?", operation.name)  # fmt: skip
                self._unclaimed_since.pop(key, None)
            return False
        if info.claimed_by_others(self.installation):
            return False  # another installation's workloads use it: never ours to delete while they do
        # Re-read just before deleting: a claim may have landed since the listing (DeleteNodePool has no etag).
        fresh = await self._run(self._api.get, cluster, info.name)
        if fresh is None or fresh.status == "STOPPING" or fresh.claimed_by_others(self.installation):
            return False
        operation = await self._mutate(cluster, state, functools.partial(self._api.delete, cluster, info.name))
        if operation is None:
            return False
        logger.info("deleting unused GKE node pool %s (operation %s)", info.name, operation.name)
        self._unclaimed_since.pop(key, None)
        self._seen.discard(key)
        return True
