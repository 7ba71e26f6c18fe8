"""The real operator in live GCP mode: kopf against the in-memory API server, Google clients against FakeGcp.

Everything between the MLWorkload and the GKE/IAM/Storage REST and gRPC calls is the production
code path; only the endpoints are local. Operations complete when a test says so
(`fake.gke.complete_operations()`), so each step is observed, not raced.
"""

import datetime
import functools
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from mlworkload.builders.ingress import neg_backend_name
from tests.support.documents import GSA, WorkloadDoc, created_workloads, permissive_policy, workload
from tests.support.gcp import FakeGcp, stockout
from tests.support.kube import KubeEmulatorServer, wait_until
from tests.support.observed import workload_condition, workload_status
from tests.support.operator import emulated_cluster, running_operator

NS = "team-gcp"
MLW = "mlworkload.io/v1alpha1"
PROJECT, LOCATION, CLUSTER = "my-proj", "us-central1", "ml-cluster"
CLUSTER_PATH = f"projects/{PROJECT}/locations/{LOCATION}/clusters/{CLUSTER}"
WI_USER = "roles/iam.workloadIdentityUser"
OBJECT_USER = "roles/storage.objectUser"
WAIT = 30.0


def live_gcp_settings(fake: FakeGcp) -> dict[str, str]:
    return {
        "MLW_GCP_MODE": "live",
        "MLW_GCP_PROJECT": PROJECT,
        "MLW_GCP_LOCATION": LOCATION,
        "MLW_GKE_CLUSTER": CLUSTER,
        "MLW_GKE_ENDPOINT": fake.endpoint,
        "MLW_IAM_ENDPOINT": f"http://{fake.grpc_target}",
        "MLW_IAP_ENDPOINT": fake.endpoint,
        "MLW_STORAGE_ENDPOINT": fake.endpoint,
        "MLW_POOL_RELEASE_GRACE_SECONDS": "1",
    }


@pytest.fixture(scope="module")
def server() -> Iterator[KubeEmulatorServer]:
    with emulated_cluster(NS) as emulator:
        yield emulator


@pytest.fixture(scope="module", autouse=True)
def operator(server: KubeEmulatorServer, fake: FakeGcp, tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    fake.gke.add_cluster(PROJECT, LOCATION, CLUSTER)
    fake.iam.add_service_account(GSA)
    kubeconfig = server.kubeconfig(tmp_path_factory.mktemp("kube") / "config")
    with running_operator(kubeconfig, settings=live_gcp_settings(fake)):
        yield


def status(server: KubeEmulatorServer, name: str) -> dict[str, Any]:
    return workload_status(server, NS, name)


def condition(server: KubeEmulatorServer, name: str, kind: str) -> dict[str, Any]:
    return workload_condition(server, NS, name, kind)


def wait_condition(server: KubeEmulatorServer, name: str, kind: str, state: str, reason: str) -> dict[str, Any]:
    return wait_until(
        lambda: (c := condition(server, name, kind)) and c["status"] == state and c["reason"] == reason and c,
        timeout=WAIT,
        what=f"{name}: {kind}={state} ({reason}); now {condition(server, name, kind)}",
    )


def pool_names(server: KubeEmulatorServer, name: str) -> list[str]:
    return [pool["name"] for pool in status(server, name).get("nodePools", [])]


def creates(fake: FakeGcp, pool: str, since: int = 0) -> int:
    calls = fake.calls("container", "CreateNodePool", since=since)
    return sum(1 for call in calls if call.body["nodePool"]["name"] == pool)


def deletes(fake: FakeGcp, pool: str, since: int = 0) -> int:
    calls = fake.calls("container", "DeleteNodePool", since=since)
    return sum(1 for call in calls if call.path.endswith(f"/nodePools/{pool}"))


def ksa_member(name: str) -> str:
    return f"serviceAccount:{PROJECT}.svc.id.goog[{NS}/{name}]"


def completing(fake: FakeGcp, predicate: Callable[[], Any]) -> Callable[[], Any]:
    """`predicate`, after finishing whatever GKE operations run: for flows of several operations in a row."""

    def check() -> Any:
        fake.gke.complete_operations()
        return predicate()

    return check


@pytest.fixture
def create(server: KubeEmulatorServer, fake: FakeGcp) -> Iterator[Callable[[WorkloadDoc], str]]:
    """Create workloads; afterwards delete them and let the operator release every pool, for the next test."""
    yield from created_workloads(server.put_object, functools.partial(delete, server))
    wait_until(completing(fake, lambda: not fake.gke.node_pools(CLUSTER_PATH)), timeout=WAIT,
               what="every pool released after the test")  # fmt: skip


def delete(server: KubeEmulatorServer, name: str) -> None:
    server.delete_object(MLW, "MLWorkload", name, NS)
    wait_until(lambda: server.get_object(MLW, "MLWorkload", name, NS) is None, timeout=WAIT,
               what=f"{name} gone (finalizer released)")  # fmt: skip


def test_a_gpu_workload_gets_its_pool_and_identity(
    server: KubeEmulatorServer, fake: FakeGcp, create: Callable[[WorkloadDoc], str]
) -> None:
    start = fake.mark()
    fake.storage.add_bucket("ckpt-a")
    name = create(
        workload("gcp-a", NS)
        .gpu_group(capacity="Spot")
        .set("spec.storage", {"bucket": "gs://ckpt-a", "access": "ReadWrite"})
    )
    provisioning = wait_condition(server, name, "NodePoolsReady", "False", "Provisioning")
    [pool] = pool_names(server, name)
    assert "operation-" in provisioning["message"]
    assert status(server, name)["nodePools"][0]["operation"].startswith("operation-")  # resumable after a restart
    created = fake.gke.node_pool(CLUSTER_PATH, pool)
    assert created is not None
    assert created["config"]["spot"] is True
    wait_condition(server, name, "IdentityReady", "True", "Bound")
    assert ksa_member(name) in fake.iam.members(GSA, WI_USER)
    assert f"serviceAccount:{GSA}" in fake.storage.members("ckpt-a", OBJECT_USER)
    assert {(b["resource"], b["addedByOperator"]) for b in status(server, name)["iamBindings"]} == {
        (f"projects/my-proj/serviceAccounts/{GSA}", True),
        ("projects/_/buckets/ckpt-a", True),
    }
    fake.gke.complete_operations()
    wait_condition(server, name, "NodePoolsReady", "True", "Provisioned")
    assert status(server, name)["nodePools"][0] == {
        "name": pool,
        "capacity": "Spot",
        "state": "Running",
        "operation": "",
    }
    assert creates(fake, pool, since=start) == 1
    delete(server, name)
    assert ksa_member(name) not in fake.iam.members(GSA, WI_USER)
    assert fake.storage.members("ckpt-a", OBJECT_USER) == []


def test_workloads_of_one_shape_share_one_pool_released_after_the_last(
    server: KubeEmulatorServer, fake: FakeGcp, create: Callable[[WorkloadDoc], str]
) -> None:
    start = fake.mark()
    fake.storage.add_bucket("ckpt-shared")
    fake.storage.set_bindings("ckpt-shared", [{"role": OBJECT_USER, "members": ["user:alice@example.com"]}])
    storage = {"bucket": "gs://ckpt-shared", "access": "ReadWrite"}
    first = create(workload("share-1", NS).gpu_group(count=2, capacity="Spot").set("spec.storage", storage))
    second = create(workload("share-2", NS).gpu_group(count=2, capacity="Spot").set("spec.storage", storage))
    for name in (first, second):
        wait_condition(server, name, "IdentityReady", "True", "Bound")
        wait_until(functools.partial(pool_names, server, name), timeout=WAIT, what=f"{name} pools in status")
    [pool] = pool_names(server, first)
    assert pool_names(server, second) == [pool]
    # The create may still queue behind the previous test's pool deletion (one operation per cluster).
    wait_until(lambda: creates(fake, pool, since=start) == 1, timeout=WAIT, what=f"{pool} create issued")
    fake.gke.complete_operations()
    for name in (first, second):
        wait_condition(server, name, "NodePoolsReady", "True", "Provisioned")
    assert creates(fake, pool, since=start) == 1

    delete(server, first)
    # Several collector passes (ListNodePools) beyond the 1 s grace: the pool stays while share-2 uses it.
    mark = fake.mark()
    wait_until(lambda: len(fake.calls("container", "ListNodePools", since=mark)) >= 6, timeout=WAIT,
               what="collector passes past the grace period")  # fmt: skip
    assert deletes(fake, pool, since=start) == 0
    assert ksa_member(first) not in fake.iam.members(GSA, WI_USER)
    assert ksa_member(second) in fake.iam.members(GSA, WI_USER)
    assert set(fake.storage.members("ckpt-shared", OBJECT_USER)) == {"user:alice@example.com", f"serviceAccount:{GSA}"}

    delete(server, second)
    wait_until(completing(fake, lambda: fake.gke.node_pool(CLUSTER_PATH, pool) is None), timeout=WAIT,
               what="the unused pool deleted after the grace period")  # fmt: skip
    assert deletes(fake, pool, since=start) == 1
    assert fake.storage.members("ckpt-shared", OBJECT_USER) == ["user:alice@example.com"]  # never ours to remove


def test_a_stockout_leaves_the_workload_on_a_degraded_but_ready_pool_that_is_never_replaced(
    server: KubeEmulatorServer, fake: FakeGcp, create: Callable[[WorkloadDoc], str]
) -> None:
    """GKE keeps a stocked-out pool RUNNING_WITH_ERROR ("partially usable"); the autoscaler retries scale-ups. The
    workload is not Stalled, nothing is deleted to retry (that would hold the cluster's one operation slot)."""
    start = fake.mark()
    fake.gke.fail_operations(stockout(), times=1)
    name = create(workload("gcp-stockout", NS).gpu_group(count=4, capacity="Spot"))
    wait_until(lambda: pool_names(server, name), timeout=WAIT, what="pools in status")
    [pool] = pool_names(server, name)
    ready = wait_until(completing(fake, lambda: (c := condition(server, name, "NodePoolsReady")).get("status") == "True"
                                  and "degraded" in c.get("message", "") and c),
                       timeout=WAIT, what="NodePoolsReady=True on a degraded pool")  # fmt: skip
    assert ready["reason"] == "Provisioned"
    assert (fake.gke.node_pool(CLUSTER_PATH, pool) or {}).get("status") == "RUNNING_WITH_ERROR"
    assert condition(server, name, "Stalled")["status"] == "False"

    fake.gke.capacity_returned(CLUSTER_PATH, pool)
    wait_until(lambda: "degraded" not in condition(server, name, "NodePoolsReady").get("message", "degraded"),
               timeout=WAIT, what="the degradation gone from NodePoolsReady")  # fmt: skip
    assert condition(server, name, "NodePoolsReady")["status"] == "True"
    assert (deletes(fake, pool, since=start), creates(fake, pool, since=start)) == (0, 1)


def test_a_restarted_operator_resumes_the_operation_instead_of_creating_again(fake: FakeGcp, tmp_path: Path) -> None:
    start = fake.mark()
    namespace = "restart-gcp"
    with emulated_cluster(namespace) as cluster:
        kubeconfig = cluster.kubeconfig(tmp_path / "config")
        doc = workload("resume", namespace).gpu_group(accelerator="nvidia-tesla-t4", capacity="Spot")
        cluster.put_object(doc.doc)

        def recorded_operation() -> str:
            found = cluster.get_object(MLW, "MLWorkload", "resume", namespace) or {}
            pools = (found.get("status") or {}).get("nodePools") or []
            return str(pools[0]["operation"]) if pools else ""

        with running_operator(kubeconfig, settings=live_gcp_settings(fake)):
            operation = wait_until(recorded_operation, timeout=WAIT, what="the create operation in status")
        [pool] = [
            p["name"] for p in (cluster.get_object(MLW, "MLWorkload", "resume", namespace) or {})["status"]["nodePools"]
        ]
        assert creates(fake, pool, since=start) == 1
        mark = fake.mark()
        with running_operator(kubeconfig, settings=live_gcp_settings(fake)):
            wait_until(lambda: any(call.path.endswith(f"/operations/{operation}")
                                   for call in fake.calls("container", "GetOperation", since=mark)),
                       timeout=WAIT, what="the new process polling the recorded operation")  # fmt: skip
            fake.gke.complete_operation(operation)
            wait_until(lambda: recorded_operation() == "", timeout=WAIT, what="the operation finished in status")
        assert creates(fake, pool, since=start) == 1


def test_a_pod_the_autoscaler_cannot_place_is_reported_as_quota(
    server: KubeEmulatorServer, fake: FakeGcp, create: Callable[[WorkloadDoc], str]
) -> None:
    name = create(workload("gcp-quota", NS).gpu_group(count=1, capacity="OnDemand"))
    wait_until(completing(fake, lambda: condition(server, name, "NodePoolsReady").get("reason") == "Provisioned"),
               timeout=WAIT, what="the pool running")  # fmt: skip
    # What the cluster autoscaler leaves when GCE refuses the scale-up: a pending pod and its event.
    pod = f"{name}-gpu-worker-x7k2p"
    labels = {"app.kubernetes.io/managed-by": "mlworkload", "mlworkload.io/workload": name}
    server.put_object({"apiVersion": "v1", "kind": "Pod", "status": {"phase": "Pending"},
                       "metadata": {"name": pod, "namespace": NS, "labels": labels}})  # fmt: skip
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    server.put_object({
        "apiVersion": "v1", "kind": "Event", "type": "Warning", "reason": "FailedScaleUp",
        "metadata": {"name": f"{pod}.1", "namespace": NS}, "lastTimestamp": now,
        "involvedObject": {"kind": "Pod", "name": pod, "namespace": NS},
        "message": "Node scale up in zones us-central1-a associated with this pod failed: GCE quota exceeded. "
                   "Pod is at risk of not being scheduled.",
    })  # fmt: skip
    stalled = wait_condition(server, name, "Stalled", "True", "QuotaExceeded")
    assert f"pod {pod} cannot get a node" in stalled["message"]
    assert condition(server, name, "NodePoolsReady")["status"] == "False"
    # The pod got its node: the failure is no longer reported.
    server.delete_object("v1", "Pod", pod, NS)
    wait_condition(server, name, "NodePoolsReady", "True", "Provisioned")


def test_a_policy_that_stops_admitting_a_workload_revokes_its_identity_and_keeps_its_pool(
    server: KubeEmulatorServer, fake: FakeGcp, create: Callable[[WorkloadDoc], str]
) -> None:
    start = fake.mark()
    fake.storage.add_bucket("ckpt-revoked")
    name = create(workload("gcp-revoked", NS).gpu_group(count=1, capacity="Spot")
                  .set("spec.storage", {"bucket": "gs://ckpt-revoked", "access": "ReadOnly"}))  # fmt: skip
    wait_until(completing(fake, lambda: condition(server, name, "Ready").get("reason") != "Provisioning"
                          and condition(server, name, "NodePoolsReady").get("status") == "True"),
               timeout=WAIT, what="pools running")  # fmt: skip
    wait_condition(server, name, "IdentityReady", "True", "Bound")
    [pool] = pool_names(server, name)
    original = permissive_policy("all").doc
    try:
        server.put_object(
            permissive_policy("all").set("identity", {"gcpServiceAccount": GSA, "allowedBuckets": []}).doc
        )
        wait_condition(server, name, "PolicyAdmitted", "False", "PolicyViolation")
        wait_until(lambda: fake.storage.members("ckpt-revoked", "roles/storage.objectViewer") == [], timeout=WAIT,
                   what="the bucket member revoked")  # fmt: skip
        assert ksa_member(name) not in fake.iam.members(GSA, WI_USER)
        assert pool_names(server, name) == [pool]  # still claimed: its pods may run there
        assert status(server, name).get("iamBindings", []) == []
    finally:
        server.put_object(original)
    wait_condition(server, name, "IdentityReady", "True", "Bound")
    assert fake.storage.members("ckpt-revoked", "roles/storage.objectViewer") == [f"serviceAccount:{GSA}"]
    assert deletes(fake, pool, since=start) == 0


def test_iap_accessors_are_granted_once_gke_names_the_backend_and_revoked_on_delete(
    server: KubeEmulatorServer, fake: FakeGcp, create: Callable[[WorkloadDoc], str]
) -> None:
    accessor, role = "group:ml-nlp@example.com", "roles/iap.httpsResourceAccessor"
    original = permissive_policy("all").doc
    server.put_object(permissive_policy("all").set("expose.iapAccessors", [accessor]).doc)
    try:
        name = create(workload("gcp-iap", NS).expose("dashboard", host="ray.internal.example.com"))
        ingress = f"{name}-dashboard"
        wait_condition(server, name, "EndpointsReady", "False", "WaitingForAddress")
        assert "dashboardURL" not in status(server, name)  # nothing answers yet
        assert not [b for b in status(server, name).get("iamBindings", []) if b["role"] == role]

        # GKE's Ingress controller makes the internal (regional) load balancer and names its backend service.
        backend = neg_backend_name("0a1b2c3d4e5f", NS, ingress, 8265)
        resource = fake.iap.add_backend_service(PROJECT, backend, region=LOCATION)
        gke_default = neg_backend_name("0a1b2c3d4e5f", "kube-system", "default-http-backend", 80)
        backends = {"ingress.kubernetes.io/backends": json.dumps({backend: "HEALTHY", gke_default: "HEALTHY"})}
        server.patch_object("networking.k8s.io/v1", "Ingress", ingress, {"metadata": {"annotations": backends}}, NS)
        server.patch_status("networking.k8s.io/v1", "Ingress", ingress,
                            {"loadBalancer": {"ingress": [{"ip": "10.128.0.42"}]}}, NS)  # fmt: skip

        wait_until(lambda: fake.iap.members(resource, role) == [accessor], timeout=WAIT, what="the accessor granted")
        serving = wait_condition(server, name, "EndpointsReady", "True", "Serving")
        assert serving["message"] == "dashboard at https://ray.internal.example.com"
        assert status(server, name)["dashboardURL"] == "https://ray.internal.example.com"
        assert {"resource": resource, "role": role, "member": accessor, "addedByOperator": True} in status(
            server, name
        )["iamBindings"]
        assert resource == f"projects/{PROJECT}/iap_web/compute-{LOCATION}/services/{backend}"

        # Another accessor joins the policy; then the dashboard is no longer exposed: both go.
        server.put_object(permissive_policy("all").set("expose.iapAccessors", [accessor, "user:ana@example.com"]).doc)
        wait_until(lambda: sorted(fake.iap.members(resource, role)) == sorted([accessor, "user:ana@example.com"]),
                   timeout=WAIT, what="the second accessor granted")  # fmt: skip
        server.patch_object(MLW, "MLWorkload", name, {"spec": {"expose": None}}, NS)
        wait_until(lambda: fake.iap.members(resource, role) == [], timeout=WAIT, what="the accessors revoked")
        fake.iap.delete_backend_service(resource)  # GKE deletes the load balancer with its Ingress
        wait_until(lambda: not [b for b in status(server, name).get("iamBindings", []) if b["role"] == role],
                   timeout=WAIT, what="the IAP bindings gone from status")  # fmt: skip
        delete(server, name)  # nothing left to hold the finalizer
    finally:
        server.put_object(original)


def test_a_forged_status_never_makes_the_operator_revoke_another_teams_access(
    server: KubeEmulatorServer, fake: FakeGcp, create: Callable[[WorkloadDoc], str]
) -> None:
    """Anyone who may write mlworkloads/status could list another team's bindings as "added by the operator"."""
    cv_gsa = "ray-cv@my-proj.iam.gserviceaccount.com"
    cv_member = f"serviceAccount:{PROJECT}.svc.id.goog[team-cv/vision]"
    fake.iam.add_service_account(cv_gsa)
    fake.iam.set_bindings(cv_gsa, [{"role": WI_USER, "members": [cv_member]}])
    fake.storage.add_bucket("cv-data")
    fake.storage.set_bindings("cv-data", [{"role": OBJECT_USER, "members": [f"serviceAccount:{cv_gsa}"]}])
    name = create(workload("gcp-forger", NS))
    wait_condition(server, name, "IdentityReady", "True", "Bound")
    forged = [
        {"resource": f"projects/my-proj/serviceAccounts/{cv_gsa}", "role": WI_USER, "member": cv_member,
         "addedByOperator": True},
        {"resource": "projects/_/buckets/cv-data", "role": OBJECT_USER, "member": f"serviceAccount:{cv_gsa}",
         "addedByOperator": True},
    ]  # fmt: skip
    own = status(server, name)["iamBindings"]
    server.patch_status(MLW, "MLWorkload", name, {"iamBindings": own + forged}, NS)
    # The next reconcile drops the entries from status and says so; the delete revokes only its own.
    wait_until(lambda: status(server, name)["iamBindings"] == own, timeout=WAIT, what="forged entries dropped")
    delete(server, name)
    assert fake.iam.members(cv_gsa, WI_USER) == [cv_member]
    assert fake.storage.members("cv-data", OBJECT_USER) == [f"serviceAccount:{cv_gsa}"]
    assert ksa_member(name) not in fake.iam.members(GSA, WI_USER)  # its own binding went
    warnings = [e for e in server.list_objects("v1", "Event", NS) if e.get("reason") == "UntrustedStatus"]
    assert len(warnings) == 2, warnings
