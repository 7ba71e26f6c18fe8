"""IAP accessor grants with the real google-cloud-iap client (REST) against FakeGcp's IAP API.

`IapPolicies` runs alone and under `BindingManager` and `RoutedPolicies`, as `live.connect` wires it. Time is
a `ManualClock` the test advances, so every verification interval and backoff is crossed on purpose. Nothing sleeps.
"""

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from prometheus_client import REGISTRY

from mlworkload.api.policy import PolicyGcp
from mlworkload.builders.iam import IAP_ACCESSOR_ROLE, iap_resource
from mlworkload.gcp import clients
from mlworkload.gcp.errors import FailureKind, GcpError
from mlworkload.gcp.iam import BindingManager, BucketPolicies, RoutedPolicies, ServiceAccountPolicies
from mlworkload.gcp.iap import IapPolicies
from mlworkload.gcp.live import REASON_BOUND, REASON_RECORDING_GRANT, LiveProvisioner, connect
from mlworkload.gcp.plan import GcpPlan, IamBinding
from mlworkload.gcp.provisioner import NOTHING_RECORDED, Recorded
from mlworkload.gcp.retry import Backoff
from mlworkload.settings import OperatorSettings
from tests.support import gcp as fakes
from tests.support.clock import ManualClock
from tests.support.gcp import ApiError, FakeGcp, fresh_project, iap_permission_denied

PROJECT, LOCATION, CLUSTER = "my-proj", "us-central1", "ml-cluster"
GSA = f"ray-nlp@{PROJECT}.iam.gserviceaccount.com"
BUCKET = "team-nlp-ckpt"
BACKEND = "k8s-be-30167--01177f64ec764488"  # the name GKE puts in the Ingress's ingress.kubernetes.io/backends
INTERNAL_BACKEND = "k8s1-a1b2c3d4-team-nlp-demo-head-8265-e5f6a7b8"
RESOURCE = iap_resource(PROJECT, BACKEND, None)
REGIONAL_RESOURCE = iap_resource(PROJECT, INTERNAL_BACKEND, LOCATION)
ADMIN = "roles/iap.admin"
BASE_DELAY, MAX_DELAY = 10.0, 80.0
VERIFY = 60.0


def accessor(member: str, resource: str = RESOURCE) -> IamBinding:
    return IamBinding(resource=resource, role=IAP_ACCESSOR_ROLE, member=member)


def statuses(fake: FakeGcp, rpc: str, since: int = 0) -> list[int]:
    return [call.status for call in fake.calls("iap", rpc, since)]


def api_errors(reason: str) -> float:
    return REGISTRY.get_sample_value("mlworkload_gcp_api_errors_total", {"api": "iap", "reason": reason}) or 0.0


@pytest.fixture(autouse=True)
def world(fake: FakeGcp) -> Iterator[None]:
    """The project of the other adapter tests, plus the backend services GKE made for two Ingresses."""
    project = fresh_project(
        fake, project=PROJECT, location=LOCATION, cluster=CLUSTER, service_account=GSA, bucket=BUCKET
    )
    next(project)
    fake.iap.add_backend_service(PROJECT, BACKEND)
    fake.iap.add_backend_service(PROJECT, INTERNAL_BACKEND, LOCATION)
    yield
    next(project, None)  # its checks: nothing unrouted, the fake unbroken


@pytest.fixture(scope="module")
def iap(fake: FakeGcp) -> Iterator[IapPolicies]:
    client = fakes.iap_client(fake)
    yield IapPolicies(client)
    client.transport.close()  # type: ignore[no-untyped-call]


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def manager(iap: IapPolicies, clock: ManualClock) -> BindingManager:
    return BindingManager(iap, backoff=Backoff(BASE_DELAY, MAX_DELAY, clock), verify_seconds=VERIFY)


# --- grants -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("resource", [RESOURCE, REGIONAL_RESOURCE], ids=["global", "regional"])
async def test_an_accessor_is_granted_once_and_then_only_verified(
    resource: str, fake: FakeGcp, manager: BindingManager, clock: ManualClock
) -> None:
    binding = accessor("user:ana@example.com", resource)
    assert await manager.ensure(binding) == (True, None)
    assert fake.iap.members(resource, IAP_ACCESSOR_ROLE) == ["user:ana@example.com"]
    assert statuses(fake, "SetIamPolicy") == [200]
    (read,) = fake.calls("iap", "GetIamPolicy")
    assert read.path == f"/v1/{resource}:getIamPolicy"
    assert read.body == {"options": {"requestedPolicyVersion": 3}}

    mark = fake.mark()
    assert await manager.ensure(binding) == (False, None)  # verified a moment ago: no call at all
    assert fake.calls("iap", since=mark) == []
    clock.advance(VERIFY)
    assert await manager.ensure(binding) == (False, None)  # re-read, found, not rewritten
    assert [call.rpc for call in fake.calls("iap", since=mark)] == ["GetIamPolicy"]
    assert len(fake.calls("iap", "SetIamPolicy")) == 1


@pytest.mark.parametrize("how", ["injected", "concurrent-writer"])
def test_a_stale_etag_is_retried_from_a_fresh_read(how: str, fake: FakeGcp, iap: IapPolicies) -> None:
    if how == "injected":
        fake.fail("iap", "SetIamPolicy", ApiError("ABORTED", "There were concurrent policy changes."))
    else:
        other = {"role": IAP_ACCESSOR_ROLE, "members": ["group:ml@example.com"]}
        fake.before_next_write("iap", lambda: fake.iap.set_bindings(RESOURCE, [other]))
    binding = accessor("user:ana@example.com")
    assert iap.update([(binding, True)]) == {binding}
    assert statuses(fake, "SetIamPolicy") == [409, 200]
    assert len(fake.calls("iap", "GetIamPolicy")) == 2
    expected = ["user:ana@example.com"] if how == "injected" else ["group:ml@example.com", "user:ana@example.com"]
    assert fake.iap.members(RESOURCE, IAP_ACCESSOR_ROLE) == expected


async def test_a_backend_gke_has_not_created_yet_is_not_found_and_retried_until_it_exists(
    fake: FakeGcp, manager: BindingManager, clock: ManualClock
) -> None:
    """The Ingress has not synced: IAP answers 404, which waits with backoff and stalls nothing."""
    late = iap_resource(PROJECT, "k8s-be-31000--01177f64ec764488", None)
    binding = accessor("user:ana@example.com", late)
    counted = api_errors(FailureKind.NOT_FOUND.value)
    added, failure = await manager.ensure(binding)
    assert not added
    assert isinstance(failure, GcpError)
    assert failure.kind is FailureKind.NOT_FOUND
    assert not failure.stalls
    assert api_errors(FailureKind.NOT_FOUND.value) == counted + 1
    assert statuses(fake, "GetIamPolicy") == [404]

    fake.iap.add_backend_service(PROJECT, "k8s-be-31000--01177f64ec764488")  # GKE syncs the Ingress
    clock.advance(BASE_DELAY - 1)
    assert await manager.ensure(binding) == (False, failure)  # still backing off: no call
    assert len(fake.calls("iap", "GetIamPolicy")) == 1
    clock.advance(1)
    assert await manager.ensure(binding) == (True, None)
    assert fake.iap.members(late, IAP_ACCESSOR_ROLE) == ["user:ana@example.com"]


async def test_revoking_on_a_backend_gke_deleted_with_its_ingress_is_done(
    fake: FakeGcp, manager: BindingManager
) -> None:
    """The IAP policy went with the backend service: a 404 on removal must not hold the release forever."""
    binding = accessor("user:ana@example.com")
    assert await manager.ensure(binding) == (True, None)
    fake.iap.delete_backend_service(RESOURCE)
    await manager.remove(binding)  # no GcpError
    added, failure = await manager.ensure(accessor("group:ml@example.com"))  # adding there still fails, retried
    assert not added
    assert failure is not None
    assert failure.kind is FailureKind.NOT_FOUND


async def test_permission_denied_stalls(fake: FakeGcp, manager: BindingManager) -> None:
    fake.fail("iap", "GetIamPolicy", iap_permission_denied())
    _, failure = await manager.ensure(accessor("user:ana@example.com"))
    assert failure is not None
    assert (failure.kind, failure.stalls) == (FailureKind.PERMISSION, True)


async def test_removing_one_accessor_keeps_every_other_member_role_and_condition(
    fake: FakeGcp, manager: BindingManager
) -> None:
    condition = {"title": "until-2030", "expression": 'request.time < timestamp("2030-01-01T00:00:00Z")'}
    before: list[dict[str, Any]] = [
        {"role": IAP_ACCESSOR_ROLE, "members": ["user:ana@example.com", "group:ml@example.com"]},
        {"role": ADMIN, "members": ["user:ana@example.com"]},
        {"role": IAP_ACCESSOR_ROLE, "members": ["user:ana@example.com"], "condition": condition},
    ]
    fake.iap.set_bindings(RESOURCE, before)
    await manager.remove(accessor("user:ana@example.com"))
    assert fake.iap.policy(RESOURCE)["bindings"] == [
        {"role": IAP_ACCESSOR_ROLE, "members": ["group:ml@example.com"]},
        {"role": ADMIN, "members": ["user:ana@example.com"]},
        {"role": IAP_ACCESSOR_ROLE, "members": ["user:ana@example.com"], "condition": condition},
    ]
    (write,) = fake.calls("iap", "SetIamPolicy")
    assert write.body["policy"]["version"] == 3  # read as version 3, so the condition went back whole

    mark = fake.mark()
    await manager.remove(accessor("user:ana@example.com"))  # gone already: read, nothing written
    assert [call.rpc for call in fake.calls("iap", since=mark)] == ["GetIamPolicy"]


async def test_twenty_accessors_on_one_backend_share_a_few_writes(fake: FakeGcp, manager: BindingManager) -> None:
    members = [f"user:u{i}@example.com" for i in range(20)]
    results = await asyncio.gather(*(manager.ensure(accessor(member)) for member in members))
    assert results == [(True, None)] * 20
    assert sorted(fake.iap.members(RESOURCE, IAP_ACCESSOR_ROLE)) == sorted(members)
    writes = statuses(fake, "SetIamPolicy")
    assert 1 <= len(writes) <= 3  # the first alone, then everything that queued behind it
    assert set(writes) == {200}  # batched behind one lock, nobody raced an etag


# --- routing and wiring ---------------------------------------------------------------------------------


def test_routed_policies_send_each_kind_to_its_api(fake: FakeGcp) -> None:
    iam = clients.iam_client("http://" + fake.grpc_target)
    storage = clients.storage_client(fake.endpoint, PROJECT)
    iap = clients.iap_client(fake.endpoint)  # the production factory: anonymous over plain http
    try:
        routed = RoutedPolicies(ServiceAccountPolicies(iam), BucketPolicies(storage), IapPolicies(iap))
        wi = IamBinding(resource=f"projects/{PROJECT}/serviceAccounts/{GSA}", role="roles/iam.workloadIdentityUser",
                        member=f"serviceAccount:{PROJECT}.svc.id.goog[team-nlp/demo]")  # fmt: skip
        bucket = IamBinding(resource=f"projects/_/buckets/{BUCKET}", role="roles/storage.objectUser",
                            member=f"serviceAccount:{GSA}")  # fmt: skip
        backends = [accessor("user:ana@example.com"), accessor("user:ana@example.com", REGIONAL_RESOURCE)]
        for binding in (wi, bucket, *backends):
            assert routed.update([(binding, True)]) == {binding}
        assert [(call.service, call.rpc) for call in fake.calls(rpc="SetIamPolicy")] == [
            ("iam", "SetIamPolicy"),
            ("storage", "SetIamPolicy"),
            ("iap", "SetIamPolicy"),
            ("iap", "SetIamPolicy"),
        ]
        assert [call.path for call in fake.calls("iap", "SetIamPolicy")] == [
            f"/v1/{RESOURCE}:setIamPolicy",
            f"/v1/{REGIONAL_RESOURCE}:setIamPolicy",
        ]
    finally:
        iam.transport.close()  # type: ignore[no-untyped-call]
        storage.close()
        iap.transport.close()  # type: ignore[no-untyped-call]


def connected(fake: FakeGcp) -> LiveProvisioner:
    """The live provisioner as `mlworkload run` wires it, every endpoint on the fake, no other workload's claims."""
    settings = OperatorSettings(
        gcp=PolicyGcp(project=PROJECT, location=LOCATION, cluster=CLUSTER),
        gke_endpoint=fake.endpoint,
        iam_endpoint=f"http://{fake.grpc_target}",
        storage_endpoint=fake.endpoint,
        iap_endpoint=fake.endpoint,
    )

    async def no_claims() -> dict[str, Recorded]:
        return {}

    return connect(settings, no_claims)


async def test_connect_wires_iap_from_its_endpoint_setting(fake: FakeGcp) -> None:

    live = connected(fake)
    plan = GcpPlan(iam_bindings=[accessor("group:team-nlp@example.com")])
    state = await live.ensure("team-nlp/demo", plan, NOTHING_RECORDED)
    assert state.access is not None
    # The intent first: reported on the endpoints, polled soon (no condition the poll timer watches says so).
    assert (state.access.ready, state.access.reason) == (False, REASON_RECORDING_GRANT)
    assert state.identity.reason == "NotRequired"
    assert live.due("team-nlp/demo")
    assert fake.iap.members(RESOURCE, IAP_ACCESSOR_ROLE) == []
    state = await live.ensure("team-nlp/demo", plan, Recorded(bindings=tuple(state.bindings)))
    assert state.access is not None
    assert (state.access.ready, state.access.reason) == (True, REASON_BOUND)  # who may pass IAP: not identity
    assert state.identity.reason == "NotRequired"
    assert fake.iap.members(RESOURCE, IAP_ACCESSOR_ROLE) == ["group:team-nlp@example.com"]
    await live.release("team-nlp/demo", Recorded(bindings=tuple(state.bindings)))
    assert fake.iap.members(RESOURCE, IAP_ACCESSOR_ROLE) == []


# --- reading before recording the intent ------------------------------------------------------------------


def test_present_reads_the_unconditional_role_only(fake: FakeGcp, iap: IapPolicies) -> None:
    condition = {"title": "until-2030", "expression": 'request.time < timestamp("2030-01-01T00:00:00Z")'}
    policy: list[dict[str, Any]] = [
        {"role": IAP_ACCESSOR_ROLE, "members": ["user:ana@example.com"]},
        {"role": IAP_ACCESSOR_ROLE, "members": ["user:bo@example.com"], "condition": condition},
        {"role": ADMIN, "members": ["group:ml@example.com"]},
    ]
    fake.iap.set_bindings(RESOURCE, policy)
    bindings = [accessor(member) for member in ("user:ana@example.com", "user:bo@example.com", "group:ml@example.com")]
    assert iap.present(bindings) == {bindings[0]}  # the conditional and the other role are not what we grant
    assert [call.rpc for call in fake.calls("iap")] == ["GetIamPolicy"]


def test_present_on_a_backend_gke_has_not_made_is_not_found_like_a_grant(fake: FakeGcp, iap: IapPolicies) -> None:
    late = accessor("user:ana@example.com", iap_resource(PROJECT, "k8s-be-31000--01177f64ec764488", None))
    with pytest.raises(GcpError) as info:
        iap.present([late])
    assert (info.value.kind, info.value.stalls) == (FailureKind.NOT_FOUND, False)


async def test_a_check_reads_once_for_all_who_ask_and_caches_only_a_present_member(
    fake: FakeGcp, manager: BindingManager, clock: ManualClock
) -> None:
    fake.iap.set_bindings(RESOURCE, [{"role": IAP_ACCESSOR_ROLE, "members": ["user:u0@example.com"]}])
    members = [f"user:u{i}@example.com" for i in range(10)]
    results = await asyncio.gather(*(manager.check(accessor(member)) for member in members))
    assert results == [(True, None)] + [(False, None)] * 9
    assert 1 <= len(fake.calls("iap", "GetIamPolicy")) <= 2  # the first read alone, then all that queued
    mark = fake.mark()
    assert await manager.check(accessor("user:u0@example.com")) == (True, None)  # verified: no call
    assert await manager.check(accessor("user:u1@example.com")) == (False, None)  # absent: read again
    assert [call.rpc for call in fake.calls("iap", since=mark)] == ["GetIamPolicy"]
    assert fake.calls("iap", "SetIamPolicy") == []


async def test_an_intent_for_a_backend_gke_deleted_meanwhile_is_released_without_error(fake: FakeGcp) -> None:
    """A crash before the grant, then the Ingress went: the IAP policy went with it, nothing to revoke."""

    plan = GcpPlan(iam_bindings=[accessor("group:team-nlp@example.com")])
    intent = await connected(fake).ensure("team-nlp/demo", plan, NOTHING_RECORDED)
    assert [status.added_by_operator for status in intent.bindings] == [True]
    fake.iap.delete_backend_service(RESOURCE)
    await connected(fake).release("team-nlp/demo", Recorded(bindings=tuple(intent.bindings)))
    assert fake.calls("iap", "SetIamPolicy") == []
