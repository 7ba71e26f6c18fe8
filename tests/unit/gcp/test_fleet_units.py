"""The node-pool fleet's pure rules and its wiring, without a GKE: the strictest settings of several workloads,
the collector announcing a vanished pool at once, and the handlers' GCP timer filter consulting it.

An in-memory `NodePools` stands in for GKE (the GKE behaviour itself is tested against FakeGcp in
tests/integration/test_gcp_adapters.py); time is a ManualClock that never moves unless a test says so.
"""

import asyncio
import contextlib
import dataclasses
import itertools
from collections.abc import Mapping, Sequence
from typing import Any

import kopf
import pytest

from mlworkload.api.workload import Capacity, NodePoolStatus
from mlworkload.constants import GCP_LABEL_INSTALLATION, GCP_LABEL_MANAGED_BY, MANAGED_BY
from mlworkload.gcp.iam import BindingManager
from mlworkload.gcp.live import LiveProvisioner, strictest
from mlworkload.gcp.nodepools import OperationInfo, PoolInfo
from mlworkload.gcp.plan import GcpPlan, NodePoolPlan
from mlworkload.gcp.pools import PoolCoordinator, PoolTarget
from mlworkload.gcp.provisioner import Recorded
from mlworkload.gcp.retry import Backoff
from mlworkload.problems import Refused
from mlworkload.settings import OperatorSettings
from tests.support.clock import ManualClock
from tests.support.operator import handlers_module

CLUSTER = "projects/p/locations/us-central1/clusters/c"


def plan(
    max_nodes: int = 8, locations: Sequence[str] = (), policy: str = "ANY", name: str = "mlw-x", **settings: Any
) -> NodePoolPlan:
    return NodePoolPlan(name=name, project="p", location="us-central1", cluster="c", machine_type="g2-standard-8",
                        spot=True, max_nodes=max_nodes, locations=list(locations), location_policy=policy,
                        **settings)  # fmt: skip


OURS = {GCP_LABEL_MANAGED_BY: MANAGED_BY, "mlworkload-shape": "mlw-l4x1"}  # the operator's: never the policy's


@pytest.mark.parametrize(
    ("plans", "expected"),
    [
        pytest.param([plan(6), plan(2), plan(4)], PoolTarget(2, "ANY", None, labels={}), id="fewest-nodes"),
        pytest.param([plan(locations=["z-a", "z-b"]), plan(locations=["z-b", "z-c"]), plan()],
                     PoolTarget(8, "ANY", ("z-b",), labels={}), id="zones-intersected-silent-ones-allow-any"),
        pytest.param([plan(locations=["z-a"]), plan(locations=["z-c"])],
                     PoolTarget(8, "ANY", None, "its workloads allow no zone in common, so its zones are kept",
                                labels={}),
                     id="no-common-zone-keeps-them"),
        pytest.param([plan(policy="ANY"), plan(policy="BALANCED")],
                     PoolTarget(8, None, None, "its workloads want different location policies, so its policy is "
                                "kept", labels={}), id="policies-disagree"),
        pytest.param([plan(labels={**OURS, "team": "nlp", "cost-center": "a"}),
                      plan(labels={**OURS, "team": "nlp", "cost-center": "b", "env": "x"})],
                     PoolTarget(8, "ANY", None, "its workloads' policies disagree on GCP labels cost-center, env, so "
                                "those are kept", labels={"team": "nlp"},
                                kept_labels=frozenset({"cost-center", "env"})),
                     id="labels-agreed-set-disputed-kept"),
        pytest.param([plan(image_type="COS_CONTAINERD", disk_size_gb=200,
                           service_account="a@p.iam.gserviceaccount.com"),
                      plan(image_type="COS_CONTAINERD", disk_size_gb=200)],
                     PoolTarget(8, "ANY", None, labels={}, image_type="COS_CONTAINERD", disk_size_gb=200,
                                service_account="a@p.iam.gserviceaccount.com"),
                     id="settings-set-by-some-and-not-contradicted-apply"),
        pytest.param([plan(disk_type="pd-ssd", image_streaming=True, secure_boot=True),
                      plan(disk_type="pd-balanced", image_streaming=False, secure_boot=False)],
                     PoolTarget(8, "ANY", None, "its workloads' policies want different image streaming settings, so "
                                "its image streaming setting is kept; its workloads' policies want different disk "
                                "types, so its disk type is kept; its workloads' policies want different Secure Boot "
                                "settings, so its Secure Boot setting is kept", labels={}),
                     id="settings-in-dispute-are-kept"),
    ],
)  # fmt: skip
def test_the_strictest_settings_win(plans: list[NodePoolPlan], expected: PoolTarget) -> None:
    assert strictest(plans) == expected


class MemoryPools:
    """NodePools in memory: pools by name, operations finish when `finish` says so."""

    def __init__(self) -> None:
        self.pools: dict[str, PoolInfo] = {}
        self.calls: list[str] = []
        self._ids = itertools.count(1)

    def get(self, cluster: str, name: str) -> PoolInfo | None:
        self.calls.append("get")
        return self.pools.get(name)

    def list(self, cluster: str) -> list[PoolInfo]:
        self.calls.append("list")
        return list(self.pools.values())

    def create(self, plan: NodePoolPlan) -> OperationInfo:
        self.calls.append("create")
        self.pools[plan.name] = PoolInfo(plan.name, "RUNNING", labels=dict(plan.labels), max_nodes=plan.max_nodes,
                                         location_policy=plan.location_policy)  # fmt: skip
        return OperationInfo(f"operation-{next(self._ids)}", plan.name, done=False, kind="CREATE_NODE_POOL")

    def delete(self, cluster: str, name: str) -> OperationInfo:
        self.calls.append("delete")
        self.pools[name] = dataclasses.replace(self.pools[name], status="STOPPING")
        return OperationInfo(f"operation-{next(self._ids)}", name, done=False, kind="DELETE_NODE_POOL")

    def operation(self, cluster: str, name: str, pool: str) -> OperationInfo:
        return OperationInfo(name, pool, done=True)

    def set_autoscaling(self, cluster: str, name: str, *, max_nodes: int, location_policy: str) -> OperationInfo:
        raise AssertionError("not expected here")

    def update(
        self,
        cluster: str,
        pool: PoolInfo,
        *,
        locations: Sequence[str] | None = None,
        resource_labels: Mapping[str, str] | None = None,
        image_type: str | None = None,
        image_streaming: bool | None = None,
        disk_type: str | None = None,
        disk_size_gb: int | None = None,
    ) -> OperationInfo:
        raise AssertionError("not expected here")


def provisioner(api: MemoryPools, clock: ManualClock, claims: dict[str, Recorded]) -> LiveProvisioner:
    backoff = Backoff(10.0, 600.0, clock)

    async def claim_source() -> Mapping[str, Recorded]:
        return dict(claims)

    coordinator = PoolCoordinator(api, backoff=backoff, poll_seconds=10.0, installation="inst", wall_clock=clock)
    bindings = BindingManager(None, backoff=backoff, verify_seconds=60.0)  # type: ignore[arg-type]  # no bindings
    return LiveProvisioner(coordinator, bindings, claim_source, grace_seconds=600.0, clusters=[CLUSTER])


class DeletedByHand(MemoryPools):
    """A pool someone deletes by hand between two listings: gone from the `at`-th listing on."""

    def __init__(self, name: str, at: int) -> None:
        super().__init__()
        self.name, self.at = name, at

    def list(self, cluster: str) -> list[PoolInfo]:
        if self.calls.count("list") + 1 == self.at:
            self.pools.pop(self.name, None)
        return super().list(cluster)


async def test_the_collector_announces_a_vanished_pool_at_its_next_pass_without_any_time_passing() -> None:
    api, clock = DeletedByHand("mlw-x", at=3), ManualClock()
    labels = {GCP_LABEL_MANAGED_BY: MANAGED_BY, GCP_LABEL_INSTALLATION: "inst"}
    api.pools["mlw-x"] = PoolInfo("mlw-x", "RUNNING", labels=labels, max_nodes=8, location_policy="ANY")
    claims = {"ns/a": Recorded(pools=[NodePoolStatus(name="mlw-x", capacity=Capacity.SPOT, state="Running")])}
    live = provisioner(api, clock, claims)
    state = await live.ensure("ns/a", GcpPlan(node_pools=[plan()]), claims["ns/a"])
    assert state.node_pools.ready

    announced: list[set[str]] = []
    heard = asyncio.Event()

    async def on_lost(owners: set[str]) -> None:
        announced.append(owners)
        heard.set()

    collector = asyncio.create_task(live.run_collector(0.0, on_lost=on_lost))
    await asyncio.wait_for(heard.wait(), timeout=10)
    collector.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await collector
    assert announced == [{"ns/a"}]
    assert live.due("ns/a")
    assert clock.now == ManualClock().now  # no time passed: not the resync, not a poll interval of the clock

    await live.ensure("ns/a", GcpPlan(node_pools=[plan()]), claims["ns/a"])
    assert not live.due("ns/a")  # reconciled: the pool is created again
    assert api.calls.count("create") == 1


def test_the_gcp_timer_filter_asks_the_provisioner_about_vanished_pools() -> None:
    _gcp_pending = handlers_module()._gcp_pending  # imported now, with the integration tier's intervals

    api, clock = MemoryPools(), ManualClock()
    live = provisioner(api, clock, {})
    live._due.add("ns/a")  # what a collector pass that found the pool gone leaves
    memo = kopf.Memo(reconciler=type("Reconciler", (), {"gcp": live})())

    def pending(**metadata: str) -> bool:
        ready = {"conditions": [{"type": "NodePoolsReady", "status": "True", "reason": "Provisioned"}]}
        raw: Any = {"metadata": {"namespace": "ns", **metadata}, "status": ready}
        body = kopf.Body(raw)
        return _gcp_pending(status=body.status, meta=body.meta, memo=memo)

    assert pending(name="a")
    assert not pending(name="b")  # ready, and nothing of its vanished: left to the resync
    assert not pending(name="a", deletionTimestamp="2026-01-01T00:00:00Z")


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({}, "mlworkload-system"),  # the operator namespace's default
        ({"POD_NAMESPACE": "ml-research"}, "ml-research"),
        ({"POD_NAMESPACE": "ml-research", "MLW_INSTALLATION": "Team_A"}, "team_a"),  # lowercased
        ({"MLW_INSTALLATION": "x" * 63}, "x" * 63),
    ],
)
def test_the_installation_identity_defaults_to_the_operator_namespace(environ: dict[str, str], expected: str) -> None:
    assert OperatorSettings.load(environ=environ).installation == expected


@pytest.mark.parametrize("value", ["team.a", "x" * 64, "team a", "équipe"])
def test_an_installation_identity_that_is_no_gcp_label_value_is_refused(value: str) -> None:
    with pytest.raises(Refused, match=r"MLW_INSTALLATION: .* is not a GCP label value"):
        OperatorSettings.load(environ={"MLW_INSTALLATION": value})
