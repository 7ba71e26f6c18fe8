"""The GCP adapters with the real Google client libraries against FakeGcp: pools, IAM bindings, release.

`PoolCoordinator`, `BindingManager` and `LiveProvisioner` run unchanged over `GkeNodePools`
(google-cloud-container, REST), `ServiceAccountPolicies` (google-cloud-iam, gRPC) and `BucketPolicies`
(google-cloud-storage). Time is a `ManualClock` the test advances and `poll_seconds=0`, so every `ensure`
polls its operation and every backoff is crossed on purpose; GKE operations finish only when the test
calls `fake.gke.complete_operations()`. Nothing sleeps.
"""

import asyncio
import dataclasses
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import pytest
from prometheus_client import REGISTRY

from mlworkload.api.policy import PolicyGcp
from mlworkload.api.workload import Capacity, IamBindingStatus, NodePoolStatus
from mlworkload.builders import build_gcp_plan
from mlworkload.gcp import clients
from mlworkload.gcp.errors import FailureKind, GcpError
from mlworkload.gcp.iam import BindingManager, BucketPolicies, RoutedPolicies, ServiceAccountPolicies
from mlworkload.gcp.iap import IapPolicies
from mlworkload.gcp.live import (
    REASON_BOUND,
    REASON_PROVISIONED,
    REASON_PROVISIONING,
    REASON_RECORDING_GRANT,
    STARTUP_SETTLE_SECONDS,
    LiveProvisioner,
    connect,
)
from mlworkload.gcp.nodepools import GkeNodePools, claim_label
from mlworkload.gcp.plan import GcpPlan, IamBinding, NodePoolPlan
from mlworkload.gcp.pools import PoolCoordinator, PoolReport
from mlworkload.gcp.provisioner import NOTHING_RECORDED, GcpState, Recorded
from mlworkload.gcp.retry import Backoff
from mlworkload.settings import OperatorSettings
from tests.support import gcp as fakes
from tests.support.clock import ManualClock
from tests.support.documents import GSA, NODE_SETTINGS, WorkloadDoc, permissive_policy, resolved, workload
from tests.support.gcp import (
    ApiError,
    FakeGcp,
    fresh_project,
    iam_permission_denied,
    permission_denied,
    precondition_failed,
    quota_exceeded_at_create,
    stockout,
    storage_permission_denied,
    unavailable,
)
from tests.support.gcp.core import Request, Service

PROJECT, LOCATION, CLUSTER = "my-proj", "us-central1", "ml-cluster"  # what permissive_policy() names
CLUSTER_PATH = f"projects/{PROJECT}/locations/{LOCATION}/clusters/{CLUSTER}"
BUCKET = "team-nlp-ckpt"
GSA_RESOURCE = f"projects/{PROJECT}/serviceAccounts/{GSA}"
GSA_MEMBER = f"serviceAccount:{GSA}"
WI_USER = "roles/iam.workloadIdentityUser"
OBJECT_USER = "roles/storage.objectUser"
TOKEN_CREATOR = "roles/iam.serviceAccountTokenCreator"
BASE_DELAY, MAX_DELAY = 10.0, 80.0
GRACE = 100.0
INSTALLATION = "ml-platform"
VERIFY = 60.0


def ksa(name: str, namespace: str = "team-nlp") -> str:
    return f"serviceAccount:{PROJECT}.svc.id.goog[{namespace}/{name}]"


# --- fixtures and helpers -------------------------------------------------------------------------------


class Claims:
    """The ClaimSource: what live workloads' statuses record, as the test says."""

    def __init__(self) -> None:
        self.owners: dict[str, Recorded] = {}

    async def __call__(self) -> Mapping[str, Recorded]:
        return dict(self.owners)


@pytest.fixture(autouse=True)
def world(fake: FakeGcp) -> Iterator[None]:
    yield from fresh_project(
        fake, project=PROJECT, location=LOCATION, cluster=CLUSTER, service_account=GSA, bucket=BUCKET
    )


@pytest.fixture(scope="module")
def gke(fake: FakeGcp) -> GkeNodePools:
    return GkeNodePools(fakes.gke_client(fake))


@pytest.fixture(scope="module")
def policies(fake: FakeGcp) -> Iterator[RoutedPolicies]:
    iam = fakes.iam_client(fake)
    storage = fakes.storage_client(fake, PROJECT)
    iap = fakes.iap_client(fake)
    yield RoutedPolicies(ServiceAccountPolicies(iam), BucketPolicies(storage), IapPolicies(iap))
    iam.transport.close()  # type: ignore[no-untyped-call]
    storage.close()
    iap.transport.close()  # type: ignore[no-untyped-call]


@dataclass
class Rig:
    """One test's world: the fake, adapters over the real clients, the clock and the claims."""

    fake: FakeGcp
    gke: GkeNodePools
    policies: RoutedPolicies
    clock: ManualClock = field(default_factory=ManualClock)
    claims: Claims = field(default_factory=Claims)

    def coordinator(self, installation: str = INSTALLATION) -> PoolCoordinator:
        return PoolCoordinator(
            self.gke,
            backoff=Backoff(BASE_DELAY, MAX_DELAY, self.clock),
            poll_seconds=0,
            installation=installation,
            wall_clock=self.clock,
        )

    def provisioner(self, installation: str = INSTALLATION, claims: Claims | None = None) -> LiveProvisioner:
        """Wired like `live.connect`: one backoff for pools and bindings; a new one is a restarted operator."""
        backoff = Backoff(BASE_DELAY, MAX_DELAY, self.clock)
        return LiveProvisioner(
            PoolCoordinator(
                self.gke, backoff=backoff, poll_seconds=0, installation=installation, wall_clock=self.clock
            ),
            BindingManager(self.policies, backoff=backoff, verify_seconds=VERIFY),
            claims or self.claims,
            grace_seconds=GRACE,
            clusters=[CLUSTER_PATH],
            clock=self.clock,
        )


@pytest.fixture
def rig(fake: FakeGcp, gke: GkeNodePools, policies: RoutedPolicies) -> Rig:
    return Rig(fake, gke, policies)


def plan_of(doc: WorkloadDoc) -> GcpPlan:
    return build_gcp_plan(resolved(doc, permissive_policy()))


def gpu_pool() -> NodePoolPlan:
    (pool,) = plan_of(workload().gpu_group(capacity="Spot")).node_pools
    return pool


def cpu_pool() -> NodePoolPlan:
    (pool,) = plan_of(workload().group("cpu", machineType="n2-standard-8", capacity="OnDemand")).node_pools
    return pool


# Names are the builder's to choose (they carry the policy and the shape): never written out here.
GPU_POOL, CPU_POOL = gpu_pool().name, cpu_pool().name


def pools_only(*pools: NodePoolPlan) -> GcpPlan:
    return GcpPlan(node_pools=list(pools))


def identity_plan(name: str = "demo", access: str = "ReadWrite") -> GcpPlan:
    """The real builder's bindings: Workload Identity on the GSA, and the GSA on the bucket."""
    doc = workload(name).set("spec.storage", {"bucket": f"gs://{BUCKET}", "access": access})
    plan = GcpPlan(iam_bindings=plan_of(doc).iam_bindings)
    assert [(b.resource, b.role, b.member) for b in plan.iam_bindings] == [
        (GSA_RESOURCE, WI_USER, ksa(name)),
        (f"projects/_/buckets/{BUCKET}", OBJECT_USER, GSA_MEMBER),
    ]
    return plan


def recorded(state: GcpState) -> Recorded:
    """What the reconciler writes to status and hands back on the next pass."""
    return Recorded(pools=tuple(state.pools), bindings=tuple(state.bindings))


def states(state: GcpState) -> dict[str, str]:
    return {pool.name: pool.state for pool in state.pools}


def rpc_statuses(fake: FakeGcp, service: Service, rpc: str | list[str], since: int = 0) -> list[int]:
    return [call.status for call in fake.calls(service, rpc, since)]


def created_names(fake: FakeGcp, since: int = 0) -> list[str]:
    return [call.body["nodePool"]["name"] for call in fake.calls("container", "CreateNodePool", since)]


def deleted_paths(fake: FakeGcp, since: int = 0) -> list[str]:
    return [call.path for call in fake.calls("container", "DeleteNodePool", since)]


def api_errors(api: str, reason: str) -> float:
    """The operator's failed-GCP-call counter (process-wide, so tests compare before and after)."""
    return REGISTRY.get_sample_value("mlworkload_gcp_api_errors_total", {"api": api, "reason": reason}) or 0.0


def managed_pool(name: str, installation: str | None = INSTALLATION) -> dict[str, Any]:
    """A pool the operator made earlier: of this installation, another one's, or (None) before installations."""
    labels = {"managed-by": "mlworkload"} | ({"mlworkload-installation": installation} if installation else {})
    return {"name": name, "config": {"machineType": "e2-standard-4", "resourceLabels": labels}}


# --- node pools: sharing and the one-operation-per-cluster rule -----------------------------------------


async def test_twenty_workloads_of_one_shape_make_one_create(fake: FakeGcp, rig: Rig) -> None:
    live = rig.provisioner()
    plan = pools_only(gpu_pool())
    first = await asyncio.gather(*(live.ensure(f"team-nlp/w{i}", plan, NOTHING_RECORDED) for i in range(20)))

    assert rpc_statuses(fake, "container", "CreateNodePool") == [200]
    (operation,) = fake.gke.operations
    assert {(s.pools[0].state, s.pools[0].operation) for s in first} == {("Provisioning", operation)}
    assert {(s.node_pools.ready, s.node_pools.reason) for s in first} == {(False, REASON_PROVISIONING)}
    stored = fake.gke.node_pool(CLUSTER_PATH, GPU_POOL)
    assert stored is not None
    assert stored["config"]["resourceLabels"]["managed-by"] == "mlworkload"
    assert stored["autoscaling"]["totalMaxNodeCount"] == 8
    assert stored.get("initialNodeCount", 0) == 0

    fake.gke.complete_operations()
    done = await live.ensure("team-nlp/w0", plan, recorded(first[0]))
    assert states(done) == {GPU_POOL: "Running"}
    assert done.pools[0].operation == ""
    assert (done.node_pools.ready, done.node_pools.reason) == (True, REASON_PROVISIONED)
    later = await asyncio.gather(*(live.ensure(f"team-nlp/w{i}", plan, recorded(first[i])) for i in range(1, 20)))
    assert all(states(s) == {GPU_POOL: "Running"} for s in later)
    assert len(fake.calls("container", "CreateNodePool")) == 1


async def test_a_second_shape_queues_behind_the_running_operation(fake: FakeGcp, rig: Rig) -> None:
    live = rig.provisioner()
    plan = pools_only(gpu_pool(), cpu_pool())

    state = await live.ensure("team-nlp/mixed", plan, NOTHING_RECORDED)
    (first,) = created_names(fake)
    second = CPU_POOL if first == GPU_POOL else GPU_POOL
    assert states(state) == {first: "Provisioning", second: "Queued"}
    assert (state.node_pools.ready, state.node_pools.reason) == (False, REASON_PROVISIONING)

    state = await live.ensure("team-nlp/mixed", plan, recorded(state))  # still running: still queued
    assert states(state) == {first: "Provisioning", second: "Queued"}
    assert created_names(fake) == [first]

    fake.gke.complete_operations()
    state = await live.ensure("team-nlp/mixed", plan, recorded(state))
    assert states(state) == {first: "Running", second: "Provisioning"}
    assert created_names(fake) == [first, second]

    fake.gke.complete_operations()
    state = await live.ensure("team-nlp/mixed", plan, recorded(state))
    assert states(state) == {first: "Running", second: "Running"}
    assert state.node_pools.reason == REASON_PROVISIONED
    assert rpc_statuses(fake, "container", "CreateNodePool") == [200, 200]  # never answered 400 busy


@pytest.mark.parametrize("shape", ["error-info", "message-only"])
async def test_a_busy_cluster_is_waited_on_through_the_operation_gke_names(shape: str, fake: FakeGcp, rig: Rig) -> None:
    """GKE's busy answer names the operation holding the cluster: polled, and the create goes once it is done."""
    live = rig.provisioner()
    plan = pools_only(gpu_pool())
    fake.gke.busy_error_info = shape == "error-info"
    upgrade = fake.gke.start_operation(CLUSTER_PATH)  # an auto-upgrade the operator knows nothing about

    state = await live.ensure("team-nlp/a", plan, NOTHING_RECORDED)
    assert states(state) == {GPU_POOL: "Queued"}
    assert (state.node_pools.ready, state.node_pools.reason, state.node_pools.permanent) == (
        False,
        REASON_PROVISIONING,
        False,
    )
    assert upgrade in state.node_pools.message
    assert rpc_statuses(fake, "container", "CreateNodePool") == [400]

    mark = fake.mark()
    state = await live.ensure("team-nlp/a", plan, recorded(state))
    assert states(state) == {GPU_POOL: "Queued"}
    assert [call.path.rsplit("/", 1)[-1] for call in fake.calls("container", "GetOperation", since=mark)] == [upgrade]
    assert len(fake.calls("container", "CreateNodePool")) == 1  # not tried while the named operation runs

    fake.gke.complete_operation(upgrade)
    state = await live.ensure("team-nlp/a", plan, recorded(state))  # no clock advance: no blind backoff
    assert states(state) == {GPU_POOL: "Provisioning"}
    assert rpc_statuses(fake, "container", "CreateNodePool")[1:] == [200]
    fake.gke.complete_operations()
    state = await live.ensure("team-nlp/a", plan, recorded(state))
    assert states(state) == {GPU_POOL: "Running"}


async def test_too_many_operations_names_none_so_the_create_backs_off(fake: FakeGcp, rig: Rig) -> None:
    live = rig.provisioner()
    plan = pools_only(gpu_pool())
    too_many = ApiError(
        "RESOURCE_EXHAUSTED",
        f'Too many operations: cluster "{CLUSTER}" hits the concurrent operations quota 5, please try again later.',
    )
    fake.fail("container", "CreateNodePool", too_many)

    state = await live.ensure("team-nlp/a", plan, NOTHING_RECORDED)
    assert states(state) == {GPU_POOL: "Queued"}
    assert state.node_pools.reason == REASON_PROVISIONING
    assert rpc_statuses(fake, "container", "CreateNodePool") == [429]

    rig.clock.advance(BASE_DELAY - 1)
    state = await live.ensure("team-nlp/a", plan, recorded(state))
    assert states(state) == {GPU_POOL: "Queued"}  # the backoff has not run out
    assert len(fake.calls("container", "CreateNodePool")) == 1

    rig.clock.advance(1)
    state = await live.ensure("team-nlp/a", plan, recorded(state))
    assert states(state) == {GPU_POOL: "Provisioning"}
    assert rpc_statuses(fake, "container", "CreateNodePool")[1:] == [200]


def pool_status(report: PoolReport) -> NodePoolStatus:
    """The status entry a report becomes (what a restarted coordinator is handed back)."""
    return NodePoolStatus(name=report.name, capacity=Capacity.SPOT, state=report.state, operation=report.operation,
                          attempts=report.attempts, last_failure=str(report.failure) if report.failure else "",
                          next_attempt_time=report.next_attempt)  # fmt: skip


async def test_a_restarted_coordinator_resumes_the_recorded_operation(fake: FakeGcp, rig: Rig) -> None:
    plan = gpu_pool()
    before = await rig.coordinator().ensure(plan)
    assert before.state == "Provisioning"
    assert before.operation in fake.gke.operations

    restarted = rig.coordinator()
    mark = fake.mark()
    after = await restarted.ensure(plan, pool_status(before))
    assert (after.state, after.operation) == ("Provisioning", before.operation)
    polled = fake.calls("container", "GetOperation", since=mark)
    assert polled
    assert {call.path.rsplit("/", 1)[-1] for call in polled} == {before.operation}
    assert fake.calls("container", "CreateNodePool", since=mark) == []

    fake.gke.complete_operations()
    done = await restarted.ensure(plan, pool_status(before))
    assert done.state == "Running"
    assert len(fake.calls("container", "CreateNodePool")) == 1


async def test_a_restarted_provisioner_resumes_from_the_status_it_wrote(fake: FakeGcp, rig: Rig) -> None:
    plan = pools_only(gpu_pool(), cpu_pool())
    before = await rig.provisioner().ensure("team-nlp/a", plan, NOTHING_RECORDED)
    running = next(pool for pool in before.pools if pool.operation)

    restarted = rig.provisioner()
    after = await restarted.ensure("team-nlp/a", plan, recorded(before))
    # the adopted operation is the cluster's one operation again: the other pool keeps waiting for it
    assert states(after) == states(before)
    assert {pool.name: pool.operation for pool in after.pools}[running.name] == running.operation
    assert len(fake.calls("container", "CreateNodePool")) == 1
    assert rpc_statuses(fake, "container", "CreateNodePool") == [200]


async def stocked_out(fake: FakeGcp, live: LiveProvisioner, plan: GcpPlan, pool_state: str = "") -> GcpState:
    """The pool's creation ends in a stockout; the state the next pass reports."""
    failure = stockout() if not pool_state else dataclasses.replace(stockout(), pool_status=pool_state)
    fake.gke.fail_operations(failure)
    state = await live.ensure("team-nlp/a", plan, NOTHING_RECORDED)
    fake.gke.complete_operations()
    return await live.ensure("team-nlp/a", plan, recorded(state))


async def test_a_stockout_leaves_a_degraded_but_ready_pool_that_is_never_replaced(fake: FakeGcp, rig: Rig) -> None:
    """GKE keeps a stocked-out pool RUNNING_WITH_ERROR ("partially usable"): the autoscaler retries scale-ups
    itself, so the workload is not stalled and nothing is deleted to retry (that would hold the cluster)."""
    live = rig.provisioner()
    plan = pools_only(gpu_pool())
    state = await stocked_out(fake, live, plan)
    assert states(state) == {GPU_POOL: "Running"}
    assert (state.node_pools.ready, state.node_pools.reason, state.node_pools.permanent) == (
        True,
        REASON_PROVISIONED,
        False,
    )
    assert state.degraded is not None
    assert GPU_POOL in state.degraded
    assert "does not have enough resources" in state.degraded
    assert [pool.attempts for pool in state.pools] == [None]

    rig.clock.advance(MAX_DELAY * 10)
    state = await live.ensure("team-nlp/a", plan, recorded(state))
    assert state.node_pools.ready
    fake.gke.capacity_returned(CLUSTER_PATH, GPU_POOL)
    rig.clock.advance(1)  # past the describe cache (poll_seconds=0: every pass reads)
    state = await live.ensure("team-nlp/a", plan, recorded(state))
    assert (state.node_pools.ready, state.degraded) == (True, None)
    assert deleted_paths(fake) == []
    assert len(fake.calls("container", "CreateNodePool")) == 1


async def test_a_pool_left_in_error_by_its_create_is_replaced_after_the_backoff(fake: FakeGcp, rig: Rig) -> None:
    """The status hands the operator's own operation back on every pass; finishing it twice doubles the wait."""
    live = rig.provisioner()
    plan = pools_only(gpu_pool())
    state = await stocked_out(fake, live, plan, pool_state="ERROR")
    assert states(state) == {GPU_POOL: "Failed"}
    assert (state.node_pools.ready, state.node_pools.reason, state.node_pools.permanent) == (False, "Stockout", True)
    assert "attempt 1 failed; next attempt at" in state.node_pools.message
    [pool] = state.pools
    assert (pool.attempts, (pool.last_failure or "").split(":")[0]) == (1, "Stockout")

    rig.clock.advance(BASE_DELAY - 1)
    state = await live.ensure("team-nlp/a", plan, recorded(state))
    assert state.node_pools.reason == "Stockout"
    assert deleted_paths(fake) == []

    rig.clock.advance(1)
    state = await live.ensure("team-nlp/a", plan, recorded(state))
    assert deleted_paths(fake) == [f"/v1/{CLUSTER_PATH}/nodePools/{GPU_POOL}"]
    assert state.node_pools.reason == "Stockout"  # the same series: conditions do not flip while it retries
    fake.gke.complete_operations()  # the deletion

    state = await live.ensure("team-nlp/a", plan, recorded(state))
    assert states(state) == {GPU_POOL: "Provisioning"}
    assert (state.node_pools.reason, state.node_pools.permanent) == ("Stockout", True)
    assert "attempt 2:" in state.node_pools.message
    assert created_names(fake) == [GPU_POOL, GPU_POOL]
    fake.gke.complete_operations()
    state = await live.ensure("team-nlp/a", plan, recorded(state))
    assert states(state) == {GPU_POOL: "Running"}
    assert state.node_pools.reason == REASON_PROVISIONED
    assert [(pool.attempts, pool.last_failure, pool.next_attempt_time) for pool in state.pools] == [(None, None, None)]


async def test_a_pool_left_failed_is_classified_from_its_status_after_a_restart(fake: FakeGcp, rig: Rig) -> None:
    """The operation is gone (GKE expires them); the pool's status message still says why it failed."""
    plan = gpu_pool()
    fake.gke.fail_operations(dataclasses.replace(stockout(), pool_status="ERROR"))
    before = await rig.coordinator().ensure(plan)
    fake.gke.complete_operations()
    expired = ApiError("NOT_FOUND", f"Not found: projects/{PROJECT}/locations/{LOCATION}/operations/x.")
    fake.fail("container", "GetOperation", expired)

    report = await rig.coordinator().ensure(plan, pool_status(before))
    assert report.state == "Failed"
    assert report.failure is not None
    assert report.failure.kind is FailureKind.STOCKOUT
    assert report.failure.stalls


async def test_an_operation_gke_no_longer_knows_does_not_block_the_cluster(fake: FakeGcp, rig: Rig) -> None:
    coordinator = rig.coordinator()
    started = await coordinator.ensure(gpu_pool())
    gone = ApiError("NOT_FOUND", f"Not found: projects/{PROJECT}/locations/{LOCATION}/operations/{started.operation}.")
    fake.fail("container", "GetOperation", gone)

    report = await coordinator.ensure(gpu_pool())
    assert (report.state, report.failure) == ("Provisioning", None)  # the pool itself says PROVISIONING
    fake.gke.complete_operations()
    assert (await coordinator.ensure(cpu_pool())).state == "Provisioning"  # no longer queued behind a lost operation
    assert (await coordinator.ensure(gpu_pool())).state == "Running"
    assert created_names(fake) == [GPU_POOL, CPU_POOL]


@pytest.mark.parametrize(
    ("inject", "reason", "stalled"),
    [
        pytest.param(lambda f: f.fail("container", "CreateNodePool", quota_exceeded_at_create(PROJECT, "NVIDIA_L4_GPUS",
                     8.0, 8.0, 0.0)), "QuotaExceeded", True, id="quota-403"),
        pytest.param(lambda f: f.fail("container", "CreateNodePool", permission_denied("container.clusters.update",
                     CLUSTER_PATH)), "PermissionDenied", True, id="permission-denied"),
        pytest.param(lambda f: setattr(f.gke, "known_machine_types", frozenset({"n2-standard-8"})), "InvalidRequest",
                     True, id="invalid-machine-type"),
        pytest.param(lambda f: f.fail("container", "CreateNodePool", unavailable()), "GcpUnavailable", False,
                     id="unavailable-503"),
    ],
)  # fmt: skip
async def test_a_refused_create_is_reported_and_retried_after_the_backoff(
    inject: Callable[[FakeGcp], object], reason: str, stalled: bool, fake: FakeGcp, rig: Rig
) -> None:
    live = rig.provisioner()
    plan = pools_only(gpu_pool())
    inject(fake)
    counted = api_errors("container", reason)
    state = await live.ensure("team-nlp/a", plan, NOTHING_RECORDED)
    assert states(state) == {GPU_POOL: "Failed"}
    assert (state.node_pools.ready, state.node_pools.reason, state.node_pools.permanent) == (False, reason, stalled)
    assert fake.gke.operations == {}
    assert api_errors("container", reason) == counted + 1

    rig.clock.advance(BASE_DELAY - 1)
    state = await live.ensure("team-nlp/a", plan, recorded(state))
    assert state.node_pools.reason == reason
    assert len(fake.calls("container", "CreateNodePool")) == 1  # not hammered while backing off

    rig.clock.advance(1)
    await live.ensure("team-nlp/a", plan, recorded(state))
    assert len(fake.calls("container", "CreateNodePool")) == 2


async def test_a_pool_of_our_name_that_we_did_not_create_is_reported_and_never_touched(fake: FakeGcp, rig: Rig) -> None:
    live = rig.provisioner()
    plan = pools_only(gpu_pool())
    fake.gke.put_node_pool(CLUSTER_PATH, {"name": GPU_POOL, "config": {"machineType": "g2-standard-8"}})

    state = await live.ensure("team-nlp/a", plan, NOTHING_RECORDED)
    assert states(state) == {GPU_POOL: "Failed"}
    assert (state.node_pools.reason, state.node_pools.permanent) == ("InvalidRequest", True)
    assert "not created by mlworkload" in state.node_pools.message

    await live.release("team-nlp/a", recorded(state))
    assert await live.collect() == []
    rig.clock.advance(GRACE * 10)
    assert await live.collect() == []
    assert fake.calls("container", ["CreateNodePool", "DeleteNodePool"]) == []
    assert fake.gke.node_pool(CLUSTER_PATH, GPU_POOL) is not None


# --- node pools: release by reference count and grace period -------------------------------------------


async def test_a_pool_is_deleted_only_after_its_last_user_left_and_the_grace_ran_out(fake: FakeGcp, rig: Rig) -> None:
    live = rig.provisioner()
    plan = pools_only(gpu_pool())
    fake.gke.put_node_pool(CLUSTER_PATH, {"name": "hand-made", "config": {"machineType": "e2-standard-4"}})
    fake.gke.put_node_pool(CLUSTER_PATH, managed_pool("mlw-e2-standard-4-spot"))
    in_status_only = Recorded(pools=[NodePoolStatus(name="mlw-e2-standard-4-spot", capacity=Capacity.SPOT)])

    a = await live.ensure("team-nlp/a", plan, NOTHING_RECORDED)
    b = await live.ensure("team-nlp/b", plan, NOTHING_RECORDED)
    fake.gke.complete_operations()
    a = await live.ensure("team-nlp/a", plan, recorded(a))
    b = await live.ensure("team-nlp/b", plan, recorded(b))
    assert states(a) == states(b) == {GPU_POOL: "Running"}
    rig.claims.owners = {"team-nlp/a": recorded(a), "team-nlp/b": recorded(b), "team-cv/c": in_status_only}

    del rig.claims.owners["team-nlp/a"]  # a is being deleted: no longer a live workload
    await live.release("team-nlp/a", recorded(a))
    assert await live.collect() == []
    rig.clock.advance(GRACE * 10)
    assert await live.collect() == []

    del rig.claims.owners["team-nlp/b"]
    await live.release("team-nlp/b", recorded(b))
    assert await live.collect() == []  # the grace period starts now
    rig.clock.advance(GRACE - 1)
    assert await live.collect() == []
    assert deleted_paths(fake) == []

    rig.clock.advance(1)
    assert await live.collect() == [GPU_POOL]
    assert deleted_paths(fake) == [f"/v1/{CLUSTER_PATH}/nodePools/{GPU_POOL}"]
    assert await live.collect() == []  # deleting already
    fake.gke.complete_operations()
    rig.clock.advance(GRACE * 10)
    assert await live.collect() == []
    assert len(fake.calls("container", "DeleteNodePool")) == 1
    assert sorted(pool["name"] for pool in fake.gke.node_pools(CLUSTER_PATH)) == ["hand-made", "mlw-e2-standard-4-spot"]


async def test_a_new_claim_during_the_grace_period_starts_it_again(fake: FakeGcp, rig: Rig) -> None:
    live = rig.provisioner()
    plan = pools_only(gpu_pool())
    a = await live.ensure("team-nlp/a", plan, NOTHING_RECORDED)
    fake.gke.complete_operations()
    a = await live.ensure("team-nlp/a", plan, recorded(a))
    await live.release("team-nlp/a", recorded(a))
    assert await live.collect() == []  # unclaimed from here
    rig.clock.advance(GRACE - 1)

    b = await live.ensure("team-nlp/b", plan, NOTHING_RECORDED)
    assert states(b) == {GPU_POOL: "Running"}
    await live.release("team-nlp/b", recorded(b))
    assert await live.collect() == []  # and from here again
    rig.clock.advance(1)
    assert await live.collect() == []  # a's grace would have run out now
    rig.clock.advance(GRACE - 1)
    assert await live.collect() == [GPU_POOL]


async def test_a_pool_claimed_again_while_being_deleted_is_created_again(fake: FakeGcp, rig: Rig) -> None:
    live = rig.provisioner()
    plan = pools_only(gpu_pool())
    fake.gke.put_node_pool(CLUSTER_PATH, managed_pool(GPU_POOL))
    assert await live.collect() == []
    rig.clock.advance(GRACE)
    assert await live.collect() == [GPU_POOL]

    state = await live.ensure("team-nlp/late", plan, NOTHING_RECORDED)
    assert states(state) == {GPU_POOL: "Deleting"}
    assert state.node_pools.reason == REASON_PROVISIONING
    fake.gke.complete_operations()
    state = await live.ensure("team-nlp/late", plan, recorded(state))
    assert states(state) == {GPU_POOL: "Provisioning"}
    assert created_names(fake) == [GPU_POOL]


async def test_a_release_that_keeps_pools_revokes_identity_only(fake: FakeGcp, rig: Rig) -> None:
    """A workload its policy now refuses loses its GCP access at once; its Ray pods may still run on the pool."""
    live = rig.provisioner()
    plan = GcpPlan(node_pools=[gpu_pool()], iam_bindings=identity_plan().iam_bindings)
    state = await live.ensure("team-nlp/demo", plan, NOTHING_RECORDED)
    fake.gke.complete_operations()
    state = await live.ensure("team-nlp/demo", plan, recorded(state))
    assert states(state) == {GPU_POOL: "Running"}
    assert fake.iam.members(GSA, WI_USER) == [ksa("demo")]  # granted by the second pass, after the intent

    await live.release("team-nlp/demo", recorded(state), keep_pools=True)
    assert fake.iam.members(GSA, WI_USER) == []
    assert fake.storage.members(BUCKET, OBJECT_USER) == []
    assert await live.collect() == []
    rig.clock.advance(GRACE * 10)
    assert await live.collect() == []

    await live.release("team-nlp/demo", Recorded(pools=state.pools))
    assert await live.collect() == []
    rig.clock.advance(GRACE)
    assert await live.collect() == [GPU_POOL]


async def test_after_a_restart_pools_claimed_in_status_are_kept(fake: FakeGcp, rig: Rig) -> None:
    fake.gke.put_node_pool(CLUSTER_PATH, managed_pool(GPU_POOL))
    fake.gke.put_node_pool(CLUSTER_PATH, managed_pool(CPU_POOL))
    rig.claims.owners = {"team-nlp/a": Recorded(pools=[NodePoolStatus(name=GPU_POOL, capacity=Capacity.SPOT)])}
    live = rig.provisioner()  # fresh memory: nothing ensured in this process
    assert await live.collect() == []
    rig.clock.advance(GRACE)
    assert await live.collect() == []  # team-nlp/a has not been reconciled since the start: nothing goes yet
    rig.clock.advance(STARTUP_SETTLE_SECONDS)  # one that never reaches GCP must not keep unused pools forever
    assert await live.collect() == [CPU_POOL]
    assert deleted_paths(fake) == [f"/v1/{CLUSTER_PATH}/nodePools/{CPU_POOL}"]


async def test_a_pool_made_just_before_a_crash_survives_until_its_workload_is_heard_from(
    fake: FakeGcp, rig: Rig
) -> None:
    """The process that created the pool died before the status write: the status records nothing, and only the
    workload's next reconcile claims the pool. The collector waits for it (a chaos trial lost pools this way)."""
    fake.gke.put_node_pool(CLUSTER_PATH, managed_pool(GPU_POOL))
    rig.claims.owners = {"team-nlp/a": NOTHING_RECORDED}
    live = rig.provisioner()
    assert await live.collect() == []
    rig.clock.advance(GRACE * 1.1)
    assert await live.collect() == []
    state = await live.ensure("team-nlp/a", pools_only(gpu_pool()), NOTHING_RECORDED)
    assert states(state) == {GPU_POOL: "Running"}
    rig.clock.advance(STARTUP_SETTLE_SECONDS)
    assert await live.collect() == []
    assert deleted_paths(fake) == []


# --- node pools: a fleet shared by installations ---------------------------------------------------------

OTHER = "ml-research"  # a second installation of the operator on the same GKE cluster


def pool_labels(fake: FakeGcp, name: str) -> dict[str, str]:
    pool = fake.gke.node_pool(CLUSTER_PATH, name)
    assert pool is not None
    labels: dict[str, str] = pool["config"].get("resourceLabels", {})
    return labels


def updates(fake: FakeGcp, since: int = 0) -> list[Any]:
    return fake.calls("container", ["UpdateNodePool", "SetNodePoolAutoscaling"], since)


async def running(fake: FakeGcp, live: LiveProvisioner, owner: str, plan: GcpPlan) -> GcpState:
    """Ensure, finishing GKE operations, until the pools run and no operation of this owner's is left."""
    state = await live.ensure(owner, plan, NOTHING_RECORDED)
    for _ in range(6):
        if state.node_pools.ready and not any(pool.operation for pool in state.pools):
            return state
        fake.gke.complete_operations()
        state = await live.ensure(owner, plan, recorded(state))
    raise AssertionError(f"{owner}: pools not running: {state}")


async def test_an_installation_never_deletes_a_pool_another_installation_claims(fake: FakeGcp, rig: Rig) -> None:
    """The creator labels its pool; a second installation using it adds its claim label; the creator's collector
    leaves the pool alone until that claim is gone, and only then deletes it, once."""
    ours, theirs = rig.provisioner(), rig.provisioner(OTHER, claims=Claims())
    plan = pools_only(gpu_pool())
    a = await running(fake, ours, "team-nlp/a", plan)
    assert pool_labels(fake, GPU_POOL)["mlworkload-installation"] == INSTALLATION
    assert updates(fake) == []  # the creator's own label came with the create: no update needed

    b = await running(fake, theirs, "research/b", plan)
    assert states(b) == {GPU_POOL: "Running"}
    [claim] = updates(fake)
    assert claim.rpc == "UpdateNodePool"
    assert pool_labels(fake, GPU_POOL)[claim_label(OTHER)] == OTHER
    assert pool_labels(fake, GPU_POOL)["mlworkload-installation"] == INSTALLATION  # still the creator's
    assert claim.body["etag"]  # a read-modify-write that a concurrent change makes fail, not overwrite

    await ours.release("team-nlp/a", recorded(a))
    assert await ours.collect() == []
    rig.clock.advance(GRACE * 10)
    assert await ours.collect() == []  # ours, unused by us, but claimed by the other installation
    assert await theirs.collect() == []  # the other installation still uses it: keeps its claim
    assert deleted_paths(fake) == []

    await theirs.release("research/b", recorded(b))
    assert await theirs.collect() == []
    rig.clock.advance(GRACE)
    assert await theirs.collect() == []  # never deletes another installation's pool: drops its claim instead
    fake.gke.complete_operations()
    assert claim_label(OTHER) not in pool_labels(fake, GPU_POOL)
    assert deleted_paths(fake) == []

    rig.clock.advance(1)
    assert await ours.collect() == [GPU_POOL]
    fake.gke.complete_operations()
    rig.clock.advance(GRACE * 10)
    assert await ours.collect() == []
    assert await theirs.collect() == []
    assert deleted_paths(fake) == [f"/v1/{CLUSTER_PATH}/nodePools/{GPU_POOL}"]


async def test_a_claim_landing_between_the_listing_and_the_delete_keeps_the_pool(fake: FakeGcp, rig: Rig) -> None:
    """DeleteNodePool has no etag: the collector reads the pool again just before deleting it."""
    fake.gke.put_node_pool(CLUSTER_PATH, managed_pool(GPU_POOL))
    ours = rig.provisioner()
    assert await ours.collect() == []
    rig.clock.advance(GRACE)
    claimed = {**pool_labels(fake, GPU_POOL), claim_label(OTHER): OTHER}
    landed: list[bool] = []

    def claim_lands(_: Request) -> bool:  # runs as the re-read arrives, after the listing was answered
        if not landed:
            landed.append(True)
            with fake.gke.lock:
                fake.gke.clusters[CLUSTER_PATH].node_pools[GPU_POOL]["config"]["resourceLabels"] = claimed
        return False

    fake.fail("container", "GetNodePool", ApiError("INTERNAL", "never sent"), times=None, when=claim_lands)
    assert await ours.collect() == []
    assert landed == [True]
    assert deleted_paths(fake) == []
    rig.clock.advance(GRACE * 10)
    assert await ours.collect() == []  # and never while the claim stays
    assert deleted_paths(fake) == []


async def test_a_pool_made_before_installations_is_adopted_by_its_user_and_otherwise_never_deleted(
    fake: FakeGcp, rig: Rig
) -> None:
    fake.gke.put_node_pool(CLUSTER_PATH, managed_pool(GPU_POOL, installation=None))
    fake.gke.put_node_pool(CLUSTER_PATH, managed_pool(CPU_POOL, installation=None))
    live = rig.provisioner()
    a = await running(fake, live, "team-nlp/a", pools_only(gpu_pool()))
    assert pool_labels(fake, GPU_POOL)["mlworkload-installation"] == INSTALLATION  # adopted by its user
    assert "mlworkload-installation" not in pool_labels(fake, CPU_POOL)

    await live.release("team-nlp/a", recorded(a))
    assert await live.collect() == []
    rig.clock.advance(GRACE)
    assert await live.collect() == [GPU_POOL]  # adopted: ours to release
    fake.gke.complete_operations()
    rig.clock.advance(GRACE * 10)
    assert await live.collect() == []
    assert fake.gke.node_pool(CLUSTER_PATH, CPU_POOL) is not None  # nobody here used it: never ours to delete


async def test_a_policy_change_after_creation_makes_exactly_one_update_and_the_pool_follows(
    fake: FakeGcp, rig: Rig
) -> None:
    live = rig.provisioner()
    six = pools_only(gpu_pool().model_copy(update={"max_nodes": 6}))
    state = await running(fake, live, "team-nlp/a", six)
    assert updates(fake) == []

    two = pools_only(gpu_pool().model_copy(update={"max_nodes": 2}))
    state = await live.ensure("team-nlp/a", two, recorded(state))
    assert state.node_pools.ready  # the pool works while it is updated
    assert "at most 2 node(s)" in state.node_pools.message or any(pool.operation for pool in state.pools)
    state = await live.ensure("team-nlp/a", two, recorded(state))  # the update still runs: nothing more
    fake.gke.complete_operations()
    for _ in range(3):
        state = await live.ensure("team-nlp/a", two, recorded(state))
    [update] = updates(fake)
    assert (update.rpc, update.body["autoscaling"]["totalMaxNodeCount"]) == ("SetNodePoolAutoscaling", 2)
    pool = fake.gke.node_pool(CLUSTER_PATH, GPU_POOL)
    assert pool is not None
    assert pool["autoscaling"]["totalMaxNodeCount"] == 2


async def test_the_strictest_workload_wins_and_zones_are_intersected(fake: FakeGcp, rig: Rig) -> None:
    live = rig.provisioner()
    zones_ab = gpu_pool().model_copy(update={"max_nodes": 6, "locations": [f"{LOCATION}-a", f"{LOCATION}-b"]})
    zones_bc = gpu_pool().model_copy(update={"max_nodes": 3, "locations": [f"{LOCATION}-b", f"{LOCATION}-c"]})
    await running(fake, live, "team-nlp/a", pools_only(zones_ab))
    state = await live.ensure("team-nlp/b", pools_only(zones_bc), NOTHING_RECORDED)
    for _ in range(6):
        fake.gke.complete_operations()
        state = await live.ensure("team-nlp/b", pools_only(zones_bc), recorded(state))
        await live.ensure("team-nlp/a", pools_only(zones_ab), NOTHING_RECORDED)
    pool = fake.gke.node_pool(CLUSTER_PATH, GPU_POOL)
    assert pool is not None
    assert (pool["autoscaling"]["totalMaxNodeCount"], pool["locations"]) == (3, [f"{LOCATION}-b"])
    assert [call.rpc for call in updates(fake)] == ["SetNodePoolAutoscaling", "UpdateNodePool"]

    apart = gpu_pool().model_copy(update={"max_nodes": 3, "locations": [f"{LOCATION}-c"]})  # a wants a or b
    state = await live.ensure("team-nlp/b", pools_only(apart), recorded(state))
    assert "no zone in common" in state.node_pools.message
    assert len(updates(fake)) == 2  # zones kept, and said so


# --- node settings from the policy -------------------------------------------------------------------------

NODE_SA = NODE_SETTINGS["serviceAccount"]
PROVISIONING_MODEL = "goog-gke-node-pool-provisioning-model"  # GKE's own label on the pools it creates


def settings_pool(settings: dict[str, Any] | None = None, *, admitted: bool = True, **changes: Any) -> NodePoolPlan:
    """The GPU pool as the builder plans it under a policy with these node settings (`admitted`: whether
    admission lets the workload through; a refused one still gets a plan, to put GKE's own answer to test)."""
    rules = permissive_policy().set("nodePools", {**NODE_SETTINGS, **changes} if settings is None else settings)
    doc = workload().gpu_group(capacity="Spot")
    (pool,) = build_gcp_plan(resolved(doc, rules, admitted=admitted)).node_pools
    assert pool.name == GPU_POOL  # settings never rename a pool
    return pool


def stored_config(fake: FakeGcp) -> dict[str, Any]:
    pool = fake.gke.node_pool(CLUSTER_PATH, GPU_POOL)
    assert pool is not None
    config: dict[str, Any] = pool["config"]
    return config


async def settle(fake: FakeGcp, live: LiveProvisioner, plan: GcpPlan, state: GcpState, passes: int = 8) -> GcpState:
    """Reconcile until nothing is under way, finishing each GKE operation as it starts."""
    for _ in range(passes):
        state = await live.ensure("team-nlp/a", plan, recorded(state))
        if not fake.gke.active_operations():
            return state
        fake.gke.complete_operations()
    raise AssertionError(f"still busy: {state}")


async def test_a_pool_is_created_with_the_policys_node_settings_and_nothing_is_written_again(
    fake: FakeGcp, rig: Rig
) -> None:
    live = rig.provisioner()
    plan = pools_only(settings_pool())
    state = await running(fake, live, "team-nlp/a", plan)
    [create] = fake.calls("container", "CreateNodePool")
    sent = create.body["nodePool"]["config"]
    assert sent["serviceAccount"] == NODE_SA
    assert sent["oauthScopes"] == ["https://www.googleapis.com/auth/cloud-platform"]
    config = stored_config(fake)
    assert (config["serviceAccount"], config["diskType"], config["diskSizeGb"], config["imageType"]) == (
        NODE_SA, "pd-ssd", 200, "COS_CONTAINERD")  # fmt: skip
    assert config["shieldedInstanceConfig"] == {"enableSecureBoot": True, "enableIntegrityMonitoring": True}
    assert config["gcfsConfig"] == {"enabled": True}
    labels = config["resourceLabels"]
    assert (labels["cost-center"], labels["team"]) == ("cc-1234", "nlp")
    assert labels["mlworkload-installation"] == INSTALLATION
    assert labels[PROVISIONING_MODEL] == "spot"  # added by GKE, kept by the operator

    mark = fake.mark()
    for _ in range(3):
        state = await live.ensure("team-nlp/a", plan, recorded(state))
    assert state.node_pools.ready
    assert state.node_pools.message == "1 node pool(s) running"
    assert fake.calls("container", ["CreateNodePool", "UpdateNodePool", "SetNodePoolAutoscaling"], mark) == []


async def test_a_changed_label_is_updated_once_keeping_the_operators_and_gkes(fake: FakeGcp, rig: Rig) -> None:
    live = rig.provisioner()
    state = await running(fake, live, "team-nlp/a", pools_only(settings_pool()))
    reserved = {key: value for key, value in stored_config(fake)["resourceLabels"].items()
                if key.startswith(("managed-by", "mlworkload-", "goog-"))}  # fmt: skip

    relabelled = pools_only(settings_pool(resourceLabels={"team": "nlp-research", "env": "prod"}))
    state = await live.ensure("team-nlp/a", relabelled, recorded(state))
    assert state.node_pools.ready  # the pool works while it is relabelled
    assert "setting its GCP labels (cost-center, env, team)" in state.node_pools.message
    state = await settle(fake, live, relabelled, state)
    [update] = updates(fake)
    assert update.rpc == "UpdateNodePool"
    assert update.body["etag"]
    wanted = {**reserved, "team": "nlp-research", "env": "prod"}
    assert update.body["resourceLabels"] == {"labels": wanted}
    assert stored_config(fake)["resourceLabels"] == wanted

    mark = fake.mark()
    for _ in range(3):
        state = await live.ensure("team-nlp/a", relabelled, recorded(state))
    assert updates(fake, mark) == []
    assert state.node_pools.message == "1 node pool(s) running"


async def test_image_streaming_image_and_disks_follow_the_policy_one_operation_at_a_time(
    fake: FakeGcp, rig: Rig
) -> None:
    live = rig.provisioner()
    ubuntu = pools_only(settings_pool({"imageType": "UBUNTU_CONTAINERD", "imageStreaming": False}))
    state = await running(fake, live, "team-nlp/a", ubuntu)
    assert stored_config(fake)["imageType"] == "UBUNTU_CONTAINERD"

    streaming = pools_only(settings_pool({"imageType": "COS_CONTAINERD", "imageStreaming": True,
                                          "diskType": "pd-ssd", "diskSizeGb": 200}))  # fmt: skip
    state = await settle(fake, live, streaming, state)
    made = [(call.body.get("imageType"), call.body.get("gcfsConfig"), call.body.get("diskType"),
             call.body.get("diskSizeGb")) for call in updates(fake)]  # fmt: skip
    # The image first (GKE streams only to COS nodes), then streaming, then the disks: one operation each
    # (diskSizeGb is an int64 in UpdateNodePoolRequest: a JSON string on the wire).
    assert made == [("COS_CONTAINERD", None, None, None), ("COS_CONTAINERD", {"enabled": True}, None, None),
                    ("COS_CONTAINERD", None, "pd-ssd", "200")]  # fmt: skip
    config = stored_config(fake)
    assert (config["imageType"], config["gcfsConfig"], config["diskType"], config["diskSizeGb"]) == (
        "COS_CONTAINERD", {"enabled": True}, "pd-ssd", 200)  # fmt: skip

    back = pools_only(settings_pool({"imageType": "UBUNTU_CONTAINERD", "imageStreaming": False}))
    mark = fake.mark()
    state = await settle(fake, live, back, state)
    made = [(call.body.get("imageType"), call.body.get("gcfsConfig")) for call in updates(fake, mark)]
    assert made == [("COS_CONTAINERD", {}), ("UBUNTU_CONTAINERD", None)]  # streaming off first, then the image
    mark = fake.mark()
    await settle(fake, live, back, state)
    assert updates(fake, mark) == []


async def test_a_new_service_account_is_reported_and_applies_when_the_pool_is_created_again(
    fake: FakeGcp, rig: Rig
) -> None:
    live = rig.provisioner()
    state = await running(fake, live, "team-nlp/a", pools_only(settings_pool({})))
    assert stored_config(fake)["serviceAccount"] == "default"

    hardened = pools_only(settings_pool({"serviceAccount": NODE_SA, "secureBoot": True}))
    mark = fake.mark()
    for _ in range(3):
        state = await live.ensure("team-nlp/a", hardened, recorded(state))
    assert updates(fake, mark) == []  # GKE changes neither in place
    assert state.node_pools.ready
    assert (f"its nodes run as the Compute Engine default service account, not {NODE_SA} and Secure Boot is off:"
            " GKE sets these when it creates a pool" in state.node_pools.message)  # fmt: skip

    fake.gke.remove_node_pool(CLUSTER_PATH, GPU_POOL)  # deleted by hand: created again, as the policy says
    state = await running(fake, live, "team-nlp/a", hardened)
    config = stored_config(fake)
    assert (config["serviceAccount"], config["shieldedInstanceConfig"]["enableSecureBoot"]) == (NODE_SA, True)
    assert state.node_pools.message == "1 node pool(s) running"


async def test_workloads_whose_policies_disagree_keep_what_the_pool_has_and_say_so(fake: FakeGcp, rig: Rig) -> None:
    """Two policies sharing pools by shape (`sharing: Cluster`) with different settings: what they agree on is
    applied, what they disagree on is kept as the first one created it."""
    live = rig.provisioner()
    first = settings_pool({"resourceLabels": {"team": "nlp", "cost-center": "a"}, "diskSizeGb": 100})
    second = settings_pool({"resourceLabels": {"team": "nlp", "cost-center": "b"}, "diskSizeGb": 300})
    await running(fake, live, "team-nlp/a", pools_only(first))
    mark = fake.mark()
    state = await live.ensure("team-cv/b", pools_only(second), NOTHING_RECORDED)
    for _ in range(3):
        state = await live.ensure("team-cv/b", pools_only(second), recorded(state))
    assert updates(fake, mark) == []
    config = stored_config(fake)
    assert (config["resourceLabels"]["cost-center"], config["diskSizeGb"]) == ("a", 100)
    message = state.node_pools.message
    assert "disagree on GCP labels cost-center, so those are kept" in message
    assert "want different disk sizes, so its disk size is kept" in message


async def test_a_disk_type_the_machine_cannot_boot_from_is_gkes_refusal_reported_on_the_pool(
    fake: FakeGcp, rig: Rig
) -> None:
    live = rig.provisioner()
    # Admission refuses this workload (policy.checks.check_boot_disk): GKE's refusal is what a machine series
    # the operator's table does not know, or a policy changed under a running workload, still meets.
    plan = pools_only(settings_pool({"diskType": "pd-standard"}, admitted=False))
    state = await live.ensure("team-nlp/a", plan, NOTHING_RECORDED)
    assert rpc_statuses(fake, "container", "CreateNodePool") == [400]
    assert states(state) == {GPU_POOL: "Failed"}
    assert state.node_pools.reason == FailureKind.INVALID.value
    assert "pd-standard disk type cannot be used by g2-standard-8 machine type" in state.node_pools.message


async def test_a_pool_deleted_by_hand_makes_its_users_due_at_the_next_poll(fake: FakeGcp, rig: Rig) -> None:
    """The collector's listing notices at once; the workload is due for a reconcile long before any resync."""
    live = rig.provisioner()
    plan = pools_only(gpu_pool())
    state = await running(fake, live, "team-nlp/a", plan)
    rig.claims.owners = {"team-nlp/a": recorded(state)}
    assert await live.collect() == []
    assert not live.due("team-nlp/a")

    fake.gke.delete_node_pool_by_hand(CLUSTER_PATH, GPU_POOL)
    assert await live.collect() == []  # one poll later, no clock advance at all
    assert live.due("team-nlp/a")
    assert live.lost_users == {"team-nlp/a"}
    assert not live.due("team-nlp/other")

    state = await live.ensure("team-nlp/a", plan, recorded(state))
    assert not live.due("team-nlp/a")
    assert states(state) == {GPU_POOL: "Deleting"}
    fake.gke.complete_operations()
    state = await running(fake, live, "team-nlp/a", plan)
    assert created_names(fake) == [GPU_POOL, GPU_POOL]
    assert deleted_paths(fake) == []  # the operator deleted nothing itself


async def test_a_failed_create_series_survives_a_restart_and_recovers_when_capacity_returns(
    fake: FakeGcp, rig: Rig
) -> None:
    plan = pools_only(gpu_pool())
    gone = dataclasses.replace(stockout(), keep_pool=False)  # GKE removed the pool it could not fill
    fake.gke.fail_operations(gone, times=2)
    before = rig.provisioner()
    state = await before.ensure("team-nlp/a", plan, NOTHING_RECORDED)
    fake.gke.complete_operations()
    state = await before.ensure("team-nlp/a", plan, recorded(state))
    assert (state.node_pools.reason, state.node_pools.permanent) == ("Stockout", True)
    [pool] = state.pools
    assert pool.attempts == 1
    assert pool.next_attempt_time is not None

    restarted = rig.provisioner()  # fresh memory: only the status knows of the series
    state = await restarted.ensure("team-nlp/a", plan, recorded(state))
    assert (state.node_pools.reason, [p.attempts for p in state.pools]) == ("Stockout", [1])
    assert len(fake.calls("container", "CreateNodePool")) == 1  # the recorded next attempt is honoured
    rig.clock.advance(BASE_DELAY)
    state = await restarted.ensure("team-nlp/a", plan, recorded(state))
    assert state.node_pools.reason == "Stockout"  # the retry runs under the same reason
    fake.gke.complete_operations()
    state = await restarted.ensure("team-nlp/a", plan, recorded(state))
    assert [p.attempts for p in state.pools] == [2]
    assert "attempt 2 failed" in state.node_pools.message

    rig.clock.advance(2 * BASE_DELAY)  # capacity is back: no failure queued any more
    state = await restarted.ensure("team-nlp/a", plan, recorded(state))
    fake.gke.complete_operations()
    state = await restarted.ensure("team-nlp/a", plan, recorded(state))
    assert (state.node_pools.ready, [p.attempts for p in state.pools]) == (True, [None])
    assert len(fake.calls("container", "CreateNodePool")) == 3


async def test_a_failed_create_series_keeps_its_reason_through_a_passing_503(fake: FakeGcp, rig: Rig) -> None:
    """Argo CD must not see Degraded <-> Progressing: NodePoolsReady and Stalled hold still across the retries."""
    live = rig.provisioner()
    plan = pools_only(gpu_pool())
    fake.gke.fail_operations(dataclasses.replace(stockout(), keep_pool=False))
    state = await live.ensure("team-nlp/a", plan, NOTHING_RECORDED)
    fake.gke.complete_operations()
    seen = [await live.ensure("team-nlp/a", plan, recorded(state))]
    rig.clock.advance(BASE_DELAY)
    fake.fail("container", "CreateNodePool", unavailable())
    seen.append(await live.ensure("team-nlp/a", plan, recorded(seen[-1])))  # the retry meets a 503
    rig.clock.advance(MAX_DELAY)
    seen.append(await live.ensure("team-nlp/a", plan, recorded(seen[-1])))  # the next retry is under way
    assert [(s.node_pools.ready, s.node_pools.reason, s.node_pools.permanent) for s in seen] == [
        (False, "Stockout", True)
    ] * 3
    assert "meanwhile GcpUnavailable" in seen[1].node_pools.message
    assert [p.attempts for s in seen for p in s.pools] == [1, 2, 2]
    assert states(seen[2]) == {GPU_POOL: "Provisioning"}
    fake.gke.complete_operations()
    done = await live.ensure("team-nlp/a", plan, recorded(seen[-1]))
    assert (done.node_pools.ready, done.node_pools.reason) == (True, REASON_PROVISIONED)


async def test_a_forged_failure_record_never_deletes_a_pool_another_workload_ran_on(fake: FakeGcp, rig: Rig) -> None:
    """Status is writable by users: "my create failed" on a pool in ERROR must not delete one others used."""
    fake.gke.put_node_pool(CLUSTER_PATH, managed_pool(GPU_POOL), status="ERROR")
    ran = NodePoolStatus(name=GPU_POOL, capacity=Capacity.SPOT, state="Running")
    rig.claims.owners = {"team-cv/c": Recorded(pools=[ran])}
    forged = NodePoolStatus(name=GPU_POOL, capacity=Capacity.SPOT, state="Failed", attempts=5,
                            last_failure="Stockout: no room", next_attempt_time="1970-01-01T00:00:00Z")  # fmt: skip
    live = rig.provisioner()
    for _ in range(3):
        rig.clock.advance(MAX_DELAY * 2)
        state = await live.ensure("team-nlp/forger", pools_only(gpu_pool()), Recorded(pools=[forged]))
        assert states(state) == {GPU_POOL: "Failed"}
    assert deleted_paths(fake) == []

    rig.claims.owners = {}  # nobody else ever ran there: the record may be believed, the pool never worked
    rig.clock.advance(MAX_DELAY * 2)
    await live.ensure("team-nlp/forger", pools_only(gpu_pool()), Recorded(pools=[forged]))
    assert deleted_paths(fake) == [f"/v1/{CLUSTER_PATH}/nodePools/{GPU_POOL}"]


# --- IAM bindings ---------------------------------------------------------------------------------------


def seed_other_members(fake: FakeGcp) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """Members and roles someone else granted; returns (GSA, bucket) role -> members to compare with."""
    fake.iam.set_bindings(
        GSA,
        [
            {"role": WI_USER, "members": [ksa("ray-cv", "team-cv")]},
            {"role": TOKEN_CREATOR, "members": ["group:ml-admins@example.com"]},
        ],
    )
    bucket = fake.storage.policy(BUCKET)["bindings"]
    bucket.append({"role": "roles/storage.objectViewer", "members": ["group:readers@example.com"]})
    fake.storage.set_bindings(BUCKET, bucket)
    return (
        {WI_USER: [ksa("ray-cv", "team-cv")], TOKEN_CREATOR: ["group:ml-admins@example.com"]},
        {
            "roles/storage.legacyBucketOwner": [f"projectEditor:{PROJECT}", f"projectOwner:{PROJECT}"],
            "roles/storage.legacyBucketReader": [f"projectViewer:{PROJECT}"],
            "roles/storage.objectViewer": ["group:readers@example.com"],
        },
    )


def gsa_roles(fake: FakeGcp) -> dict[str, list[str]]:
    return {b["role"]: sorted(b["members"]) for b in fake.iam.policy(GSA).get("bindings", [])}


def bucket_roles(fake: FakeGcp) -> dict[str, list[str]]:
    return {b["role"]: sorted(b["members"]) for b in fake.storage.policy(BUCKET).get("bindings", [])}


def iam_writes(fake: FakeGcp, since: int = 0) -> tuple[int, int]:
    return len(fake.calls("iam", "SetIamPolicy", since)), len(fake.calls("storage", "SetIamPolicy", since))


def iam_calls(fake: FakeGcp, since: int = 0) -> list[str]:
    rpcs = ["GetIamPolicy", "SetIamPolicy"]
    return [f"{call.service}.{call.rpc}" for call in fake.calls(None, rpcs, since) if call.service != "container"]


def added(state: GcpState) -> dict[str, bool]:
    return {binding.role: binding.added_by_operator for binding in state.bindings}


async def granted(live: LiveProvisioner, owner: str, plan: GcpPlan, record: Recorded = NOTHING_RECORDED) -> GcpState:
    """Two reconciles, as the operator runs them: the first reads each member and records the intent to add the
    absent ones in status (granting nothing), the second, handed that record, grants."""
    state = await live.ensure(owner, plan, record)
    return await live.ensure(owner, plan, recorded(state))


async def test_bindings_are_added_once_verified_rarely_and_released_exactly(fake: FakeGcp, rig: Rig) -> None:
    gsa_before, bucket_before = seed_other_members(fake)
    live = rig.provisioner()
    plan = identity_plan()

    state = await live.ensure("team-nlp/demo", plan, NOTHING_RECORDED)
    # First the intent: both members read absent, recorded as the operator's, nothing granted yet.
    assert (state.identity.ready, state.identity.reason) == (False, REASON_RECORDING_GRANT)
    assert added(state) == {WI_USER: True, OBJECT_USER: True}
    assert sorted(iam_calls(fake)) == ["iam.GetIamPolicy", "storage.GetIamPolicy"]
    assert (gsa_roles(fake), bucket_roles(fake)) == (gsa_before, bucket_before)
    assert live.due("team-nlp/demo")  # polled soon, so the grant does not wait for the resync

    state = await live.ensure("team-nlp/demo", plan, recorded(state))
    assert (state.identity.ready, state.identity.reason) == (True, REASON_BOUND)
    assert added(state) == {WI_USER: True, OBJECT_USER: True}
    assert iam_writes(fake) == (1, 1)
    assert not live.due("team-nlp/demo")
    assert gsa_roles(fake) == {**gsa_before, WI_USER: sorted([ksa("ray-cv", "team-cv"), ksa("demo")])}
    assert bucket_roles(fake) == {**bucket_before, OBJECT_USER: [GSA_MEMBER]}

    mark = fake.mark()
    rig.clock.advance(VERIFY - 1)
    again = await live.ensure("team-nlp/demo", plan, recorded(state))
    assert iam_calls(fake, mark) == []
    assert again.bindings == state.bindings
    assert again.identity.reason == REASON_BOUND

    rig.clock.advance(1)
    again = await live.ensure("team-nlp/demo", plan, recorded(again))
    assert sorted(iam_calls(fake, mark)) == ["iam.GetIamPolicy", "storage.GetIamPolicy"]  # verified, not rewritten
    assert added(again) == {WI_USER: True, OBJECT_USER: True}

    mark = fake.mark()
    await live.release("team-nlp/demo", recorded(again))
    assert iam_writes(fake, mark) == (1, 1)
    assert gsa_roles(fake) == gsa_before
    assert bucket_roles(fake) == bucket_before


@pytest.mark.parametrize("how", ["injected", "concurrent-writer"])
async def test_a_stale_etag_is_retried_from_a_fresh_read(how: str, fake: FakeGcp, rig: Rig) -> None:
    cv_member = ksa("ray-cv", "team-cv")
    if how == "injected":
        aborted = ApiError("ABORTED", "There were concurrent policy changes. Please retry the whole read-modify-write.")
        fake.fail("iam", "SetIamPolicy", aborted)  # gRPC ABORTED, as IAM answers a stale etag
        fake.fail("storage", "SetIamPolicy", precondition_failed())
    else:
        viewer = {"role": "roles/storage.objectViewer", "members": ["group:readers@example.com"]}
        fake.before_next_write("iam", lambda: fake.iam.set_bindings(GSA, [{"role": WI_USER, "members": [cv_member]}]))
        bucket_bindings = fake.storage.policy(BUCKET)["bindings"]
        fake.before_next_write("storage", lambda: fake.storage.set_bindings(BUCKET, [*bucket_bindings, viewer]))

    live = rig.provisioner()
    state = await granted(live, "team-nlp/demo", identity_plan())
    assert (state.identity.ready, state.identity.reason) == (True, REASON_BOUND)
    assert added(state) == {WI_USER: True, OBJECT_USER: True}
    assert rpc_statuses(fake, "iam", "SetIamPolicy") == [409, 200]
    assert rpc_statuses(fake, "storage", "SetIamPolicy") == [412, 200]
    # One read before the intent was recorded, then one per read-modify-write cycle (the refused one included).
    assert len(fake.calls("iam", "GetIamPolicy")) == 3
    assert len(fake.calls("storage", "GetIamPolicy")) == 3
    assert ksa("demo") in fake.iam.members(GSA, WI_USER)
    assert fake.storage.members(BUCKET, OBJECT_USER) == [GSA_MEMBER]
    if how == "concurrent-writer":
        assert fake.iam.members(GSA, WI_USER) == [cv_member, ksa("demo")]
        assert fake.storage.members(BUCKET, "roles/storage.objectViewer") == ["group:readers@example.com"]


async def test_a_member_present_before_the_operator_looked_is_never_removed(fake: FakeGcp, rig: Rig) -> None:
    fake.iam.set_bindings(GSA, [{"role": WI_USER, "members": [ksa("demo")]}])  # granted by hand, long ago
    live = rig.provisioner()
    plan = identity_plan()

    state = await live.ensure("team-nlp/demo", plan, NOTHING_RECORDED)
    assert added(state) == {WI_USER: False, OBJECT_USER: True}  # read present before any intent: not ours
    assert iam_writes(fake) == (0, 0)
    state = await live.ensure("team-nlp/demo", plan, recorded(state))
    assert iam_writes(fake) == (0, 1)  # the bucket member, recorded first, granted now
    rig.clock.advance(VERIFY)
    state = await live.ensure("team-nlp/demo", plan, recorded(state))
    assert added(state) == {WI_USER: False, OBJECT_USER: True}

    await live.release("team-nlp/demo", recorded(state))
    assert fake.iam.members(GSA, WI_USER) == [ksa("demo")]
    assert fake.storage.members(BUCKET, OBJECT_USER) == []
    assert iam_writes(fake) == (0, 2)

    restarted = rig.provisioner()  # status says "not ours": a restart must agree
    state = await restarted.ensure("team-nlp/demo", plan, NOTHING_RECORDED)
    await restarted.release("team-nlp/demo", recorded(state))
    assert fake.iam.members(GSA, WI_USER) == [ksa("demo")]


async def test_a_shared_binding_is_removed_with_its_last_user(fake: FakeGcp, rig: Rig) -> None:
    live = rig.provisioner()
    first = await granted(live, "team-nlp/demo", identity_plan("demo"))
    second = await granted(live, "team-nlp/other", identity_plan("other"))
    assert added(first) == added(second) == {WI_USER: True, OBJECT_USER: True}
    assert iam_writes(fake) == (2, 1)  # one bucket write for both
    rig.claims.owners = {"team-nlp/other": recorded(second)}

    await live.release("team-nlp/demo", recorded(first))
    assert fake.storage.members(BUCKET, OBJECT_USER) == [GSA_MEMBER]
    assert fake.iam.members(GSA, WI_USER) == [ksa("other")]

    rig.claims.owners = {}
    await live.release("team-nlp/other", recorded(second))
    assert fake.storage.members(BUCKET, OBJECT_USER) == []
    assert fake.iam.members(GSA, WI_USER) == []


async def test_after_a_restart_the_status_decides_what_is_removed(fake: FakeGcp, rig: Rig) -> None:
    before = rig.provisioner()
    first = await granted(before, "team-nlp/demo", identity_plan("demo"))
    second = await granted(before, "team-nlp/other", identity_plan("other"))

    restarted = rig.provisioner()
    rig.claims.owners = {"team-nlp/other": recorded(second)}
    await restarted.release("team-nlp/demo", recorded(first))
    assert fake.storage.members(BUCKET, OBJECT_USER) == [GSA_MEMBER]  # other's status still lists it
    assert fake.iam.members(GSA, WI_USER) == [ksa("other")]

    rig.claims.owners = {}
    await restarted.release("team-nlp/other", recorded(second))
    assert fake.storage.members(BUCKET, OBJECT_USER) == []
    assert fake.iam.members(GSA, WI_USER) == []


async def test_a_binding_the_operator_added_is_not_leaked_when_a_restart_meets_a_deletion(
    fake: FakeGcp, rig: Rig
) -> None:
    """demo added the bucket binding, then the operator restarted while demo was being deleted (so demo is no
    live claim) and a new workload with the same binding came up: the binding is still the operator's."""
    first = await granted(rig.provisioner(), "team-nlp/demo", identity_plan())

    restarted = rig.provisioner()
    second = await granted(restarted, "team-nlp/other", identity_plan("other"))
    rig.claims.owners = {"team-nlp/other": recorded(second)}
    await restarted.release("team-nlp/demo", recorded(first))
    assert fake.storage.members(BUCKET, OBJECT_USER) == [GSA_MEMBER]

    rig.claims.owners = {}
    await restarted.release("team-nlp/other", recorded(second))
    assert fake.storage.members(BUCKET, OBJECT_USER) == []


async def test_a_binding_dropped_from_the_plan_is_not_leaked(fake: FakeGcp, rig: Rig) -> None:
    """The workload stops using the bucket; status is the only memory a restart has of what was added."""
    live = rig.provisioner()
    both = identity_plan()
    state = await granted(live, "team-nlp/demo", both)
    without_bucket = GcpPlan(iam_bindings=both.iam_bindings[:1])
    state = await live.ensure("team-nlp/demo", without_bucket, recorded(state))

    restarted = rig.provisioner()
    await restarted.release("team-nlp/demo", recorded(state))
    assert fake.iam.members(GSA, WI_USER) == []
    assert fake.storage.members(BUCKET, OBJECT_USER) == []


async def test_a_hand_over_to_a_workload_whose_status_has_not_recorded_it_yet_survives_a_restart(
    fake: FakeGcp, rig: Rig
) -> None:
    """demo stops using the bucket while other, reconciled in this process, needs the same member but has not
    written its status yet. demo keeps the binding recorded as the operator's until other's status does: after
    a crash, nothing else would say the operator added it (a chaos trial leaked it exactly so)."""
    live = rig.provisioner()
    both = identity_plan()
    demo = await granted(live, "team-nlp/demo", both)
    await live.ensure("team-nlp/other", identity_plan("other"), NOTHING_RECORDED)  # its status write is lost
    rig.claims.owners = {"team-nlp/other": NOTHING_RECORDED}  # it exists, its status says nothing yet
    without_bucket = GcpPlan(iam_bindings=both.iam_bindings[:1])
    demo = await live.ensure("team-nlp/demo", without_bucket, recorded(demo))
    assert fake.storage.members(BUCKET, OBJECT_USER) == [GSA_MEMBER]  # other needs it
    assert added(demo) == {WI_USER: True, OBJECT_USER: True}  # still demo's, on record

    restarted = rig.provisioner()  # the crash: other's status never recorded the member
    rig.claims.owners = {"team-nlp/demo": recorded(demo)}
    other = await granted(restarted, "team-nlp/other", identity_plan("other"))
    assert added(other) == {WI_USER: True, OBJECT_USER: True}  # adopted: demo's record says it is the operator's
    rig.claims.owners = {"team-nlp/demo": recorded(demo), "team-nlp/other": recorded(other)}
    demo = await restarted.ensure("team-nlp/demo", without_bucket, recorded(demo))
    assert added(demo) == {WI_USER: True}  # handed over for good: other records it now

    rig.claims.owners = {"team-nlp/demo": recorded(demo)}
    await restarted.release("team-nlp/other", recorded(other))
    assert fake.storage.members(BUCKET, OBJECT_USER) == []


async def test_a_deleted_workload_holds_a_handed_over_binding_until_the_receiver_records_it(
    fake: FakeGcp, rig: Rig
) -> None:
    """demo is deleted while other, reconciled in this process, needs the same bucket member but has not written
    its status yet. demo's release keeps the member on demo's record (its finalizer stays) and makes other due;
    only once other's status records the member as the operator's does demo let go. Releasing at once left
    nothing durable saying the operator added it: a crash before other's status write, then other dropping the
    bucket, leaked the member (chaos seed 802124)."""
    live = rig.provisioner()
    demo = await granted(live, "team-nlp/demo", identity_plan())
    await live.ensure("team-nlp/other", identity_plan("other"), NOTHING_RECORDED)  # its status write is lost
    rig.claims.owners = {"team-nlp/other": NOTHING_RECORDED}  # it exists, its status says nothing yet

    held = await live.release("team-nlp/demo", recorded(demo))
    assert [(status.role, status.added_by_operator) for status in held] == [(OBJECT_USER, True)]
    assert fake.storage.members(BUCKET, OBJECT_USER) == [GSA_MEMBER]  # other needs it
    assert fake.iam.members(GSA, WI_USER) == []  # demo's own WI member went (other's is only an intent)
    assert live.due("team-nlp/other")  # reconciled soon, so that its status records the member
    assert await live.release("team-nlp/demo", recorded(demo)) == held  # the retry waits as long as other does

    restarted = rig.provisioner()  # the crash: demo's record, finalizer and all, is what survives
    rig.claims.owners = {"team-nlp/demo": Recorded(bindings=tuple(held), releasing=True),
                         "team-nlp/other": NOTHING_RECORDED}  # fmt: skip
    other = await granted(restarted, "team-nlp/other", identity_plan("other"))
    assert added(other) == {WI_USER: True, OBJECT_USER: True}  # adopted: demo's record says it is the operator's
    rig.claims.owners["team-nlp/other"] = recorded(other)
    assert await restarted.release("team-nlp/demo", Recorded(bindings=tuple(held), releasing=True)) == []

    without_bucket = GcpPlan(iam_bindings=identity_plan("other").iam_bindings[:1])
    rig.claims.owners = {"team-nlp/other": recorded(other)}
    await restarted.ensure("team-nlp/other", without_bucket, recorded(other))
    assert fake.storage.members(BUCKET, OBJECT_USER) == []  # the last user dropped it: not leaked


async def test_a_workload_that_vanished_without_a_release_here_is_neither_waited_for_nor_handed_anything(
    fake: FakeGcp, rig: Rig
) -> None:
    """other was ensured in this process, then deleted without its release running here (another process did
    it, or it never got the finalizer): its plan in memory is stale. demo's release must not wait for it to
    record the member, nor leave the member to it (chaos seed 549898 hung demo's deletion so)."""
    live = rig.provisioner()
    demo = await granted(live, "team-nlp/demo", identity_plan())
    await live.ensure("team-nlp/other", identity_plan("other"), NOTHING_RECORDED)
    rig.claims.owners = {"team-nlp/demo": recorded(demo)}  # other is gone from the API

    assert await live.release("team-nlp/demo", recorded(demo)) == []
    assert fake.storage.members(BUCKET, OBJECT_USER) == []
    assert fake.iam.members(GSA, WI_USER) == []


async def test_two_workloads_refused_at_once_do_not_leave_their_shared_member_to_each_other(
    fake: FakeGcp, rig: Rig
) -> None:
    """A policy change refuses both users of one bucket member; their releases run concurrently, and each reads
    the other's status still listing the member. The first to decide hands it to the other; the second must not
    hand it back to a workload that already gave it up (chaos seed 644608 leaked it so)."""
    live = rig.provisioner()
    first = await granted(live, "team-nlp/demo", identity_plan())
    second = await granted(live, "team-nlp/other", identity_plan("other"))
    assert added(first) == added(second) == {WI_USER: True, OBJECT_USER: True}
    rig.claims.owners = {"team-nlp/demo": recorded(first), "team-nlp/other": recorded(second)}  # both refused

    held = await asyncio.gather(
        live.release("team-nlp/demo", recorded(first), keep_pools=True),
        live.release("team-nlp/other", recorded(second), keep_pools=True),
    )
    assert held == [[], []]
    assert fake.storage.members(BUCKET, OBJECT_USER) == []
    assert fake.iam.members(GSA, WI_USER) == []

    # Re-admitted: the status a refused workload wrote no longer lists the member; ensuring it grants again.
    rig.claims.owners = {"team-nlp/demo": Recorded(), "team-nlp/other": Recorded()}
    again = await granted(live, "team-nlp/demo", identity_plan())
    assert added(again) == {WI_USER: True, OBJECT_USER: True}
    assert fake.storage.members(BUCKET, OBJECT_USER) == [GSA_MEMBER]


async def test_iam_permission_denied_stalls_identity_and_is_retried_after_the_backoff(fake: FakeGcp, rig: Rig) -> None:
    live = rig.provisioner()
    plan = identity_plan()
    fake.fail("iam", "GetIamPolicy", iam_permission_denied("iam.serviceAccounts.getIamPolicy"))
    counted = api_errors("iam", "PermissionDenied")

    state = await live.ensure("team-nlp/demo", plan, NOTHING_RECORDED)
    assert api_errors("iam", "PermissionDenied") == counted + 1
    assert (state.identity.ready, state.identity.reason, state.identity.permanent) == (False, "PermissionDenied", True)
    assert WI_USER in state.identity.message
    assert (state.node_pools.ready, state.node_pools.reason) == (True, "NoNodePools")
    assert added(state) == {WI_USER: False, OBJECT_USER: True}  # unread: no intent; the bucket's is recorded
    state = await live.ensure("team-nlp/demo", plan, recorded(state))
    assert fake.storage.members(BUCKET, OBJECT_USER) == [GSA_MEMBER]  # one failure does not hold up the others

    mark = fake.mark()
    rig.clock.advance(BASE_DELAY - 1)
    state = await live.ensure("team-nlp/demo", plan, recorded(state))
    assert state.identity.reason == "PermissionDenied"
    assert fake.calls("iam", since=mark) == []

    rig.clock.advance(1)
    state = await live.ensure("team-nlp/demo", plan, recorded(state))
    assert (state.identity.ready, state.identity.reason) == (False, REASON_RECORDING_GRANT)
    state = await live.ensure("team-nlp/demo", plan, recorded(state))
    assert (state.identity.ready, state.identity.reason) == (True, REASON_BOUND)
    assert fake.iam.members(GSA, WI_USER) == [ksa("demo")]


async def test_a_failed_release_keeps_what_is_left_to_remove_for_the_retry(fake: FakeGcp, rig: Rig) -> None:
    live = rig.provisioner()
    state = await granted(live, "team-nlp/demo", identity_plan())
    assert added(state) == {WI_USER: True, OBJECT_USER: True}
    fake.fail("storage", "SetIamPolicy", storage_permission_denied(GSA, "storage.buckets.setIamPolicy"))

    with pytest.raises(GcpError) as info:
        await live.release("team-nlp/demo", NOTHING_RECORDED)  # memory alone must be enough in one process
    assert info.value.kind is FailureKind.PERMISSION
    assert fake.storage.members(BUCKET, OBJECT_USER) == [GSA_MEMBER]

    await live.release("team-nlp/demo", NOTHING_RECORDED)
    assert fake.storage.members(BUCKET, OBJECT_USER) == []
    assert fake.iam.members(GSA, WI_USER) == []


# --- the intent record: no crash between a grant and its status write leaks the grant ------------------------


@pytest.mark.parametrize("then", ["reconciled-then-deleted", "deleted-while-down"])
async def test_a_grant_whose_status_write_was_lost_is_revoked_by_the_next_process(
    then: str, fake: FakeGcp, rig: Rig
) -> None:
    """The chaos trials' leak (seeds 101, 1000, 1002, 1004): the operator was killed after SetIamPolicy added the
    members and before the status write. The status still has what the reconcile before wrote: the intent."""
    live = rig.provisioner()
    plan = identity_plan()
    intent = await live.ensure("team-nlp/demo", plan, NOTHING_RECORDED)
    as_written = recorded(intent)  # the last status write that landed
    assert added(intent) == {WI_USER: True, OBJECT_USER: True}
    assert iam_writes(fake) == (0, 0)
    await live.ensure("team-nlp/demo", plan, as_written)  # grants; its status write dies with the process
    assert fake.iam.members(GSA, WI_USER) == [ksa("demo")]
    assert fake.storage.members(BUCKET, OBJECT_USER) == [GSA_MEMBER]

    restarted = rig.provisioner()
    record = as_written
    if then == "reconciled-then-deleted":
        state = await restarted.ensure("team-nlp/demo", plan, as_written)
        assert added(state) == {WI_USER: True, OBJECT_USER: True}  # the operator's still, never "pre-existing"
        assert (state.identity.ready, state.identity.reason) == (True, REASON_BOUND)
        record = recorded(state)
    await restarted.release("team-nlp/demo", record)
    assert fake.iam.members(GSA, WI_USER) == []
    assert fake.storage.members(BUCKET, OBJECT_USER) == []


async def test_a_member_present_before_the_first_look_survives_a_crash_and_the_release(fake: FakeGcp, rig: Rig) -> None:
    gsa_before, _ = seed_other_members(fake)
    fake.iam.set_bindings(GSA, [*fake.iam.policy(GSA)["bindings"], {"role": WI_USER, "members": [ksa("demo")]}])
    live = rig.provisioner()
    plan = identity_plan()
    intent = await live.ensure("team-nlp/demo", plan, NOTHING_RECORDED)
    assert added(intent) == {WI_USER: False, OBJECT_USER: True}
    await live.ensure("team-nlp/demo", plan, recorded(intent))  # the bucket granted; the status write is lost

    await rig.provisioner().release("team-nlp/demo", recorded(intent))
    assert ksa("demo") in fake.iam.members(GSA, WI_USER)  # someone else's: never revoked
    assert fake.iam.members(GSA, WI_USER) == sorted([ksa("ray-cv", "team-cv"), ksa("demo")])
    assert gsa_roles(fake)[TOKEN_CREATOR] == gsa_before[TOKEN_CREATOR]
    assert fake.storage.members(BUCKET, OBJECT_USER) == []  # the operator's: revoked


async def test_a_crash_before_the_grant_leaves_an_intent_whose_release_writes_nothing(fake: FakeGcp, rig: Rig) -> None:
    gsa_before, bucket_before = seed_other_members(fake)
    intent = await rig.provisioner().ensure("team-nlp/demo", identity_plan(), NOTHING_RECORDED)
    assert added(intent) == {WI_USER: True, OBJECT_USER: True}

    mark = fake.mark()
    await rig.provisioner().release("team-nlp/demo", recorded(intent))  # no GcpError: an absent member is done
    assert sorted(iam_calls(fake, mark)) == ["iam.GetIamPolicy", "storage.GetIamPolicy"]  # read, nothing written
    assert (gsa_roles(fake), bucket_roles(fake)) == (gsa_before, bucket_before)


async def test_an_intent_recorded_before_a_restart_is_granted_by_the_next_process(fake: FakeGcp, rig: Rig) -> None:
    plan = identity_plan()
    intent = await rig.provisioner().ensure("team-nlp/demo", plan, NOTHING_RECORDED)
    restarted = rig.provisioner()
    state = await restarted.ensure("team-nlp/demo", plan, recorded(intent))
    assert (state.identity.ready, state.identity.reason) == (True, REASON_BOUND)
    assert iam_writes(fake) == (1, 1)
    assert fake.iam.members(GSA, WI_USER) == [ksa("demo")]
    assert not restarted.due("team-nlp/demo")


async def test_a_pre_existing_member_removed_by_hand_is_recorded_before_it_is_granted_again(
    fake: FakeGcp, rig: Rig
) -> None:
    """Once absent it is no longer anyone else's: the operator adds it back, so it records it as its own first."""
    fake.iam.set_bindings(GSA, [{"role": WI_USER, "members": [ksa("demo")]}])
    live = rig.provisioner()
    plan = identity_plan()
    state = await granted(live, "team-nlp/demo", plan)
    assert added(state) == {WI_USER: False, OBJECT_USER: True}

    fake.iam.set_bindings(GSA, [])
    rig.clock.advance(VERIFY)
    mark = fake.mark()
    state = await live.ensure("team-nlp/demo", plan, recorded(state))
    assert added(state) == {WI_USER: True, OBJECT_USER: True}
    assert state.identity.reason == REASON_RECORDING_GRANT
    assert fake.calls("iam", "SetIamPolicy", since=mark) == []
    state = await live.ensure("team-nlp/demo", plan, recorded(state))
    assert fake.iam.members(GSA, WI_USER) == [ksa("demo")]

    await rig.provisioner().release("team-nlp/demo", recorded(state))
    assert fake.iam.members(GSA, WI_USER) == []


async def test_a_workload_joining_a_member_another_workload_added_adopts_it_without_an_intent(
    fake: FakeGcp, rig: Rig
) -> None:
    """The bucket member the first workload added is present at the second's first look: no write, no waiting
    for it (only its own Workload Identity member is recorded first)."""
    live = rig.provisioner()
    await granted(live, "team-nlp/demo", identity_plan("demo"))
    mark = fake.mark()
    other = await live.ensure("team-nlp/other", identity_plan("other"), NOTHING_RECORDED)
    assert added(other) == {WI_USER: True, OBJECT_USER: True}
    assert iam_calls(fake, mark) == ["iam.GetIamPolicy"]  # the bucket member was verified a moment ago
    assert "1 of 2" in other.identity.message


# --- the production client factories --------------------------------------------------------------------


async def test_the_production_clients_work_against_plain_http_endpoints(fake: FakeGcp) -> None:
    iam = clients.iam_client("http://" + fake.grpc_target)
    storage = clients.storage_client(fake.endpoint, PROJECT)
    try:
        gke = GkeNodePools(clients.gke_client(fake.endpoint))
        operation = gke.create(gpu_pool())
        assert operation.kind == "CREATE_NODE_POOL"
        assert not operation.done
        assert gke.get(CLUSTER_PATH, GPU_POOL) is not None
        assert gke.get(CLUSTER_PATH, "absent") is None
        fake.gke.complete_operations()
        assert gke.operation(CLUSTER_PATH, operation.name, GPU_POOL).done
        (listed,) = gke.list(CLUSTER_PATH)
        assert (listed.name, listed.status, listed.managed) == (GPU_POOL, "RUNNING", True)

        wi = IamBinding(resource=GSA_RESOURCE, role=WI_USER, member=ksa("demo"))
        bucket = IamBinding(resource=f"projects/_/buckets/{BUCKET}", role=OBJECT_USER, member=GSA_MEMBER)
        routed = RoutedPolicies(
            ServiceAccountPolicies(iam), BucketPolicies(storage), IapPolicies(clients.iap_client(fake.endpoint))
        )
        assert routed.update([(wi, True)]) == {wi}
        assert routed.update([(wi, True)]) == set()  # already there: read, nothing written
        assert routed.update([(bucket, True)]) == {bucket}
        assert fake.iam.members(GSA, WI_USER) == [ksa("demo")]
        assert fake.storage.members(BUCKET, OBJECT_USER) == [GSA_MEMBER]
        assert [call.transport for call in fake.calls("iam")] == ["grpc"] * 3
    finally:
        iam.transport.close()  # type: ignore[no-untyped-call]
        storage.close()


async def test_connect_wires_a_live_provisioner_from_settings(fake: FakeGcp) -> None:
    settings = OperatorSettings(
        gcp=PolicyGcp(project=PROJECT, location=LOCATION, cluster=CLUSTER),
        gke_endpoint=fake.endpoint,
        iam_endpoint=f"http://{fake.grpc_target}",
        storage_endpoint=fake.endpoint,
        iap_endpoint=fake.endpoint,  # every client is built at start-up: none may fall back to ADC in a test
    )
    live = connect(settings, Claims())
    plan = GcpPlan(node_pools=[gpu_pool()], iam_bindings=identity_plan().iam_bindings)
    state = await live.ensure("team-nlp/demo", plan, NOTHING_RECORDED)
    assert states(state) == {GPU_POOL: "Provisioning"}
    assert (state.identity.ready, state.identity.reason) == (False, REASON_RECORDING_GRANT)
    state = await live.ensure("team-nlp/demo", plan, recorded(state))
    assert (state.identity.ready, state.identity.reason) == (True, REASON_BOUND)
    assert state.bindings == [
        IamBindingStatus(resource=b.resource, role=b.role, member=b.member, added_by_operator=True)
        for b in plan.iam_bindings
    ]
    assert created_names(fake) == [GPU_POOL]


async def test_a_member_added_for_a_workload_being_deleted_stays_the_operators_after_a_restart(
    fake: FakeGcp, rig: Rig
) -> None:
    """After a restart, memory is empty: the deleting workload's status (a releasing claim) says who added it."""
    first = await granted(rig.provisioner(), "team-nlp/demo", identity_plan())
    demo = recorded(first)
    rig.claims.owners = {"team-nlp/demo": Recorded(demo.pools, demo.bindings, releasing=True)}

    restarted = rig.provisioner()
    second = await granted(restarted, "team-nlp/other", identity_plan("other"))
    bucket = next(b for b in second.bindings if b.resource.endswith(BUCKET))
    assert bucket.added_by_operator  # recorded in status: survives a second restart too

    rig.claims.owners = {}
    await rig.provisioner().release("team-nlp/other", recorded(second))
    assert fake.storage.members(BUCKET, OBJECT_USER) == []


async def test_concurrent_workloads_on_one_gsa_share_read_modify_writes(fake: FakeGcp, rig: Rig) -> None:
    """Racing read-modify-writes spoil each other's etag; queued behind one lock they go in batches instead."""
    live = rig.provisioner()
    owners = [f"w{i}" for i in range(20)]
    states = await asyncio.gather(*(live.ensure(f"team-nlp/{o}", identity_plan(o), NOTHING_RECORDED) for o in owners))
    assert all(state.identity.reason == REASON_RECORDING_GRANT for state in states)
    # The looks before the intents queue like writes do: the first read alone, then one for all that queued.
    # Each workload looks at the bucket once its GSA read is answered, so arrivals at the bucket follow the
    # GSA batches and the threads' timing: a loaded machine splits them into a few more reads, never twenty
    # (5 seen while other tests ran beside it).
    assert 1 <= len(fake.calls("iam", "GetIamPolicy")) <= 3
    assert 1 <= len(fake.calls("storage", "GetIamPolicy")) <= 6
    assert fake.calls(rpc="SetIamPolicy") == []
    states = await asyncio.gather(
        *(
            live.ensure(f"team-nlp/{o}", identity_plan(o), recorded(state))
            for o, state in zip(owners, states, strict=True)
        )
    )
    assert all(state.identity.reason == REASON_BOUND for state in states)
    assert sorted(fake.iam.members(GSA, WI_USER)) == sorted(ksa(o) for o in owners)
    writes = fake.calls("iam", "SetIamPolicy")
    assert 1 <= len(writes) <= 3  # the first change alone, then everything that queued behind it
    assert all(call.status == 200 for call in writes)  # no stale etag: nobody raced
    assert len(fake.calls("storage", "SetIamPolicy")) == 1  # one member wanted by all twenty


async def test_without_a_gsa_the_bucket_goes_to_the_direct_workload_identity_principal(fake: FakeGcp, rig: Rig) -> None:
    """A policy with gcp.projectNumber and no GSA: the KSA itself, as a federation principal, gets the bucket."""
    no_gsa = permissive_policy().set("identity", {"allowedBuckets": ["gs://*"]}).set("gcp.projectNumber", "123456789")
    doc = workload("direct").set("spec.storage", {"bucket": f"gs://{BUCKET}", "access": "ReadOnly"})
    plan = build_gcp_plan(resolved(doc, no_gsa))
    principal = (
        "principal://iam.googleapis.com/projects/123456789/locations/global/workloadIdentityPools/"
        f"{PROJECT}.svc.id.goog/subject/ns/team-nlp/sa/direct"
    )
    assert [(b.resource, b.member) for b in plan.iam_bindings] == [(f"projects/_/buckets/{BUCKET}", principal)]
    live = rig.provisioner()
    state = await granted(live, "team-nlp/direct", plan)
    assert state.identity.reason == REASON_BOUND
    assert fake.storage.members(BUCKET, "roles/storage.objectViewer") == [principal]
    assert fake.calls("iam") == []  # no GSA, so no impersonation grant
    await live.release("team-nlp/direct", recorded(state))
    assert fake.storage.members(BUCKET, "roles/storage.objectViewer") == []
