"""What the reconciler needs from GCP: make a workload's plan real, and release it.

Two implementations: `LiveProvisioner` (gcp/live.py) calls GKE, IAM and Cloud Storage; the
dry-run provisioner here logs the plan, touches nothing and reports it in status. Dry-run is the
default whenever no GCP project is configured, and whenever `MLW_GCP_MODE=dry-run`.
"""

import hashlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Final, Protocol

from mlworkload.api.workload import Capacity, IamBindingStatus, NodePoolStatus
from mlworkload.gcp.plan import GcpPlan

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Readiness:
    """One dependency's state: ready or not, why (PascalCase), and whether it needs a person (Stalled)."""

    ready: bool
    reason: str
    message: str = ""
    permanent: bool = False


NO_NODE_POOLS: Final = Readiness(True, "NoNodePools", "no node pools are needed")
NO_IDENTITY: Final = Readiness(True, "NotRequired", "no GCP identity is needed")


@dataclass(frozen=True, slots=True)
class Recorded:
    """What a workload's status says it holds: pools (with running operations) and IAM bindings.

    Status is the operator's memory across restarts: the operation to resume polling, and which
    bindings the operator added (and may therefore remove). A binding is recorded as added before it is
    granted (`live.py`), so such an entry may name a member that is not there yet: removing it is a no-op.
    """

    pools: Sequence[NodePoolStatus] = ()
    bindings: Sequence[IamBindingStatus] = ()
    releasing: bool = False  # the workload is being deleted: it claims nothing any more

    def partition(self, keep: Callable[[IamBindingStatus], bool]) -> tuple["Recorded", list[IamBindingStatus]]:
        """The record with only the bindings `keep` accepts, and the bindings left out."""
        dropped = [status for status in self.bindings if not keep(status)]
        if not dropped:
            return self, []
        kept = tuple(status for status in self.bindings if status not in dropped)
        return Recorded(pools=self.pools, bindings=kept, releasing=self.releasing), dropped


NOTHING_RECORDED: Final = Recorded()


@dataclass(frozen=True, slots=True)
class GcpState:
    node_pools: Readiness
    identity: Readiness
    pools: Sequence[NodePoolStatus] = field(default_factory=tuple)
    bindings: Sequence[IamBindingStatus] = field(default_factory=tuple)
    access: Readiness | None = None  # who may pass IAP: reported on the endpoints, never holding Ready back
    # Pools GKE reports RUNNING_WITH_ERROR ("partially usable": ready, but e.g. a stockout in a zone), with
    # GKE's message; None when all is well. Never holds Ready back.
    degraded: str | None = None


class GcpProvisioner(Protocol):
    async def ensure(self, owner: str, plan: GcpPlan, recorded: Recorded) -> GcpState:
        """Create or keep what the plan needs for `owner` (namespace/name); never waits for long operations."""
        ...

    async def release(self, owner: str, recorded: Recorded, *, keep_pools: bool = False) -> list[IamBindingStatus]:
        """Give up what `owner` used: the IAM bindings only it needed, and (unless `keep_pools`) its pools.

        Returns the bindings it must still hold: handed to other workloads that need them, whose status does not
        record them yet. They stay in `owner`'s record (a deleted workload keeps its finalizer) and the caller
        releases again later. Raises `GcpError` when GCP could not be told; the caller retries.
        """
        ...


def pool_capacity(spot: bool) -> Capacity:
    return Capacity.SPOT if spot else Capacity.ON_DEMAND


class DryRunProvisioner:
    """Logs each plan once per change and reports it; creates and deletes nothing.

    Per workload it keeps only a digest of the last plan logged (to log the next one only if it differs):
    what status reports comes from the plan at hand, so the plans themselves need not stay in memory.
    """

    def __init__(self) -> None:
        self.digests: dict[str, bytes] = {}

    async def ensure(self, owner: str, plan: GcpPlan, recorded: Recorded) -> GcpState:
        digest = plan_digest(plan)
        if self.digests.get(owner) != digest:
            logger.info("dry-run GCP plan for %s: %s", owner, plan.to_dict())
            self.digests[owner] = digest
        pools = len(plan.node_pools)
        bindings = len(plan.iam_bindings)
        return GcpState(
            node_pools=Readiness(True, "DryRun", f"dry-run: {pools} node pool(s) planned, none created")
            if pools
            else NO_NODE_POOLS,
            identity=Readiness(True, "DryRun", f"dry-run: {bindings} IAM binding(s) planned, none made")
            if bindings
            else NO_IDENTITY,
            pools=[
                NodePoolStatus(name=pool.name, capacity=pool_capacity(pool.spot), state="DryRun")
                for pool in plan.node_pools
            ],
        )

    async def release(self, owner: str, recorded: Recorded, *, keep_pools: bool = False) -> list[IamBindingStatus]:
        if self.digests.pop(owner, None) is not None:
            logger.info("dry-run GCP release for %s", owner)
        return []


def plan_digest(plan: GcpPlan) -> bytes:
    """16 bytes that change whenever the plan does (its canonical JSON, hashed)."""
    return hashlib.blake2b(plan.model_dump_json().encode(), digest_size=16).digest()
