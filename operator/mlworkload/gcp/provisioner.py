"""What the reconciler needs from GCP: make a workload's plan real, and release it.

The live implementation (node pools on GKE, IAM bindings) arrives with the GCP issue; until GCP
is configured, and whenever `MLW_GCP_MODE=dry-run`, the dry-run provisioner logs the plan,
touches nothing and reports it in status.
"""

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final, Protocol

from mlworkload.api.workload import Capacity, NodePoolStatus
from mlworkload.gcp.plan import GcpPlan

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Readiness:
    """One dependency's state: ready or not, why (PascalCase), and whether retrying can fix it."""

    ready: bool
    reason: str
    message: str = ""
    permanent: bool = False


NO_NODE_POOLS: Final = Readiness(True, "NoNodePools", "no node pools are needed")
NO_IDENTITY: Final = Readiness(True, "NotRequired", "no GCP identity is needed")


@dataclass(frozen=True, slots=True)
class GcpState:
    node_pools: Readiness
    identity: Readiness
    pools: Sequence[NodePoolStatus] = field(default_factory=tuple)


class GcpProvisioner(Protocol):
    async def ensure(self, owner: str, plan: GcpPlan) -> GcpState:
        """Create or keep what the plan needs for `owner` (namespace/name); never blocks on long operations."""
        ...

    async def release(self, owner: str) -> None:
        """Give up what `owner` used: its IAM bindings, and its share of node pools."""
        ...


def _pool_states(plan: GcpPlan, state: str) -> list[NodePoolStatus]:
    return [
        NodePoolStatus(name=pool.name, capacity=Capacity.SPOT if pool.spot else Capacity.ON_DEMAND, state=state)
        for pool in plan.node_pools
    ]


class DryRunProvisioner:
    """Logs each plan once per change and reports it; creates and deletes nothing."""

    def __init__(self) -> None:
        self.plans: dict[str, GcpPlan] = {}

    async def ensure(self, owner: str, plan: GcpPlan) -> GcpState:
        if self.plans.get(owner) != plan:
            logger.info("dry-run GCP plan for %s: %s", owner, plan.to_dict())
            self.plans[owner] = plan
        pools = len(plan.node_pools)
        bindings = len(plan.iam_bindings)
        return GcpState(
            node_pools=Readiness(True, "DryRun", f"dry-run: {pools} node pool(s) planned, none created")
            if pools
            else NO_NODE_POOLS,
            identity=Readiness(True, "DryRun", f"dry-run: {bindings} IAM binding(s) planned, none made")
            if bindings
            else NO_IDENTITY,
            pools=_pool_states(plan, "DryRun"),
        )

    async def release(self, owner: str) -> None:
        if self.plans.pop(owner, None) is not None:
            logger.info("dry-run GCP release for %s", owner)
