"""The fake GCP APIs behave like the real ones for the calls the GCP adapters make, through the real clients.

Every test drives ``google-cloud-container`` (REST transport), ``google-cloud-iam`` (gRPC, its only
transport), ``google-cloud-storage`` or ``google-cloud-iap`` (REST) against ``FakeGcp`` on loopback, and asserts
the shapes the adapters will have to handle, including which exception class each library raises for each
error: over REST it is chosen by HTTP status alone, so GKE's 400 FAILED_PRECONDITION is ``BadRequest`` and its
409 ALREADY_EXISTS is ``Conflict``. Nothing sleeps to synchronise: waits poll a condition with a deadline.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
from google.api_core import exceptions
from google.cloud import container_v1, iam_admin_v1, iap_v1
from google.iam.v1 import iam_policy_pb2, options_pb2, policy_pb2  # type: ignore[import-untyped]
from google.protobuf import json_format  # type: ignore[import-untyped]

from tests.support.gcp import (
    FakeGcp,
    fresh_project,
    gke_client,
    iam_client,
    iap_client,
    permission_denied,
    quota_exceeded,
    quota_exceeded_at_create,
    rest_session,
    service_disabled,
    stockout,
    storage_client,
    storage_permission_denied,
    unavailable,
)
from tests.support.kube.polling import wait_until

PROJECT = "my-proj"
LOCATION = "us-central1"
CLUSTER = f"projects/{PROJECT}/locations/{LOCATION}/clusters/ml-cluster"
GSA = f"ray-nlp@{PROJECT}.iam.gserviceaccount.com"
GSA_RESOURCE = f"projects/-/serviceAccounts/{GSA}"
KSA_MEMBER = f"serviceAccount:{PROJECT}.svc.id.goog[team-nlp/ray-nlp]"
BUCKET = "team-nlp-ckpt"
WI_USER = "roles/iam.workloadIdentityUser"
DONE = container_v1.Operation.Status.DONE


@pytest.fixture(autouse=True)
def world(fake: FakeGcp) -> Iterator[None]:
    """A fresh project per test: one Workload Identity cluster, one GSA, one bucket; no stray calls after."""
    yield from fresh_project(
        fake, project=PROJECT, location=LOCATION, cluster="ml-cluster", service_account=GSA, bucket=BUCKET
    )


@pytest.fixture(scope="module")
def gke(fake: FakeGcp) -> container_v1.ClusterManagerClient:
    return gke_client(fake)


@pytest.fixture(scope="module")
def iam(fake: FakeGcp) -> Iterator[iam_admin_v1.IAMClient]:
    client = iam_client(fake)
    yield client
    client.transport.close()  # type: ignore[no-untyped-call]


@pytest.fixture(scope="module")
def iap(fake: FakeGcp) -> Iterator[iap_v1.IdentityAwareProxyAdminServiceClient]:
    client = iap_client(fake)
    yield client
    client.transport.close()  # type: ignore[no-untyped-call]


@pytest.fixture(scope="module")
def gcs(fake: FakeGcp) -> Iterator[Any]:
    client = storage_client(fake, PROJECT)
    yield client
    client.close()


def l4_pool(name: str = "mlw-l4x1-spot") -> container_v1.NodePool:
    """A node pool the way the adapter will build it from a NodePoolPlan."""
    return container_v1.NodePool(
        name=name,
        initial_node_count=0,
        locations=[f"{LOCATION}-a"],
        config=container_v1.NodeConfig(
            machine_type="g2-standard-8",
            spot=True,
            accelerators=[container_v1.AcceleratorConfig(accelerator_count=1, accelerator_type="nvidia-l4")],
            labels={"mlworkload.io/pool": name},
            resource_labels={"managed-by": "mlworkload"},
            taints=[
                container_v1.NodeTaint(
                    key="nvidia.com/gpu", value="present", effect=container_v1.NodeTaint.Effect.NO_SCHEDULE
                )
            ],
        ),
        autoscaling=container_v1.NodePoolAutoscaling(
            enabled=True,
            min_node_count=0,
            max_node_count=8,
            location_policy=container_v1.NodePoolAutoscaling.LocationPolicy.ANY,
        ),
    )


def wait_done(gke: container_v1.ClusterManagerClient, name: str) -> container_v1.Operation:
    path = f"projects/{PROJECT}/locations/{LOCATION}/operations/{name}"

    def done() -> container_v1.Operation | None:
        op = gke.get_operation(name=path)
        return op if op.status == DONE else None

    operation = wait_until(done, timeout=10, interval=0.01, what=f"operation {name} DONE")
    assert operation is not None
    return operation


def error_status(error: exceptions.GoogleAPICallError) -> str:
    """The canonical status of a REST error, from the JSON body (the exception class does not carry it)."""
    assert error.response is not None
    status: str = error.response.json()["error"]["status"]
    return status


# --- GKE node pools --------------------------------------------------------------------------------------


def test_create_node_pool_runs_an_operation_to_done_and_then_the_pool_is_running(
    fake: FakeGcp, gke: container_v1.ClusterManagerClient
) -> None:
    fake.gke.auto_complete_after_polls = 3
    op = gke.create_node_pool(parent=CLUSTER, node_pool=l4_pool())
    assert op.operation_type == container_v1.Operation.Type.CREATE_NODE_POOL
    assert op.status == container_v1.Operation.Status.PENDING
    assert op.name.startswith("operation-")
    assert "/" not in op.name  # the short id, not a path
    assert op.target_link.endswith(f"/locations/{LOCATION}/clusters/ml-cluster/nodePools/mlw-l4x1-spot")
    during = gke.get_node_pool(name=f"{CLUSTER}/nodePools/mlw-l4x1-spot")
    assert during.status == container_v1.NodePool.Status.PROVISIONING

    done = wait_done(gke, op.name)
    assert not done.error.message
    assert len(fake.calls("container", "GetOperation")) == 3
    (pool,) = gke.list_node_pools(parent=CLUSTER).node_pools
    assert pool.status == container_v1.NodePool.Status.RUNNING
    assert pool.config.spot
    assert pool.config.machine_type == "g2-standard-8"
    assert (pool.config.accelerators[0].accelerator_type, pool.config.accelerators[0].accelerator_count) == (
        "nvidia-l4",
        1,
    )
    assert pool.config.taints[0].effect == container_v1.NodeTaint.Effect.NO_SCHEDULE
    assert pool.config.resource_labels["managed-by"] == "mlworkload"
    assert pool.autoscaling.location_policy == container_v1.NodePoolAutoscaling.LocationPolicy.ANY
    assert (pool.autoscaling.min_node_count, pool.autoscaling.max_node_count) == (0, 8)

    (create,) = fake.calls("container", "CreateNodePool")
    sent = create.body["nodePool"]
    assert create.query["$alt"] == "json;enum-encoding=int"
    assert sent["config"]["taints"][0]["effect"] == 1  # the REST transport sends enums as numbers...
    assert sent["config"]["accelerators"][0]["acceleratorCount"] == "1"  # ...and int64 as strings
    assert sent["autoscaling"]["locationPolicy"] == 2
    assert "minNodeCount" not in sent["autoscaling"]  # proto3 JSON omits zero values
    stored = fake.gke.node_pool(CLUSTER, "mlw-l4x1-spot")
    assert stored is not None
    assert stored["config"]["taints"][0]["effect"] == "NO_SCHEDULE"  # stored as canonical REST JSON
    assert stored["autoscaling"]["locationPolicy"] == "ANY"


def test_an_operation_stays_running_until_the_test_completes_it(
    fake: FakeGcp, gke: container_v1.ClusterManagerClient
) -> None:
    op = gke.create_node_pool(parent=CLUSTER, node_pool=l4_pool())
    path = f"projects/{PROJECT}/locations/{LOCATION}/operations/{op.name}"
    for _ in range(3):
        assert gke.get_operation(name=path).status == container_v1.Operation.Status.RUNNING
    assert fake.gke.complete_operations() == [op.name]
    assert gke.get_operation(name=path).status == DONE
    assert fake.gke.active_operations() == []


def test_a_mutation_while_an_operation_runs_is_400_failed_precondition_raised_as_bad_request(
    fake: FakeGcp, gke: container_v1.ClusterManagerClient
) -> None:
    first = gke.create_node_pool(parent=CLUSTER, node_pool=l4_pool("first"))
    with pytest.raises(exceptions.BadRequest) as info:
        gke.create_node_pool(parent=CLUSTER, node_pool=l4_pool("second"))
    error = info.value
    assert type(error) is exceptions.BadRequest  # not FailedPrecondition: REST picks the class by HTTP status
    assert error.code == 400
    assert error_status(error) == "FAILED_PRECONDITION"
    assert error.errors[0]["reason"] == "failedPrecondition"
    assert error.reason == "CLUSTER_ALREADY_HAS_OPERATION"
    assert f"Operation {first.name} is currently creating a node pool for cluster ml-cluster" in error.message
    with pytest.raises(exceptions.BadRequest, match="Please wait and try again once it is done"):
        gke.delete_node_pool(name=f"{CLUSTER}/nodePools/first")

    fake.gke.busy_error_info = False  # the 2024 shape (rancher/gke-operator#509): no ErrorInfo at all
    with pytest.raises(exceptions.BadRequest) as bare:
        gke.create_node_pool(parent=CLUSTER, node_pool=l4_pool("second"))
    assert bare.value.reason is None
    assert error_status(bare.value) == "FAILED_PRECONDITION"

    fake.gke.complete_operations()
    second = gke.create_node_pool(parent=CLUSTER, node_pool=l4_pool("second"))
    assert second.operation_type == container_v1.Operation.Type.CREATE_NODE_POOL
    assert [call.status for call in fake.calls("container", "CreateNodePool")] == [200, 400, 400, 200]


def test_an_operation_gke_started_itself_blocks_node_pool_changes(
    fake: FakeGcp, gke: container_v1.ClusterManagerClient
) -> None:
    upgrade = fake.gke.start_operation(CLUSTER, "UPGRADE_MASTER")
    with pytest.raises(exceptions.BadRequest, match=f"Operation {upgrade} is currently upgrading cluster ml-cluster"):
        gke.create_node_pool(parent=CLUSTER, node_pool=l4_pool())
    fake.gke.complete_operation(upgrade)
    gke.create_node_pool(parent=CLUSTER, node_pool=l4_pool())


def test_the_laxer_model_overlaps_operations_on_different_pools_up_to_the_quota(
    fake: FakeGcp, gke: container_v1.ClusterManagerClient
) -> None:
    fake.gke.max_concurrent_node_pool_operations = 2
    gke.create_node_pool(parent=CLUSTER, node_pool=l4_pool("a"))
    gke.create_node_pool(parent=CLUSTER, node_pool=l4_pool("b"))
    with pytest.raises(exceptions.TooManyRequests, match="hits the concurrent operations quota 2") as info:
        gke.create_node_pool(parent=CLUSTER, node_pool=l4_pool("c"))
    assert error_status(info.value) == "RESOURCE_EXHAUSTED"
    with pytest.raises(exceptions.BadRequest, match="is currently creating a node pool"):
        gke.delete_node_pool(name=f"{CLUSTER}/nodePools/a")  # the same pool is still busy
    assert len(fake.gke.active_operations(CLUSTER)) == 2


def test_a_duplicate_pool_name_is_409_already_exists_raised_as_conflict(
    fake: FakeGcp, gke: container_v1.ClusterManagerClient
) -> None:
    gke.create_node_pool(parent=CLUSTER, node_pool=l4_pool())
    with pytest.raises(exceptions.Conflict) as during:  # still PROVISIONING: the name is taken already
        gke.create_node_pool(parent=CLUSTER, node_pool=l4_pool())
    assert type(during.value) is exceptions.Conflict  # not AlreadyExists
    assert error_status(during.value) == "ALREADY_EXISTS"
    assert during.value.errors[0]["reason"] == "alreadyExists"
    assert f"Already exists: {CLUSTER}/nodePools/mlw-l4x1-spot." in during.value.message
    fake.gke.complete_operations()
    with pytest.raises(exceptions.Conflict):
        gke.create_node_pool(parent=CLUSTER, node_pool=l4_pool())
    assert len(fake.calls("container", "CreateNodePool")) == 3
    assert len(fake.gke.operations) == 1


def test_a_stockout_ends_the_operation_in_error_and_leaves_the_pool_in_an_error_state(
    fake: FakeGcp, gke: container_v1.ClusterManagerClient
) -> None:
    fake.gke.fail_operations(stockout())
    op = gke.create_node_pool(parent=CLUSTER, node_pool=l4_pool())
    fake.gke.complete_operations()
    done = wait_done(gke, op.name)
    assert done.error.code == 8  # RESOURCE_EXHAUSTED
    assert f"The zone 'projects/{PROJECT}/zones/{LOCATION}-a' does not have enough resources" in done.error.message
    assert "[GCE_STOCKOUT]" in done.detail
    assert done.status_message == done.detail
    assert done.cluster_conditions[0].code == container_v1.StatusCondition.Code.GCE_STOCKOUT
    pool = gke.get_node_pool(name=f"{CLUSTER}/nodePools/mlw-l4x1-spot")
    assert pool.status == container_v1.NodePool.Status.RUNNING_WITH_ERROR
    assert "[GCE_STOCKOUT]" in pool.status_message


def test_quota_exhausted_while_creating_shows_only_in_the_operation_detail_and_conditions(
    fake: FakeGcp, gke: container_v1.ClusterManagerClient
) -> None:
    fake.gke.fail_operations(quota_exceeded("NVIDIA_L4_GPUS", 0.0), pool="mlw-l4x1-spot")
    op = gke.create_node_pool(parent=CLUSTER, node_pool=l4_pool())
    fake.gke.complete_operations()
    done = wait_done(gke, op.name)
    assert done.error.code == 8
    assert f"Quota 'NVIDIA_L4_GPUS' exceeded.  Limit: 0.0 in region {LOCATION}." in done.error.message
    assert "GCE_QUOTA_EXCEEDED" not in done.error.message  # the token is in detail and conditions only
    assert "[GCE_QUOTA_EXCEEDED]" in done.detail
    assert done.cluster_conditions[0].code == container_v1.StatusCondition.Code.GCE_QUOTA_EXCEEDED
    assert done.cluster_conditions[0].canonical_code == 8


def test_quota_refused_up_front_is_403_permission_denied(fake: FakeGcp, gke: container_v1.ClusterManagerClient) -> None:
    fake.fail("container", "CreateNodePool", quota_exceeded_at_create(PROJECT, "NVIDIA_L4_GPUS", 8.0, 8.0, 0.0))
    with pytest.raises(exceptions.Forbidden) as info:
        gke.create_node_pool(parent=CLUSTER, node_pool=l4_pool())
    assert type(info.value) is exceptions.Forbidden
    assert error_status(info.value) == "PERMISSION_DENIED"
    assert 'Insufficient regional quota to satisfy request: resource "NVIDIA_L4_GPUS"' in info.value.message
    assert fake.gke.operations == {}
    assert fake.gke.node_pools(CLUSTER) == []


def test_permission_denied_and_a_disabled_api_are_403(fake: FakeGcp, gke: container_v1.ClusterManagerClient) -> None:
    fake.fail("container", "CreateNodePool", permission_denied("container.clusters.update", CLUSTER))
    with pytest.raises(exceptions.Forbidden, match=r'Required "container.clusters.update" permission\(s\)'):
        gke.create_node_pool(parent=CLUSTER, node_pool=l4_pool())
    fake.fail("container", "ListNodePools", service_disabled("Kubernetes Engine API", "container.googleapis.com", "1"))
    with pytest.raises(exceptions.Forbidden) as disabled:
        gke.list_node_pools(parent=CLUSTER)
    assert disabled.value.reason == "SERVICE_DISABLED"
    assert disabled.value.domain == "googleapis.com"


def test_503_is_service_unavailable_and_only_idempotent_calls_are_retried_by_the_client(
    fake: FakeGcp, gke: container_v1.ClusterManagerClient
) -> None:
    fake.fail("container", "CreateNodePool", unavailable())
    with pytest.raises(exceptions.ServiceUnavailable):
        gke.create_node_pool(parent=CLUSTER, node_pool=l4_pool())
    assert len(fake.calls("container", "CreateNodePool")) == 1  # create has no default retry

    fake.gke.put_node_pool(CLUSTER, {"name": "seeded", "config": {"machineType": "e2-standard-4"}})
    fake.fail("container", "GetNodePool", unavailable())
    assert gke.get_node_pool(name=f"{CLUSTER}/nodePools/seeded").name == "seeded"
    assert [call.status for call in fake.calls("container", "GetNodePool")] == [503, 200]  # retried by the client


def test_an_invalid_machine_or_accelerator_is_400_invalid_argument(
    fake: FakeGcp, gke: container_v1.ClusterManagerClient
) -> None:
    unknown_gpu = l4_pool()
    unknown_gpu.config.accelerators[0].accelerator_type = "nvidia-tesla-k9000"
    with pytest.raises(exceptions.BadRequest) as info:
        gke.create_node_pool(parent=CLUSTER, node_pool=unknown_gpu)
    assert error_status(info.value) == "INVALID_ARGUMENT"
    assert info.value.errors[0]["reason"] == "badRequest"
    assert 'accelerator type "nvidia-tesla-k9000"' in info.value.message

    default_machine = l4_pool()
    default_machine.config.machine_type = ""
    with pytest.raises(exceptions.BadRequest, match=r"Cannot use default machine type \(e2-medium\) with GPUs"):
        gke.create_node_pool(parent=CLUSTER, node_pool=default_machine)

    fake.gke.known_machine_types = frozenset({"g2-standard-8"})
    wrong_machine = l4_pool()
    wrong_machine.config.machine_type = "g2-standard-7"
    with pytest.raises(exceptions.BadRequest, match=f'Invalid machine type "g2-standard-7" in zone "{LOCATION}-a"'):
        gke.create_node_pool(parent=CLUSTER, node_pool=wrong_machine)

    with pytest.raises(exceptions.BadRequest, match="Node pool name"):
        gke.create_node_pool(parent=CLUSTER, node_pool=l4_pool("Not_A_Name"))
    assert fake.gke.operations == {}


def test_unknown_fields_in_the_body_are_rejected_like_the_real_front_end(fake: FakeGcp) -> None:
    response = rest_session().post(
        f"{fake.endpoint}/v1/{CLUSTER}/nodePools", json={"nodePool": {"name": "x", "nodeCount": 3}}
    )
    assert response.status_code == 400
    assert response.json()["error"]["status"] == "INVALID_ARGUMENT"
    assert "Invalid JSON payload received" in response.json()["error"]["message"]


def test_delete_node_pool_removes_it_when_the_operation_is_done(
    fake: FakeGcp, gke: container_v1.ClusterManagerClient
) -> None:
    fake.gke.put_node_pool(CLUSTER, {"name": "old", "config": {"machineType": "e2-standard-4"}})
    op = gke.delete_node_pool(name=f"{CLUSTER}/nodePools/old")
    assert op.operation_type == container_v1.Operation.Type.DELETE_NODE_POOL
    assert gke.get_node_pool(name=f"{CLUSTER}/nodePools/old").status == container_v1.NodePool.Status.STOPPING
    fake.gke.complete_operations()
    wait_done(gke, op.name)
    with pytest.raises(exceptions.NotFound, match=re.escape(f"Not found: {CLUSTER}/nodePools/old.")):
        gke.get_node_pool(name=f"{CLUSTER}/nodePools/old")
    with pytest.raises(exceptions.NotFound):
        gke.delete_node_pool(name=f"{CLUSTER}/nodePools/old")
    with pytest.raises(
        exceptions.NotFound, match=re.escape(f"Not found: projects/{PROJECT}/locations/{LOCATION}/clusters/nope.")
    ):
        gke.list_node_pools(parent=f"projects/{PROJECT}/locations/{LOCATION}/clusters/nope")


def test_set_autoscaling_is_an_operation_and_applies_when_it_ends(
    fake: FakeGcp, gke: container_v1.ClusterManagerClient
) -> None:
    fake.gke.put_node_pool(CLUSTER, l4_pool_json())
    name = f"{CLUSTER}/nodePools/mlw-l4x1-spot"
    autoscaling = container_v1.NodePoolAutoscaling(
        enabled=True,
        total_min_node_count=0,
        total_max_node_count=2,
        location_policy=container_v1.NodePoolAutoscaling.LocationPolicy.BALANCED,
    )
    op = gke.set_node_pool_autoscaling(request={"name": name, "autoscaling": autoscaling})
    [call] = fake.calls("container", "SetNodePoolAutoscaling")
    assert (call.method, call.path) == ("POST", f"/v1/{name}:setAutoscaling")
    assert call.body["autoscaling"]["totalMaxNodeCount"] == 2  # numeric enums and proto3 JSON, as the client sends
    assert gke.get_node_pool(name=name).autoscaling.total_max_node_count == 0  # not before the operation ends
    with pytest.raises(exceptions.BadRequest, match=r"is currently|incompatible operation"):
        gke.set_node_pool_autoscaling(request={"name": name, "autoscaling": autoscaling})  # one at a time
    fake.gke.complete_operations()
    wait_done(gke, op.name)
    pool = gke.get_node_pool(name=name)
    assert (pool.autoscaling.total_max_node_count, pool.autoscaling.location_policy) == (
        2,
        container_v1.NodePoolAutoscaling.LocationPolicy.BALANCED,
    )
    bad = container_v1.NodePoolAutoscaling(enabled=True, total_min_node_count=3, total_max_node_count=2)
    with pytest.raises(exceptions.BadRequest, match="Invalid autoscaling bounds"):
        gke.set_node_pool_autoscaling(request={"name": name, "autoscaling": bad})


def test_update_node_pool_replaces_resource_labels_and_zones_guarded_by_the_etag(
    fake: FakeGcp, gke: container_v1.ClusterManagerClient
) -> None:
    fake.gke.put_node_pool(CLUSTER, l4_pool_json())
    name = f"{CLUSTER}/nodePools/mlw-l4x1-spot"
    read = gke.get_node_pool(name=name)
    labels = container_v1.ResourceLabels(labels={"managed-by": "mlworkload", "mlworkload-claim-abc": "b"})
    op = gke.update_node_pool(request={"name": name, "resource_labels": labels, "etag": read.etag,
                                       "locations": [f"{LOCATION}-b"]})  # fmt: skip
    [call] = fake.calls("container", "UpdateNodePool")
    assert (call.method, call.path) == ("PUT", f"/v1/{name}")
    assert call.body["resourceLabels"] == {"labels": {"managed-by": "mlworkload", "mlworkload-claim-abc": "b"}}
    assert op.operation_type == container_v1.Operation.Type.UPGRADE_NODES
    assert gke.get_node_pool(name=name).status == container_v1.NodePool.Status.RECONCILING
    fake.gke.complete_operations()
    wait_done(gke, op.name)
    pool = gke.get_node_pool(name=name)
    assert dict(pool.config.resource_labels) == {"managed-by": "mlworkload", "mlworkload-claim-abc": "b"}
    assert (list(pool.locations), pool.status) == ([f"{LOCATION}-b"], container_v1.NodePool.Status.RUNNING)
    assert pool.etag != read.etag

    with pytest.raises(exceptions.Conflict) as stale:  # the etag read before the change
        gke.update_node_pool(request={"name": name, "resource_labels": labels, "etag": read.etag})
    assert error_status(stale.value) == "ABORTED"
    with pytest.raises(exceptions.BadRequest, match="must be zones of cluster"):
        gke.update_node_pool(request={"name": name, "locations": ["europe-west4-a"], "etag": pool.etag})
    assert fake.gke.active_operations() == []


def test_node_settings_are_stored_defaulted_and_returned_as_gke_does(
    fake: FakeGcp, gke: container_v1.ClusterManagerClient
) -> None:
    plain = l4_pool("mlw-plain")
    gke.create_node_pool(parent=CLUSTER, node_pool=plain)
    config = gke.get_node_pool(name=f"{CLUSTER}/nodePools/mlw-plain").config
    assert (config.service_account, config.disk_type, config.disk_size_gb, config.image_type) == (
        "default", "pd-balanced", 100, "COS_CONTAINERD")  # fmt: skip
    assert "https://www.googleapis.com/auth/devstorage.read_only" in config.oauth_scopes  # the default scopes
    shielded = config.shielded_instance_config
    assert (shielded.enable_secure_boot, shielded.enable_integrity_monitoring) == (False, True)
    assert not config.gcfs_config.enabled
    labels = {"managed-by": "mlworkload", "goog-gke-node-pool-provisioning-model": "spot"}  # GKE adds its own
    assert dict(config.resource_labels) == labels
    fake.gke.complete_operations()

    hardened = l4_pool("mlw-hardened")
    hardened.config.service_account = GSA
    hardened.config.oauth_scopes = ["https://www.googleapis.com/auth/cloud-platform"]
    hardened.config.disk_type, hardened.config.disk_size_gb = "pd-ssd", 200
    hardened.config.shielded_instance_config = container_v1.ShieldedInstanceConfig(
        enable_secure_boot=True, enable_integrity_monitoring=True
    )
    hardened.config.gcfs_config = container_v1.GcfsConfig(enabled=True)
    hardened.config.spot = False
    gke.create_node_pool(parent=CLUSTER, node_pool=hardened)
    (listed,) = [pool for pool in gke.list_node_pools(parent=CLUSTER).node_pools if pool.name == "mlw-hardened"]
    config = listed.config
    assert config.service_account == GSA
    assert list(config.oauth_scopes) == ["https://www.googleapis.com/auth/cloud-platform"]
    assert (config.disk_type, config.disk_size_gb, config.shielded_instance_config.enable_secure_boot) == (
        "pd-ssd", 200, True)  # fmt: skip
    assert config.gcfs_config.enabled
    assert config.resource_labels["goog-gke-node-pool-provisioning-model"] == "on-demand"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"image_type": "UBUNTU_CONTAINERD", "gcfs_config": {"enabled": True}},
         "Image streaming (gcfsConfig) requires the COS_CONTAINERD image type"),
        ({"disk_size_gb": 9}, "the smallest allowed disk size is 10GB"),
        ({"disk_type": "pd-standard"}, "pd-standard disk type cannot be used by g2-standard-8 machine type"),
        ({"disk_type": "hyperdisk-balanced"}, "hyperdisk-balanced disk type cannot be used by g2-standard-8"),
        ({"image_type": "COS"}, 'Invalid image type "COS"'),
        ({"service_account": "nodes"}, 'Invalid service account "nodes"'),
    ],
)  # fmt: skip
def test_node_settings_gke_refuses_are_refused_at_create(
    change: dict[str, Any], message: str, fake: FakeGcp, gke: container_v1.ClusterManagerClient
) -> None:
    pool = l4_pool()
    for key, value in change.items():
        setattr(pool.config, key, value)
    with pytest.raises(exceptions.BadRequest, match=re.escape(message)):
        gke.create_node_pool(parent=CLUSTER, node_pool=pool)
    assert fake.gke.node_pools(CLUSTER) == []


def test_update_node_pool_changes_image_streaming_and_disks_and_refuses_what_create_refuses(
    fake: FakeGcp, gke: container_v1.ClusterManagerClient
) -> None:
    fake.gke.put_node_pool(CLUSTER, l4_pool_json())
    name = f"{CLUSTER}/nodePools/mlw-l4x1-spot"

    def update(**fields: Any) -> container_v1.Operation:
        read = gke.get_node_pool(name=name)
        request = {"name": name, "etag": read.etag, "node_version": read.version, "image_type": read.config.image_type}
        op = gke.update_node_pool(request={**request, **fields})
        assert op.operation_type == container_v1.Operation.Type.UPGRADE_NODES
        fake.gke.complete_operations()
        return op

    with pytest.raises(exceptions.BadRequest, match="requires the COS_CONTAINERD image type"):
        gke.update_node_pool(request={"name": name, "image_type": "UBUNTU_CONTAINERD",
                                      "gcfs_config": {"enabled": True}})  # fmt: skip
    update(image_type="UBUNTU_CONTAINERD")
    assert gke.get_node_pool(name=name).config.image_type == "UBUNTU_CONTAINERD"
    with pytest.raises(exceptions.BadRequest, match="requires the COS_CONTAINERD image type"):
        gke.update_node_pool(request={"name": name, "gcfs_config": {"enabled": True}})
    update(image_type="COS_CONTAINERD")
    update(gcfs_config={"enabled": True})
    assert gke.get_node_pool(name=name).config.gcfs_config.enabled
    update(disk_type="pd-ssd", disk_size_gb=250)
    config = gke.get_node_pool(name=name).config
    assert (config.image_type, config.gcfs_config.enabled, config.disk_type, config.disk_size_gb) == (
        "COS_CONTAINERD", True, "pd-ssd", 250)  # fmt: skip
    update(gcfs_config={"enabled": False})
    assert not gke.get_node_pool(name=name).config.gcfs_config.enabled
    with pytest.raises(exceptions.BadRequest, match="pd-standard disk type cannot be used by g2-standard-8"):
        gke.update_node_pool(request={"name": name, "disk_type": "pd-standard"})
    with pytest.raises(exceptions.BadRequest, match="smallest allowed disk size is 10GB"):
        gke.update_node_pool(request={"name": name, "disk_size_gb": 5})
    assert fake.gke.active_operations() == []


def test_a_pool_deleted_by_hand_is_stopping_then_gone_and_capacity_can_return(
    fake: FakeGcp, gke: container_v1.ClusterManagerClient
) -> None:
    fake.gke.put_node_pool(CLUSTER, l4_pool_json(), status="RUNNING_WITH_ERROR")
    name = f"{CLUSTER}/nodePools/mlw-l4x1-spot"
    fake.gke.capacity_returned(CLUSTER, "mlw-l4x1-spot")
    assert gke.get_node_pool(name=name).status == container_v1.NodePool.Status.RUNNING
    op = fake.gke.delete_node_pool_by_hand(CLUSTER, "mlw-l4x1-spot")
    assert gke.get_node_pool(name=name).status == container_v1.NodePool.Status.STOPPING
    assert gke.get_operation(name=f"projects/{PROJECT}/locations/{LOCATION}/operations/{op}").operation_type == (
        container_v1.Operation.Type.DELETE_NODE_POOL
    )
    fake.gke.complete_operations()
    assert fake.gke.node_pool(CLUSTER, "mlw-l4x1-spot") is None


def l4_pool_json() -> dict[str, Any]:
    pool: dict[str, Any] = json_format.MessageToDict(container_v1.NodePool.pb(l4_pool()))
    return pool


def test_operations_can_be_listed_to_find_one_in_flight_and_cancelled(
    fake: FakeGcp, gke: container_v1.ClusterManagerClient
) -> None:
    op = gke.create_node_pool(parent=CLUSTER, node_pool=l4_pool())
    listed = gke.list_operations(parent=f"projects/{PROJECT}/locations/{LOCATION}").operations
    assert [(o.name, o.status) for o in listed] == [(op.name, container_v1.Operation.Status.PENDING)]
    gke.cancel_operation(name=f"projects/{PROJECT}/locations/{LOCATION}/operations/{op.name}")
    assert wait_done(gke, op.name).error.code == 1  # CANCELLED
    assert fake.gke.node_pools(CLUSTER) == []


def test_the_cluster_reports_its_workload_pool(gke: container_v1.ClusterManagerClient) -> None:
    cluster = gke.get_cluster(name=CLUSTER)
    assert cluster.workload_identity_config.workload_pool == f"{PROJECT}.svc.id.goog"
    assert list(cluster.locations) == [f"{LOCATION}-{zone}" for zone in "abc"]


# --- IAM on a Google service account --------------------------------------------------------------------


def test_service_account_policy_read_modify_write_over_grpc(fake: FakeGcp, iam: iam_admin_v1.IAMClient) -> None:
    policy = iam.get_iam_policy(resource=GSA_RESOURCE)
    assert (policy.version, policy.etag, list(policy.bindings)) == (1, b"\x00\x20\x01", [])  # "ACAB"
    policy.bindings.add(role=WI_USER, members=[KSA_MEMBER, KSA_MEMBER])
    written = iam.set_iam_policy(request={"resource": GSA_RESOURCE, "policy": policy})
    assert written.etag != policy.etag
    assert list(written.bindings[0].members) == [KSA_MEMBER]
    assert fake.iam.members(GSA, WI_USER) == [KSA_MEMBER]
    assert iam.get_iam_policy(resource=GSA_RESOURCE).etag == written.etag
    calls = fake.calls("iam")
    assert [(c.rpc, c.transport, c.status) for c in calls] == [
        ("GetIamPolicy", "grpc", 200),
        ("SetIamPolicy", "grpc", 200),
        ("GetIamPolicy", "grpc", 200),
    ]
    assert calls[1].body["policy"]["bindings"][0]["role"] == WI_USER


def test_a_stale_etag_is_aborted_and_a_fresh_read_modify_write_keeps_both_changes(
    fake: FakeGcp, iam: iam_admin_v1.IAMClient
) -> None:
    mine = iam.get_iam_policy(resource=GSA_RESOURCE)
    other = "serviceAccount:my-proj.svc.id.goog[team-cv/ray-cv]"
    fake.iam.set_bindings(GSA, [{"role": WI_USER, "members": [other]}])  # someone else wrote in between
    mine.bindings.add(role=WI_USER, members=[KSA_MEMBER])
    with pytest.raises(exceptions.Aborted, match="There were concurrent policy changes") as info:
        iam.set_iam_policy(request={"resource": GSA_RESOURCE, "policy": mine})
    assert info.value.code == 409
    assert fake.iam.members(GSA, WI_USER) == [other]

    fresh = iam.get_iam_policy(resource=GSA_RESOURCE)
    fresh.bindings[0].members.append(KSA_MEMBER)
    iam.set_iam_policy(request={"resource": GSA_RESOURCE, "policy": fresh})
    assert fake.iam.members(GSA, WI_USER) == [other, KSA_MEMBER]


def test_a_missing_account_is_permission_denied_not_not_found(iam: iam_admin_v1.IAMClient) -> None:
    with pytest.raises(exceptions.PermissionDenied) as info:
        iam.get_iam_policy(resource=f"projects/-/serviceAccounts/nobody@{PROJECT}.iam.gserviceaccount.com")
    assert info.value.reason == "IAM_PERMISSION_DENIED"
    assert "Permission 'iam.serviceAccounts.getIamPolicy' denied on resource (or it may not exist)." in str(info.value)


def test_a_workload_identity_member_needs_an_existing_identity_pool(fake: FakeGcp, iam: iam_admin_v1.IAMClient) -> None:
    policy = policy_pb2.Policy(
        bindings=[policy_pb2.Binding(role=WI_USER, members=["serviceAccount:p2.svc.id.goog[a/b]"])]
    )
    with pytest.raises(exceptions.InvalidArgument, match=r"Identity Pool does not exist \(p2.svc.id.goog\)"):
        iam.set_iam_policy(request={"resource": GSA_RESOURCE, "policy": policy})
    fake.gke.add_cluster("p2", "europe-west4-a", "other")  # a Workload Identity cluster creates the pool
    iam.set_iam_policy(request={"resource": GSA_RESOURCE, "policy": policy})


def test_service_account_policy_over_rest_conflicts_with_409_aborted(fake: FakeGcp) -> None:
    session = rest_session()
    base = f"{fake.endpoint}/v1/{GSA_RESOURCE}"
    policy = session.post(f"{base}:getIamPolicy", json={"options": {"requestedPolicyVersion": 3}}).json()
    assert policy == {"version": 1, "etag": "ACAB"}
    policy["bindings"] = [{"role": WI_USER, "members": [KSA_MEMBER]}]
    assert session.post(f"{base}:setIamPolicy", json={"policy": policy}).status_code == 200
    stale = session.post(f"{base}:setIamPolicy", json={"policy": policy})
    assert stale.status_code == 409
    assert stale.json()["error"]["status"] == "ABORTED"
    assert type(exceptions.from_http_response(stale)) is exceptions.Conflict  # type: ignore[no-untyped-call]  # what a REST adapter would catch


# --- Cloud Storage bucket IAM ---------------------------------------------------------------------------


def test_bucket_policy_read_modify_write_with_requested_version_3(fake: FakeGcp, gcs: Any) -> None:
    bucket = gcs.bucket(BUCKET)
    policy = bucket.get_iam_policy(requested_policy_version=3)
    assert (policy.version, policy.etag) == (1, "CAE=")  # no conditions: version 1 although 3 was asked for
    assert {binding["role"] for binding in policy.bindings} == {
        "roles/storage.legacyBucketOwner",
        "roles/storage.legacyBucketReader",
    }
    policy.bindings.append({"role": "roles/storage.objectUser", "members": {f"serviceAccount:{GSA}"}})
    written = bucket.set_iam_policy(policy)
    assert written.etag == "CAI="
    assert fake.storage.members(BUCKET, "roles/storage.objectUser") == [f"serviceAccount:{GSA}"]
    (get,) = fake.calls("storage", "GetIamPolicy")
    assert get.query["optionsRequestedPolicyVersion"] == "3"
    (put,) = fake.calls("storage", "SetIamPolicy")
    assert put.method == "PUT"
    assert put.body["etag"] == "CAE="
    # the client may also fetch the bucket in the background (its metadata cache): count IAM calls by rpc


def test_a_concurrent_bucket_policy_change_is_412_precondition_failed(fake: FakeGcp, gcs: Any) -> None:
    bucket = gcs.bucket(BUCKET)
    policy = bucket.get_iam_policy(requested_policy_version=3)
    fake.storage.set_bindings(BUCKET, [{"role": "roles/storage.objectViewer", "members": ["group:ml@example.com"]}])
    policy.bindings.append({"role": "roles/storage.objectUser", "members": {f"serviceAccount:{GSA}"}})
    with pytest.raises(exceptions.PreconditionFailed) as info:
        bucket.set_iam_policy(policy)
    assert info.value.code == 412
    assert info.value.errors[0]["reason"] == "conditionNotMet"
    assert fake.storage.members(BUCKET, "roles/storage.objectUser") == []

    fresh = bucket.get_iam_policy(requested_policy_version=3)
    fresh.bindings.append({"role": "roles/storage.objectUser", "members": {f"serviceAccount:{GSA}"}})
    bucket.set_iam_policy(fresh)
    assert fake.storage.members(BUCKET, "roles/storage.objectViewer") == ["group:ml@example.com"]
    assert fake.storage.members(BUCKET, "roles/storage.objectUser") == [f"serviceAccount:{GSA}"]
    assert [c.status for c in fake.calls("storage", "SetIamPolicy")] == [412, 200]


def test_missing_bucket_is_404_and_a_denied_caller_is_403(fake: FakeGcp, gcs: Any) -> None:
    assert gcs.bucket(BUCKET).exists()
    assert not gcs.bucket("nope").exists()
    with pytest.raises(exceptions.NotFound, match=re.escape("The specified bucket does not exist.")):
        gcs.bucket("nope").get_iam_policy(requested_policy_version=3, retry=None)
    fake.fail("storage", "GetIamPolicy", storage_permission_denied(GSA, "storage.buckets.getIamPolicy"))
    with pytest.raises(exceptions.Forbidden, match=re.escape("does not have storage.buckets.getIamPolicy access")):
        gcs.bucket(BUCKET).get_iam_policy(requested_policy_version=3, retry=None)


# --- IAP on a backend service --------------------------------------------------------------------------

BACKEND = "k8s-be-30167--01177f64ec764488"
IAP_RESOURCE = f"projects/{PROJECT}/iap_web/compute/services/{BACKEND}"
ACCESSOR = "roles/iap.httpsResourceAccessor"


def iap_read(iap: iap_v1.IdentityAwareProxyAdminServiceClient, resource: str, version: int = 3) -> Any:
    options = options_pb2.GetPolicyOptions(requested_policy_version=version)
    return iap.get_iam_policy(request=iam_policy_pb2.GetIamPolicyRequest(resource=resource, options=options))


def iap_write(iap: iap_v1.IdentityAwareProxyAdminServiceClient, resource: str, policy: Any) -> Any:
    return iap.set_iam_policy(request=iam_policy_pb2.SetIamPolicyRequest(resource=resource, policy=policy))


def test_iap_policy_read_modify_write_and_a_stale_etag_is_409_aborted_raised_as_conflict(
    fake: FakeGcp, iap: iap_v1.IdentityAwareProxyAdminServiceClient
) -> None:
    fake.iap.add_backend_service(PROJECT, BACKEND)
    mine = iap_read(iap, IAP_RESOURCE)
    assert (mine.version, mine.etag, list(mine.bindings)) == (1, b"\x00\x20\x01", [])  # "ACAB", never set
    mine.bindings.add(role=ACCESSOR, members=["user:ana@example.com"])
    written = iap_write(iap, IAP_RESOURCE, mine)
    assert written.etag != mine.etag
    assert fake.iap.members(IAP_RESOURCE, ACCESSOR) == ["user:ana@example.com"]

    fake.iap.set_bindings(IAP_RESOURCE, [{"role": ACCESSOR, "members": ["group:ml@example.com"]}])
    with pytest.raises(exceptions.Conflict, match="There were concurrent policy changes") as info:
        iap_write(iap, IAP_RESOURCE, written)  # its etag is stale now
    assert type(info.value) is exceptions.Conflict  # REST picks the class by HTTP status, not Aborted
    assert error_status(info.value) == "ABORTED"
    assert fake.iap.members(IAP_RESOURCE, ACCESSOR) == ["group:ml@example.com"]

    calls = fake.calls("iap")
    assert [(c.rpc, c.method, c.status) for c in calls] == [
        ("GetIamPolicy", "POST", 200), ("SetIamPolicy", "POST", 200), ("SetIamPolicy", "POST", 409),
    ]  # fmt: skip
    assert calls[0].path == f"/v1/{IAP_RESOURCE}:getIamPolicy"
    assert calls[0].body == {"options": {"requestedPolicyVersion": 3}}
    assert calls[1].body["policy"]["etag"] == "ACAB"  # bytes travel base64, as the REST client encodes them
    assert calls[0].query["$alt"] == "json;enum-encoding=int"


def test_iap_names_a_backend_by_project_id_or_number_and_by_name_or_id_and_regional_ones_by_region(
    fake: FakeGcp, iap: iap_v1.IdentityAwareProxyAdminServiceClient
) -> None:
    fake.iap.add_backend_service(PROJECT, BACKEND)
    regional = fake.iap.add_backend_service(PROJECT, BACKEND, LOCATION)
    assert regional == f"projects/{PROJECT}/iap_web/compute-{LOCATION}/services/{BACKEND}"
    fake.iap.set_bindings(IAP_RESOURCE, [{"role": ACCESSOR, "members": ["user:ana@example.com"]}])
    number, backend_id = fake.gke.project_number(PROJECT), fake.iap.backend(IAP_RESOURCE).id
    for spelling in (f"projects/{number}/iap_web/compute/services/{BACKEND}",
                     f"projects/{PROJECT}/iap_web/compute/services/{backend_id}"):  # fmt: skip
        assert list(iap_read(iap, spelling).bindings[0].members) == ["user:ana@example.com"]
    assert list(iap_read(iap, regional).bindings) == []  # same name, other region: another backend service


def test_iap_answers_404_for_a_backend_that_does_not_exist_and_a_recreated_one_starts_empty(
    fake: FakeGcp, iap: iap_v1.IdentityAwareProxyAdminServiceClient
) -> None:
    with pytest.raises(exceptions.NotFound, match="Requested entity was not found") as info:
        iap_read(iap, IAP_RESOURCE)
    assert error_status(info.value) == "NOT_FOUND"
    fake.iap.add_backend_service(PROJECT, BACKEND)
    fake.iap.set_bindings(IAP_RESOURCE, [{"role": ACCESSOR, "members": ["user:ana@example.com"]}])
    fake.iap.delete_backend_service(IAP_RESOURCE)  # the Ingress was deleted and created again
    with pytest.raises(exceptions.NotFound):
        iap_write(iap, IAP_RESOURCE, policy_pb2.Policy())
    fake.iap.add_backend_service(PROJECT, BACKEND)
    assert list(iap_read(iap, IAP_RESOURCE).bindings) == []


def test_iap_conditions_need_version_3_and_unknown_roles_are_refused(
    fake: FakeGcp, iap: iap_v1.IdentityAwareProxyAdminServiceClient
) -> None:
    fake.iap.add_backend_service(PROJECT, BACKEND)
    condition = {"title": "until-2030", "expression": 'request.time < timestamp("2030-01-01T00:00:00Z")'}
    policy = iap_read(iap, IAP_RESOURCE)
    conditional = policy.bindings.add(role=ACCESSOR, members=["user:ana@example.com"])
    conditional.condition.title, conditional.condition.expression = condition["title"], condition["expression"]
    with pytest.raises(exceptions.BadRequest, match="IAM Conditions require policy version 3"):
        iap_write(iap, IAP_RESOURCE, policy)
    policy.version = 3
    iap_write(iap, IAP_RESOURCE, policy)

    full = iap_read(iap, IAP_RESOURCE)
    assert (full.version, full.bindings[0].role, full.bindings[0].condition.title) == (3, ACCESSOR, "until-2030")
    legacy = iap_read(iap, IAP_RESOURCE, version=1)
    assert legacy.version == 1
    assert re.fullmatch(rf"{ACCESSOR}_withcond_[0-9a-f]{{20}}", legacy.bindings[0].role)
    assert not legacy.bindings[0].HasField("condition")

    wrong = iap_read(iap, IAP_RESOURCE)
    wrong.bindings.add(role="roles/storage.objectUser", members=["user:ana@example.com"])
    with pytest.raises(exceptions.BadRequest, match=r"Role roles/storage\.objectUser is not supported"):
        iap_write(iap, IAP_RESOURCE, wrong)
    assert [c.status for c in fake.calls("iap", "SetIamPolicy")] == [400, 200, 400]


def test_unknown_fields_in_an_iap_body_are_rejected(fake: FakeGcp) -> None:
    fake.iap.add_backend_service(PROJECT, BACKEND)
    response = rest_session().post(f"{fake.endpoint}/v1/{IAP_RESOURCE}:setIamPolicy", json={"polcy": {}})
    assert response.status_code == 400
    assert "Invalid JSON payload received" in response.json()["error"]["message"]


# --- the fake itself ------------------------------------------------------------------------------------


def test_faults_match_by_predicate_and_count_down(fake: FakeGcp, gke: container_v1.ClusterManagerClient) -> None:
    fault = fake.fail(
        "container", "CreateNodePool", unavailable(), times=2, when=lambda r: r.body["nodePool"]["name"] == "flaky"
    )
    for _ in range(2):
        with pytest.raises(exceptions.ServiceUnavailable):
            gke.create_node_pool(parent=CLUSTER, node_pool=l4_pool("flaky"))
    gke.create_node_pool(parent=CLUSTER, node_pool=l4_pool("flaky"))
    assert (fault.hits, fault.times) == (2, 0)
    mark = fake.mark()
    fake.gke.complete_operations()
    gke.create_node_pool(parent=CLUSTER, node_pool=l4_pool("steady"))
    assert [c.body["nodePool"]["name"] for c in fake.calls("container", "CreateNodePool", since=mark)] == ["steady"]
