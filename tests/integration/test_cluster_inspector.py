"""Whether a cluster enforces NetworkPolicies, asked of FakeGcp's GKE through the real google-cloud-container client.

The three kinds of cluster GKE has (Dataplane V2, the legacy datapath with Calico, the legacy datapath without)
are made by the fake as GetCluster reports them; time is a `ManualClock` the test advances across the cache's TTL.
"""

import asyncio
from collections.abc import Iterator

import pytest
from prometheus_client import REGISTRY

from mlworkload.api.policy import PolicyGcp
from mlworkload.gcp.clusters import NETWORK_POLICY_TTL_SECONDS, GkeClusterInspector, connect_inspector
from mlworkload.gcp.errors import FailureKind, GcpError
from mlworkload.settings import OperatorSettings
from tests.support import gcp as fakes
from tests.support.clock import ManualClock
from tests.support.gcp import FakeGcp, permission_denied

PROJECT, LOCATION = "my-proj", "us-central1"
TTL = 100.0


def path(name: str) -> str:
    return f"projects/{PROJECT}/locations/{LOCATION}/clusters/{name}"


def reads(fake: FakeGcp, name: str, since: int = 0) -> int:
    return sum(call.path == f"/v1/{path(name)}" for call in fake.calls("container", "GetCluster", since))


def api_errors(reason: str) -> float:
    return REGISTRY.get_sample_value("mlworkload_gcp_api_errors_total", {"api": "container", "reason": reason}) or 0.0


@pytest.fixture(autouse=True)
def clusters(fake: FakeGcp) -> Iterator[None]:
    fake.reset()
    fake.gke.add_cluster(PROJECT, LOCATION, "dataplane-v2")  # the default, as for Autopilot
    fake.gke.add_cluster(PROJECT, LOCATION, "calico", datapath_provider="LEGACY_DATAPATH", calico=True)
    fake.gke.add_cluster(PROJECT, LOCATION, "plain", datapath_provider="LEGACY_DATAPATH")
    fake.gke.add_cluster(  # between the two steps of turning Calico on: the add-on first, the nodes next
        PROJECT, LOCATION, "addon-only", datapath_provider="LEGACY_DATAPATH", network_policy_addon=True
    )
    yield
    assert fake.unrouted == []
    assert fake.internal_errors == []


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def inspector(fake: FakeGcp, clock: ManualClock) -> GkeClusterInspector:
    return GkeClusterInspector(fakes.gke_client(fake), ttl_seconds=TTL, clock=clock)


@pytest.mark.parametrize(
    ("name", "enforced"),
    [("dataplane-v2", True), ("calico", True), ("plain", False), ("addon-only", False)],
)
async def test_each_kind_of_cluster(name: str, enforced: bool, fake: FakeGcp, inspector: GkeClusterInspector) -> None:
    assert await inspector.network_policies_enforced(path(name)) is enforced
    (read,) = fake.calls("container", "GetCluster")
    assert read.query["$alt"] == "json;enum-encoding=int"  # the REST client's numeric enums, parsed back


async def test_one_read_per_cluster_within_the_ttl_and_another_after_it(
    fake: FakeGcp, inspector: GkeClusterInspector, clock: ManualClock
) -> None:
    answers = await asyncio.gather(*(inspector.network_policies_enforced(path("calico")) for _ in range(10)))
    assert answers == [True] * 10
    assert reads(fake, "calico") == 1  # concurrent callers share the one read
    assert await inspector.network_policies_enforced(path("plain")) is False
    assert reads(fake, "plain") == 1  # cached per cluster

    clock.advance(TTL - 1)
    assert await inspector.network_policies_enforced(path("calico")) is True
    assert reads(fake, "calico") == 1
    clock.advance(1)
    assert await inspector.network_policies_enforced(path("calico")) is True
    assert reads(fake, "calico") == 2


async def test_permission_denied_is_a_classified_gcp_error_and_is_not_cached(
    fake: FakeGcp, inspector: GkeClusterInspector
) -> None:
    fake.fail("container", "GetCluster", permission_denied("container.clusters.get", path("calico")))
    counted = api_errors(FailureKind.PERMISSION.value)
    with pytest.raises(GcpError) as info:
        await inspector.network_policies_enforced(path("calico"))
    assert (info.value.kind, info.value.stalls) == (FailureKind.PERMISSION, True)
    assert 'Required "container.clusters.get" permission(s)' in info.value.message
    assert api_errors(FailureKind.PERMISSION.value) == counted + 1

    assert await inspector.network_policies_enforced(path("calico")) is True  # the next call asks again
    assert [call.status for call in fake.calls("container", "GetCluster")] == [403, 200]


async def test_a_missing_cluster_is_not_found(inspector: GkeClusterInspector) -> None:
    with pytest.raises(GcpError) as info:
        await inspector.network_policies_enforced(path("nope"))
    assert info.value.kind is FailureKind.NOT_FOUND


async def test_connect_inspector_uses_the_gke_endpoint_setting(fake: FakeGcp) -> None:
    settings = OperatorSettings(
        gcp=PolicyGcp(project=PROJECT, location=LOCATION, cluster="dataplane-v2"), gke_endpoint=fake.endpoint
    )
    inspector = connect_inspector(settings)
    assert await inspector.network_policies_enforced(path("dataplane-v2")) is True
    assert await inspector.network_policies_enforced(path("dataplane-v2")) is True
    assert reads(fake, "dataplane-v2") == 1  # an hour's cache by default
    assert NETWORK_POLICY_TTL_SECONDS == 3600
