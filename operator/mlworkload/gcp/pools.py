"""Node pools shared by shape: create once, one operation per cluster at a time, release after a grace period.

GKE runs one node-pool operation per cluster at a time. The coordinator therefore keeps, per
cluster, a lock and the operation it is waiting for: a workload that needs a pool being created
waits for that operation (N workloads of one shape make one create), and a workload that needs
another pool queues behind it. Nothing here blocks on an operation: each `ensure` polls at most
once per poll interval and reports where the pool stands, and the caller asks again later.
"""

import asyncio
import functools
import logging
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import ParamSpec, TypeVar

from mlworkload.gcp.errors import FailureKind, GcpError, classify_message
from mlworkload.gcp.nodepools import NodePools, OperationInfo, PoolInfo
from mlworkload.gcp.plan import NodePoolPlan
from mlworkload.gcp.retry import Backoff

logger = logging.getLogger(__name__)

_P = ParamSpec("_P")
_T = TypeVar("_T")

PoolKey = tuple[str, str]  # (cluster path, pool name)


@dataclass(frozen=True, slots=True)
class PoolReport:
    """Where one pool stands, for the workload's status."""

    name: str
    state: str  # Running, Provisioning, Queued, Deleting, Failed
    operation: str = ""
    message: str = ""
    failure: GcpError | None = None

    @property
    def ready(self) -> bool:
        return self.state == "Running"


@dataclass
class _Cluster:
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    active: OperationInfo | None = None  # the operation the operator waits for on this cluster
    last_poll: float = float("-inf")


class PoolCoordinator:
    def __init__(self, api: NodePools, *, backoff: Backoff, poll_seconds: float) -> None:
        self._api = api
        self._backoff = backoff
        self._clock = backoff.clock
        self._poll_seconds = poll_seconds
        self._clusters: dict[str, _Cluster] = {}
        self._failures: dict[PoolKey, GcpError] = {}
        self._create_failed: set[PoolKey] = set()  # pools whose own create failed: safe to replace
        self._adopted: set[str] = set()  # operations read back from status after a restart
        self._unclaimed_since: dict[PoolKey, float] = {}
        self._described: dict[PoolKey, tuple[PoolInfo | None, float]] = {}  # GetNodePool answers, briefly

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

    # --- operations ---------------------------------------------------------------------------

    def _finished(self, cluster: str, operation: OperationInfo) -> None:
        key = (cluster, operation.pool)
        if operation.error is None:
            self._failures.pop(key, None)
            self._create_failed.discard(key)
            if operation.kind == "CREATE_NODE_POOL":
                self._backoff.succeeded(key)
            logger.info("GKE operation %s on node pool %s finished", operation.name, operation.pool)
            return
        logger.warning("GKE operation %s on node pool %s failed: %s", operation.name, operation.pool, operation.error)
        if operation.kind == "CREATE_NODE_POOL":
            self._failures[key] = operation.error
            self._create_failed.add(key)
            self._backoff.failed(key)

    async def _poll(self, cluster: str, state: _Cluster) -> None:
        """Check the awaited operation, at most once per poll interval for all workloads together."""
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

    # --- ensure -------------------------------------------------------------------------------

    async def ensure(self, plan: NodePoolPlan, recorded_operation: str = "") -> PoolReport:
        """Where the pool stands now, after starting whatever it needs next (never waits for GKE)."""
        cluster = plan.cluster_path
        state = self._cluster(cluster)
        async with state.lock:
            try:
                await self._poll(cluster, state)
                await self._adopt(cluster, state, recorded_operation, plan.name)
                return await self._ensure(plan, state)
            except GcpError as error:
                return PoolReport(plan.name, "Failed", message=str(error), failure=error)

    async def _ensure(self, plan: NodePoolPlan, state: _Cluster) -> PoolReport:
        cluster, key = plan.cluster_path, (plan.cluster_path, plan.name)
        self._unclaimed_since.pop(key, None)
        if state.active is not None and state.active.pool == plan.name:
            verb = "Deleting" if state.active.kind == "DELETE_NODE_POOL" else "Provisioning"
            return PoolReport(plan.name, verb, state.active.name, f"GKE operation {state.active.name} is running")
        info = await self._describe(cluster, plan.name)
        if info is not None:
            return await self._existing(plan, state, info)
        if not self._backoff.due(key) and key in self._failures:
            failure = self._failures[key]
            return PoolReport(plan.name, "Failed", message=f"{failure.message} (will retry)", failure=failure)
        return await self._create(plan, state)

    async def _existing(self, plan: NodePoolPlan, state: _Cluster, info: PoolInfo) -> PoolReport:
        key = (plan.cluster_path, plan.name)
        if not info.managed:
            conflict = GcpError(
                FailureKind.INVALID,
                f"node pool {plan.name} exists but was not created by mlworkload (no managed-by label); "
                "rename or delete it",
            )
            return PoolReport(plan.name, "Failed", message=conflict.message, failure=conflict)
        if info.usable:
            self._failures.pop(key, None)
            return PoolReport(plan.name, "Running", message=f"node pool {plan.name} is running")
        if info.status == "STOPPING":
            message = f"node pool {plan.name} is being deleted; it is created again after"
            return PoolReport(plan.name, "Deleting", message=message)
        if not info.failed:
            return PoolReport(plan.name, "Provisioning", message=f"node pool {plan.name} is {info.status.lower()}")
        failure = self._failures.get(key) or classify_message(info.message or info.status)
        if key not in self._create_failed:
            # A pool that once worked may hold other workloads' nodes: report, never replace.
            return PoolReport(plan.name, "Failed", message=failure.message, failure=failure)
        if not self._backoff.due(key) or state.active is not None:
            return PoolReport(plan.name, "Failed", message=f"{failure.message} (will retry)", failure=failure)
        operation = await self._mutate(plan.cluster_path, state, lambda: self._api.delete(plan.cluster_path, plan.name))
        return PoolReport(plan.name, "Failed", operation.name if operation else "",
                          f"{failure.message} (replacing the failed pool)", failure)  # fmt: skip

    async def _create(self, plan: NodePoolPlan, state: _Cluster) -> PoolReport:
        if state.active is not None:
            return PoolReport(plan.name, "Queued", message=f"waiting for GKE operation {state.active.name} on "
                              f"node pool {state.active.pool}: GKE runs one at a time per cluster")  # fmt: skip
        try:
            operation = await self._mutate(plan.cluster_path, state, lambda: self._api.create(plan))
        except GcpError as error:
            key = (plan.cluster_path, plan.name)
            if error.kind is FailureKind.ALREADY_EXISTS:
                self._forget(*key)
                return PoolReport(plan.name, "Provisioning", message=f"node pool {plan.name} is being created")
            self._failures[key] = error
            self._backoff.failed(key)
            return PoolReport(plan.name, "Failed", message=str(error), failure=error)
        if operation is None:
            return PoolReport(plan.name, "Queued", message="the cluster is busy with another operation; will retry")
        logger.info("creating GKE node pool %s in %s (operation %s)", plan.name, plan.cluster_path, operation.name)
        return PoolReport(plan.name, "Provisioning", operation.name, f"GKE operation {operation.name} is running")

    async def _mutate(self, cluster: str, state: _Cluster, call: Callable[[], OperationInfo]) -> OperationInfo | None:
        """Start one operation; None when GKE says the cluster is busy (retried with backoff)."""
        busy = ("busy", cluster)
        if not self._backoff.due(busy):
            return None
        try:
            operation = await self._run(call)
        except GcpError as error:
            if error.kind is FailureKind.BUSY:
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
        """Delete operator-owned pools nobody has claimed for `grace_seconds`; returns the pools deleted."""
        state = self._cluster(cluster)
        deleted: list[str] = []
        async with state.lock:
            await self._poll(cluster, state)
            pools = await self._run(self._api.list, cluster)
            now = self._clock()
            listed = {(cluster, info.name) for info in pools}
            for key in [key for key in self._unclaimed_since if key[0] == cluster and key not in listed]:
                del self._unclaimed_since[key]
            for info in pools:
                key = (cluster, info.name)
                if not info.managed or info.name in claimed or info.status == "STOPPING":
                    self._unclaimed_since.pop(key, None)
                    continue
                since = self._unclaimed_since.setdefault(key, now)
                if now - since < grace_seconds or state.active is not None:
                    continue
                operation = await self._mutate(cluster, state, functools.partial(self._api.delete, cluster, info.name))
                if operation is not None:
                    logger.info("deleting unused GKE node pool %s (operation %s)", info.name, operation.name)
                    self._unclaimed_since.pop(key, None)
                    deleted.append(info.name)
        return deleted
