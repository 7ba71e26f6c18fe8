"""The GCP adapters' pure parts: error classification, backoff, the NodePool request, readiness, policy edits,
IAP resource names and routing, and when a cluster enforces NetworkPolicies.

Errors are the exception objects google-api-core really builds: REST ones through
`exceptions.from_http_response` on a `requests.Response` carrying the body the fake (and GKE) sends,
gRPC ones from the status code, so a change in how the library picks classes shows up here.
"""

import json
import random
import re
from collections.abc import Sequence
from typing import Any

import grpc  # type: ignore[import-untyped]
import pytest
import requests
from google.api_core import exceptions
from google.api_core.iam import Policy
from google.cloud import container_v1
from google.iam.v1 import policy_pb2  # type: ignore[import-untyped]
from google.rpc import error_details_pb2  # type: ignore[import-untyped]
from google.type import expr_pb2  # type: ignore[import-untyped]

from mlworkload.builders import build_gcp_plan
from mlworkload.builders.iam import IAP_ACCESSOR_ROLE, iap_resource
from mlworkload.builders.nodepools import GKE_POOL_NAME_PATTERN
from mlworkload.constants import (
    GCP_LABEL_CLAIM_PREFIX,
    GCP_LABEL_INSTALLATION,
    GCP_LABEL_MANAGED_BY,
    GCP_LABEL_POOL_TENANT,
    GPU_TAINT_KEY,
    MANAGED_BY,
    POOL_TENANT_TAINT_KEY,
    SPOT_TAINT_KEY,
)
from mlworkload.gcp import iam
from mlworkload.gcp.clusters import enforces_network_policies
from mlworkload.gcp.errors import STALLING, FailureKind, GcpError, classify, classify_message
from mlworkload.gcp.live import REASON_PROVISIONED, REASON_PROVISIONING, pools_readiness
from mlworkload.gcp.machines import GKE_ACCELERATORS, accelerator_machines, boot_disk_types, disk_type_problem
from mlworkload.gcp.nodepools import (
    OperationInfo,
    PoolInfo,
    _operation_info,
    _pool_info,
    claim_label,
    node_pool_resource,
    operations_parent,
)
from mlworkload.gcp.plan import IamBinding, NodePoolPlan, Taint
from mlworkload.gcp.pools import PoolReport, PoolTarget, creation_drift, settings_update, wanted_labels
from mlworkload.gcp.provisioner import NO_NODE_POOLS, Readiness
from mlworkload.gcp.retry import Backoff
from tests.support.documents import NODE_SETTINGS, WorkloadDoc, permissive_policy, resolved, workload
from tests.support.gcp import (
    ApiError,
    iap_permission_denied,
    iap_resource_not_found,
    invalid_argument,
    permission_denied,
    precondition_failed,
    quota_exceeded,
    quota_exceeded_at_create,
    service_disabled,
    stockout,
    storage_permission_denied,
    unavailable,
)

CLUSTER = "projects/my-proj/locations/us-central1/clusters/ml"
GKE_URL = f"https://container.googleapis.com/v1/{CLUSTER}/nodePools"
BUSY_TEXT = (
    "Operation operation-1718024305921-fd4f65ea-5b7e-4a4e-9f8e-3f8f0e6e4b1c is currently creating a node pool for "
    "cluster ml. Please wait and try again once it is done."
)


def rest_error(error: ApiError, method: str = "POST", url: str = GKE_URL) -> exceptions.GoogleAPICallError:
    """The exception a GAPIC REST transport raises for this reply (it calls from_http_response too)."""
    response = requests.Response()
    response.status_code = error.http_status
    response._content = json.dumps(error.to_json()).encode()
    response.headers["Content-Type"] = "application/json"
    response.request = requests.Request(method, url).prepare()
    raised: exceptions.GoogleAPICallError = exceptions.from_http_response(response)  # type: ignore[no-untyped-call]
    return raised


def grpc_error(code: grpc.StatusCode, message: str, reason: str = "") -> exceptions.GoogleAPICallError:
    info = error_details_pb2.ErrorInfo(reason=reason, domain="googleapis.com") if reason else None
    raised: exceptions.GoogleAPICallError = exceptions.from_grpc_status(  # type: ignore[no-untyped-call]
        code, message, error_info=info
    )
    return raised


# --- errors.classify ----------------------------------------------------------------------------------------


def busy_with_error_info() -> ApiError:
    return ApiError("FAILED_PRECONDITION", BUSY_TEXT).with_error_info(
        "CLUSTER_ALREADY_HAS_OPERATION", "container.googleapis.com"
    )


@pytest.mark.parametrize(
    ("error", "expected_class", "kind"),
    [
        pytest.param(busy_with_error_info(), exceptions.BadRequest, FailureKind.BUSY, id="busy-error-info"),
        pytest.param(ApiError("FAILED_PRECONDITION", BUSY_TEXT), exceptions.BadRequest, FailureKind.BUSY,
                     id="busy-message-only"),
        pytest.param(ApiError("FAILED_PRECONDITION", "Cluster is running incompatible operation operation-17."),
                     exceptions.BadRequest, FailureKind.BUSY, id="busy-incompatible-operation"),
        pytest.param(ApiError("RESOURCE_EXHAUSTED", 'Too many operations: cluster "ml" hits the concurrent operations '
                              "quota 5, please try again later."), exceptions.TooManyRequests, FailureKind.BUSY,
                     id="busy-429-too-many-operations"),
        pytest.param(quota_exceeded_at_create("my-proj", "NVIDIA_L4_GPUS", 8.0, 8.0, 0.0), exceptions.Forbidden,
                     FailureKind.QUOTA, id="quota-403"),
        pytest.param(permission_denied("container.clusters.update", CLUSTER), exceptions.Forbidden,
                     FailureKind.PERMISSION, id="permission-403"),
        pytest.param(storage_permission_denied("sa@p.iam.gserviceaccount.com", "storage.buckets.getIamPolicy"),
                     exceptions.Forbidden, FailureKind.PERMISSION, id="storage-permission-403"),
        pytest.param(service_disabled("Kubernetes Engine API", "container.googleapis.com", "123"),
                     exceptions.Forbidden, FailureKind.API_DISABLED, id="service-disabled"),
        pytest.param(ApiError("NOT_FOUND", f"Not found: {CLUSTER}/nodePools/x."), exceptions.NotFound,
                     FailureKind.NOT_FOUND, id="not-found"),
        pytest.param(ApiError("ALREADY_EXISTS", f"Already exists: {CLUSTER}/nodePools/x."), exceptions.Conflict,
                     FailureKind.ALREADY_EXISTS, id="already-exists-409"),
        pytest.param(ApiError("ABORTED", "There were concurrent policy changes. Please retry the whole "
                              "read-modify-write with exponential backoff."), exceptions.Conflict, FailureKind.STALE,
                     id="stale-etag-409-aborted"),
        pytest.param(precondition_failed(), exceptions.PreconditionFailed, FailureKind.STALE, id="stale-etag-412"),
        pytest.param(invalid_argument('Invalid machine type "g2-standard-7" in zone "us-central1-a": GCE_NOT_FOUND'),
                     exceptions.BadRequest, FailureKind.INVALID, id="invalid-machine-type"),
        pytest.param(iap_resource_not_found(), exceptions.NotFound, FailureKind.NOT_FOUND,
                     id="iap-backend-not-synced-yet-404"),
        pytest.param(iap_permission_denied(), exceptions.Forbidden, FailureKind.PERMISSION, id="iap-permission-403"),
        pytest.param(ApiError("INVALID_ARGUMENT", "Role roles/storage.objectUser is not supported for this resource."),
                     exceptions.BadRequest, FailureKind.INVALID, id="iap-unsupported-role-400"),
        pytest.param(unavailable(), exceptions.ServiceUnavailable, FailureKind.UNAVAILABLE, id="unavailable-503"),
        pytest.param(ApiError("INTERNAL", "Internal error."), exceptions.InternalServerError,
                     FailureKind.UNAVAILABLE, id="internal-500"),
    ],
)  # fmt: skip
def test_rest_errors_are_classified_from_the_payload(
    error: ApiError, expected_class: type[exceptions.GoogleAPICallError], kind: FailureKind
) -> None:
    raised = rest_error(error)
    assert type(raised) is expected_class  # the class alone would not tell busy from invalid, or stale from exists
    classified = classify(raised)
    assert classified.kind is kind
    assert error.message in classified.message


def test_the_busy_error_info_is_read_even_when_the_message_says_nothing_of_it() -> None:
    error = ApiError("FAILED_PRECONDITION", "Precondition check failed.").with_error_info(
        "CLUSTER_ALREADY_HAS_OPERATION", "container.googleapis.com"
    )
    assert classify(rest_error(error)).kind is FailureKind.BUSY
    assert classify(rest_error(ApiError("FAILED_PRECONDITION", "Precondition check failed."))).kind is (
        FailureKind.INVALID
    )


@pytest.mark.parametrize(
    ("code", "message", "reason", "kind"),
    [
        (grpc.StatusCode.ABORTED, "There were concurrent policy changes.", "", FailureKind.STALE),
        (grpc.StatusCode.FAILED_PRECONDITION, BUSY_TEXT, "", FailureKind.BUSY),
        (grpc.StatusCode.FAILED_PRECONDITION, "Precondition check failed.", "CLUSTER_ALREADY_HAS_OPERATION",
         FailureKind.BUSY),
        (grpc.StatusCode.PERMISSION_DENIED, "Permission 'iam.serviceAccounts.getIamPolicy' denied on resource (or it "
         "may not exist).", "IAM_PERMISSION_DENIED", FailureKind.PERMISSION),
        (grpc.StatusCode.PERMISSION_DENIED, "IAM API has not been used in project 1.", "SERVICE_DISABLED",
         FailureKind.API_DISABLED),
        (grpc.StatusCode.INVALID_ARGUMENT, "Identity Pool does not exist (p.svc.id.goog).", "", FailureKind.INVALID),
        (grpc.StatusCode.NOT_FOUND, "Not found.", "", FailureKind.NOT_FOUND),
        (grpc.StatusCode.ALREADY_EXISTS, "Already exists.", "", FailureKind.ALREADY_EXISTS),
        (grpc.StatusCode.UNAVAILABLE, "Connection reset.", "", FailureKind.UNAVAILABLE),
        (grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline exceeded.", "", FailureKind.UNAVAILABLE),
        (grpc.StatusCode.UNAUTHENTICATED, "Request had invalid authentication credentials.", "",
         FailureKind.PERMISSION),
    ],
)  # fmt: skip
def test_grpc_errors_are_classified(code: grpc.StatusCode, message: str, reason: str, kind: FailureKind) -> None:
    assert classify(grpc_error(code, message, reason)).kind is kind


def test_grpc_aborted_built_directly_is_stale() -> None:
    assert classify(exceptions.Aborted("etag mismatch")).kind is FailureKind.STALE  # type: ignore[no-untyped-call]


@pytest.mark.parametrize(
    "error",
    [
        requests.ConnectionError("Connection refused"),
        requests.Timeout("read timed out"),
        TimeoutError(),
        exceptions.RetryError("Timeout of 600.0s exceeded", cause=None),  # type: ignore[no-untyped-call]
        RuntimeError("something odd in the transport"),
    ],
    ids=["connection", "requests-timeout", "timeout", "retry-error", "other"],
)
def test_transport_failures_are_unavailable(error: BaseException) -> None:
    classified = classify(error)
    assert classified.kind is FailureKind.UNAVAILABLE
    assert classified.message
    assert not classified.stalls


def test_a_gcp_error_passes_through_unchanged() -> None:
    error = GcpError(FailureKind.QUOTA, "x")
    assert classify(error) is error
    assert str(error) == "QuotaExceeded: x"


# --- errors.classify_message ----------------------------------------------------------------------------


def operation_text(failure_factory: Any) -> tuple[str, str]:
    """(error.message, detail) of a finished operation, as the fake fills them in."""
    failure = failure_factory()
    values = {"instance": "gke-ml-pool-1234abcd-wxyz", "project": "my-proj", "zone": "us-central1-a",
              "region": "us-central1", "pool": "pool"}  # fmt: skip
    return failure.message.format(**values), failure.detail.format(**values)


@pytest.mark.parametrize(("factory", "kind"), [(stockout, FailureKind.STOCKOUT), (quota_exceeded, FailureKind.QUOTA)])
def test_operation_texts_are_classified(factory: Any, kind: FailureKind) -> None:
    message, detail = operation_text(factory)
    assert classify_message(f"{message} {detail}", 8).kind is kind
    assert classify_message(detail).kind is kind  # a pool's status message holds the detail only
    assert classify_message(message, 8).kind is kind  # and the error message alone names it too


@pytest.mark.parametrize(
    ("text", "code", "kind"),
    [
        ("Google Compute Engine: Required 'compute.instances.create' permission for 'projects/p'", 7,
         FailureKind.PERMISSION),
        ("Invalid value for field 'resource.machineType'", 3, FailureKind.INVALID),
        ("Operation was cancelled.", 1, FailureKind.UNAVAILABLE),
        ("something failed", 0, FailureKind.UNAVAILABLE),
        ("ZONE_RESOURCE_POOL_EXHAUSTED: out of resources in us-central1-a", 13, FailureKind.STOCKOUT),
        ("[GCE_QUOTA_EXCEEDED] Quota 'CPUS' exceeded", 7, FailureKind.QUOTA),  # the text wins over the code
    ],
)  # fmt: skip
def test_operation_codes_are_classified_when_the_text_names_nothing(text: str, code: int, kind: FailureKind) -> None:
    assert classify_message(text, code).kind is kind


@pytest.mark.parametrize("kind", list(FailureKind))
def test_only_failures_a_person_must_fix_stall(kind: FailureKind) -> None:
    needs_a_person = {
        FailureKind.QUOTA, FailureKind.STOCKOUT, FailureKind.PERMISSION, FailureKind.API_DISABLED, FailureKind.INVALID,
    }  # fmt: skip
    assert GcpError(kind, "m").stalls is (kind in needs_a_person)
    assert (kind in STALLING) is (kind in needs_a_person)


# --- retry.Backoff --------------------------------------------------------------------------------------


class Clock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_backoff_doubles_caps_and_resets() -> None:
    clock = Clock()
    backoff = Backoff(base_seconds=10.0, max_seconds=45.0, clock=clock)
    assert backoff.due("k")
    assert backoff.attempts("k") == 0
    assert [backoff.failed("k") for _ in range(5)] == [10.0, 20.0, 40.0, 45.0, 45.0]
    assert backoff.attempts("k") == 5
    assert not backoff.due("k")
    clock.now += 44.9
    assert not backoff.due("k")
    clock.now += 0.1
    assert backoff.due("k")
    assert backoff.due("other")  # keys are independent
    backoff.succeeded("k")
    assert backoff.attempts("k") == 0
    assert backoff.failed("k") == 10.0  # starts from the base again


def test_backoff_jitter_spreads_each_delay_within_twenty_percent_reproducibly() -> None:
    def delays(seed: int) -> list[float]:
        backoff = Backoff(10.0, 600.0, Clock(), jitter=0.2, rng=random.Random(seed))
        return [backoff.failed(key) for key in range(200) for _ in range(1)]

    first = delays(7)
    assert first == delays(7)  # a seed replays the same schedule
    assert first != delays(8)
    assert all(8.0 <= delay <= 12.0 for delay in first)
    assert min(first) < 9.0  # spread over the whole band, not a constant offset
    assert max(first) > 11.0
    backoff = Backoff(10.0, 45.0, Clock(), jitter=0.2, rng=random.Random(1))
    capped = [backoff.failed("k") for _ in range(8)][-1]
    assert 36.0 <= capped <= 54.0  # the cap is jittered too: installations at the cap do not align


def test_a_restored_backoff_keeps_the_count_and_bounds_a_forged_delay() -> None:
    clock = Clock()
    backoff = Backoff(10.0, 600.0, clock)
    backoff.restore("k", attempts=3, delay=30.0)
    assert (backoff.attempts("k"), backoff.next_attempt("k")) == (3, 1030.0)
    assert backoff.failed("k") == 80.0  # the fourth failure doubles on from the recorded three
    backoff.restore("far", attempts=1, delay=10.0**9)  # a status written to stop retries for years
    assert backoff.next_attempt("far") == 1600.0
    backoff.restore("past", attempts=2, delay=-50.0)
    assert backoff.due("past")
    backoff.restore("k", attempts=1, delay=0.0)  # what this process knows wins over a record
    assert backoff.attempts("k") == 4


def test_backoff_delay_counts_from_the_failure_not_from_the_first_attempt() -> None:
    clock = Clock()
    backoff = Backoff(base_seconds=5.0, max_seconds=100.0, clock=clock)
    backoff.failed(("busy", CLUSTER))
    clock.now += 5.0
    assert backoff.due(("busy", CLUSTER))
    backoff.failed(("busy", CLUSTER))
    clock.now += 9.0
    assert not backoff.due(("busy", CLUSTER))
    clock.now += 1.0
    assert backoff.due(("busy", CLUSTER))


# --- nodepools.node_pool_resource -----------------------------------------------------------------------


def only_pool(doc: WorkloadDoc) -> NodePoolPlan:
    (pool,) = build_gcp_plan(resolved(doc, permissive_policy().set("nodePools.maxNodesPerPool", 6))).node_pools
    return pool


def gpu_spot_plan() -> NodePoolPlan:
    return only_pool(workload().gpu_group(capacity="Spot"))


def cpu_on_demand_plan() -> NodePoolPlan:
    return only_pool(workload().group("cpu", machineType="n2-standard-8", capacity="OnDemand"))


def taints(pool: container_v1.NodePool) -> list[tuple[str, str, container_v1.NodeTaint.Effect]]:
    return [(t.key, t.value, container_v1.NodeTaint.Effect(t.effect)) for t in pool.config.taints]


def assert_scales_from_zero(pool: container_v1.NodePool, plan: NodePoolPlan) -> None:
    assert pool.name == plan.name
    assert GKE_POOL_NAME_PATTERN.match(pool.name)
    assert len(pool.name) <= 40
    assert pool.initial_node_count == 0
    assert pool.autoscaling.enabled
    assert (pool.autoscaling.total_min_node_count, pool.autoscaling.total_max_node_count) == (0, 6)
    # GKE refuses total_* together with the per-zone bounds
    assert (pool.autoscaling.min_node_count, pool.autoscaling.max_node_count) == (0, 0)
    assert pool.autoscaling.location_policy == container_v1.NodePoolAutoscaling.LocationPolicy.ANY
    assert pool.config.machine_type == plan.machine_type
    assert pool.config.workload_metadata_config.mode == container_v1.WorkloadMetadataConfig.Mode.GKE_METADATA
    assert pool.config.resource_labels[GCP_LABEL_MANAGED_BY] == MANAGED_BY
    assert pool.management.auto_repair
    assert pool.management.auto_upgrade


def test_a_gpu_spot_pool_request() -> None:
    plan = gpu_spot_plan()
    pool = node_pool_resource(plan)
    assert_scales_from_zero(pool, plan)
    assert pool.name == plan.name
    assert pool.config.spot
    assert not pool.config.preemptible
    (accelerator,) = pool.config.accelerators
    assert (accelerator.accelerator_type, accelerator.accelerator_count) == ("nvidia-l4", 1)
    driver = accelerator.gpu_driver_installation_config
    assert "gpu_driver_version" in driver  # set, so GKE installs the driver instead of leaving it to a DaemonSet
    assert driver.gpu_driver_version == container_v1.GPUDriverInstallationConfig.GPUDriverVersion.DEFAULT
    no_schedule = container_v1.NodeTaint.Effect.NO_SCHEDULE
    assert taints(pool) == [(GPU_TAINT_KEY, "present", no_schedule), (SPOT_TAINT_KEY, "true", no_schedule),
                            (POOL_TENANT_TAINT_KEY, plan.labels[GCP_LABEL_POOL_TENANT], no_schedule)]  # fmt: skip


def test_a_cpu_on_demand_pool_request() -> None:
    plan = cpu_on_demand_plan()
    pool = node_pool_resource(plan)
    assert_scales_from_zero(pool, plan)
    assert pool.name == plan.name
    assert not pool.config.spot
    assert list(pool.config.accelerators) == []
    # Neither a GPU nor a spot taint: only the policy's, which its pods tolerate.
    tenant = plan.labels[GCP_LABEL_POOL_TENANT]
    assert taints(pool) == [(POOL_TENANT_TAINT_KEY, tenant, container_v1.NodeTaint.Effect.NO_SCHEDULE)]


def test_the_request_carries_locations_policy_labels_and_every_taint_effect() -> None:
    plan = gpu_spot_plan()
    plan = plan.model_copy(
        update={
            "locations": ["us-central1-a", "us-central1-c"],
            "location_policy": "BALANCED",
            "node_labels": {"cloud.google.com/compute-class": "mlw-l4x1-swf"},
            "taints": [
                *plan.taints,
                Taint(key="a", value="1", effect="PREFER_NO_SCHEDULE"),
                Taint(key="b", value="2", effect="NO_EXECUTE"),
            ],
        }
    )
    pool = node_pool_resource(plan)
    assert list(pool.locations) == ["us-central1-a", "us-central1-c"]
    assert pool.autoscaling.location_policy == container_v1.NodePoolAutoscaling.LocationPolicy.BALANCED
    assert dict(pool.config.labels) == {"cloud.google.com/compute-class": "mlw-l4x1-swf"}
    assert [container_v1.NodeTaint.Effect(t.effect) for t in pool.config.taints][-2:] == [
        container_v1.NodeTaint.Effect.PREFER_NO_SCHEDULE,
        container_v1.NodeTaint.Effect.NO_EXECUTE,
    ]


def settings_plan(settings: dict[str, Any] = NODE_SETTINGS, sharing: str = "Policy") -> NodePoolPlan:
    rules = permissive_policy().set("nodePools", {"maxNodesPerPool": 6, "sharing": sharing, **settings})
    (pool,) = build_gcp_plan(resolved(workload().gpu_group(capacity="Spot"), rules)).node_pools
    return pool


def test_the_request_carries_the_policys_node_settings_and_labels() -> None:
    plan = settings_plan()
    pool = node_pool_resource(plan)
    assert_scales_from_zero(pool, plan)
    config = pool.config
    assert config.service_account == "gke-nodes@my-proj.iam.gserviceaccount.com"
    assert list(config.oauth_scopes) == ["https://www.googleapis.com/auth/cloud-platform"]  # access is IAM's
    assert (config.disk_type, config.disk_size_gb, config.image_type) == ("pd-ssd", 200, "COS_CONTAINERD")
    shielded = config.shielded_instance_config
    assert (shielded.enable_secure_boot, shielded.enable_integrity_monitoring) == (True, True)
    assert config.gcfs_config.enabled
    labels = dict(config.resource_labels)
    assert {key: labels[key] for key in ("cost-center", "team")} == {"cost-center": "cc-1234", "team": "nlp"}
    assert labels[GCP_LABEL_MANAGED_BY] == MANAGED_BY  # the operator's own, next to the policy's
    assert labels[GCP_LABEL_POOL_TENANT] == plan.labels[GCP_LABEL_POOL_TENANT]


def test_without_node_settings_the_request_leaves_gke_its_defaults() -> None:
    config = node_pool_resource(gpu_spot_plan()).config
    assert (config.service_account, list(config.oauth_scopes), config.disk_type, config.disk_size_gb,
            config.image_type) == ("", [], "", 0, "")  # fmt: skip
    assert "shielded_instance_config" not in config
    assert "gcfs_config" not in config
    assert set(config.resource_labels) == {GCP_LABEL_MANAGED_BY, "mlworkload-shape", GCP_LABEL_POOL_TENANT}


def test_secure_boot_and_streaming_off_are_sent_as_off() -> None:
    config = node_pool_resource(settings_plan({"secureBoot": False, "imageStreaming": False})).config
    assert "shielded_instance_config" in config
    assert not config.shielded_instance_config.enable_secure_boot
    assert config.shielded_instance_config.enable_integrity_monitoring
    assert "gcfs_config" in config
    assert not config.gcfs_config.enabled


def test_a_pools_node_settings_are_read_back() -> None:
    pool = container_v1.NodePool(
        name="p",
        status=container_v1.NodePool.Status.RUNNING,
        config=container_v1.NodeConfig(
            service_account="gke-nodes@my-proj.iam.gserviceaccount.com", disk_type="pd-ssd", disk_size_gb=200,
            image_type="UBUNTU_CONTAINERD", shielded_instance_config={"enable_secure_boot": True},
            gcfs_config={"enabled": True}, resource_labels={"team": "nlp"},
        ),
    )  # fmt: skip
    info = _pool_info(pool)
    assert (info.service_account, info.disk_type, info.disk_size_gb, info.image_type) == (
        "gke-nodes@my-proj.iam.gserviceaccount.com", "pd-ssd", 200, "UBUNTU_CONTAINERD")  # fmt: skip
    assert (info.secure_boot, info.image_streaming, dict(info.labels)) == (True, True, {"team": "nlp"})
    bare = _pool_info(container_v1.NodePool(name="p"))
    assert (bare.service_account, bare.secure_boot, bare.image_streaming) == ("", False, False)


@pytest.mark.parametrize(
    ("disk", "machine", "problem"),
    [
        ("pd-balanced", "g2-standard-8", None),
        ("pd-standard", "g2-standard-8", "g2 machines boot from pd-balanced or pd-ssd only, not pd-standard"),
        ("hyperdisk-balanced", "a2-highgpu-1g",
         "a2 machines boot from pd-balanced, pd-ssd or pd-standard only, not hyperdisk-balanced"),
        ("hyperdisk-balanced", "a3-highgpu-8g", None),
        ("pd-ssd", "a3-ultragpu-8g", "a3-ultragpu machines boot from hyperdisk-balanced only, not pd-ssd"),
        ("pd-balanced", "a4-highgpu-8g", "a4 machines boot from hyperdisk-balanced only, not pd-balanced"),
        ("pd-balanced", "a4x-highgpu-4g", "a4x machines boot from hyperdisk-balanced only, not pd-balanced"),
        ("pd-standard", "n2d-standard-8", None),
        ("pd-standard", "n4-standard-8", "n4 machines boot from hyperdisk-balanced only, not pd-standard"),
        ("pd-standard", "z3-highmem-88", None),  # a series the table does not know: GKE answers for it
    ],
)  # fmt: skip
def test_which_machines_boot_from_which_disk(disk: str, machine: str, problem: str | None) -> None:
    assert disk_type_problem(disk, machine) == problem
    assert (boot_disk_types(machine) is None) is (machine.startswith("z3"))


def test_every_catalogued_gpu_machine_has_known_disks() -> None:
    for accelerator in GKE_ACCELERATORS:
        for machine in accelerator_machines(accelerator):
            assert boot_disk_types(machine), (accelerator, machine)
    assert accelerator_machines("nvidia-l4")[0].startswith("g2-")
    assert accelerator_machines("nvidia-rtx-pro-6000") == ()


# --- pools: node settings kept in step, one update at a time ---------------------------------------------


class UpdateRecorder:
    """Records the UpdateNodePool a settings change would make (NodePools' `update`, nothing else)."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    def update(self, cluster: str, pool: PoolInfo, **changes: Any) -> OperationInfo:
        self.calls.append({key: value for key, value in changes.items() if value is not None})
        return OperationInfo("operation-1", pool.name, done=False)


OWN = {GCP_LABEL_MANAGED_BY: MANAGED_BY, GCP_LABEL_INSTALLATION: "inst", "mlworkload-shape": "mlw-l4x1"}
GKE_OWN = {"goog-gke-node-pool-provisioning-model": "spot"}  # GKE's: kept, never the policy's


def running_pool(**fields: Any) -> PoolInfo:
    defaults: dict[str, Any] = {
        "labels": {**OWN, **GKE_OWN},
        "image_type": "COS_CONTAINERD",
        "disk_type": "pd-balanced",
        "disk_size_gb": 100,
        "service_account": "default",
    }
    return PoolInfo("mlw-x", "RUNNING", **{**defaults, **fields})


def next_update(info: PoolInfo, **target: Any) -> tuple[dict[str, Any] | None, str]:
    recorder = UpdateRecorder()
    change = settings_update(recorder, CLUSTER, info, PoolTarget(8, **target))  # type: ignore[arg-type]
    if change is None:
        return None, ""
    call, doing = change
    call()
    (made,) = recorder.calls
    return made, doing


@pytest.mark.parametrize(
    ("info", "target", "update", "doing"),
    [
        pytest.param(running_pool(), {}, None, "", id="nothing-wanted"),
        pytest.param(running_pool(), {"labels": {}}, None, "", id="no-labels-wanted-none-there"),
        pytest.param(running_pool(), {"labels": {"team": "nlp"}},
                     {"resource_labels": {**OWN, **GKE_OWN, "team": "nlp"}}, "setting its GCP labels (team)",
                     id="a-label-added-next-to-the-reserved-ones"),
        pytest.param(running_pool(labels={**OWN, "team": "cv", "old": "x"}), {"labels": {"team": "nlp"}},
                     {"resource_labels": {**OWN, "team": "nlp"}}, "setting its GCP labels (old, team)",
                     id="changed-and-dropped-labels"),
        pytest.param(running_pool(labels={**OWN, "team": "cv"}),
                     {"labels": {"team": "nlp"}, "kept_labels": frozenset({"team"})}, None, "",
                     id="a-disputed-label-is-kept"),
        pytest.param(running_pool(), {"image_type": "UBUNTU_CONTAINERD"}, {"image_type": "UBUNTU_CONTAINERD"},
                     "changing its image to UBUNTU_CONTAINERD", id="image"),
        pytest.param(running_pool(image_streaming=True), {"image_type": "UBUNTU_CONTAINERD", "image_streaming": False},
                     {"image_streaming": False}, "turning image streaming off", id="streaming-off-before-the-image"),
        pytest.param(running_pool(image_type="UBUNTU_CONTAINERD"),
                     {"image_type": "COS_CONTAINERD", "image_streaming": True},
                     {"image_type": "COS_CONTAINERD"}, "changing its image to COS_CONTAINERD",
                     id="the-image-before-streaming-on"),
        pytest.param(running_pool(), {"image_type": "COS_CONTAINERD", "image_streaming": True},
                     {"image_streaming": True}, "turning image streaming on", id="streaming-on"),
        pytest.param(running_pool(image_type="UBUNTU_CONTAINERD"), {"image_streaming": True}, None, "",
                     id="never-streaming-on-ubuntu"),
        pytest.param(running_pool(), {"disk_type": "pd-ssd", "disk_size_gb": 200},
                     {"disk_type": "pd-ssd", "disk_size_gb": 200}, "changing its disks to pd-ssd 200 GB",
                     id="disks-in-one-update"),
        pytest.param(running_pool(), {"disk_type": "pd-balanced", "disk_size_gb": 150}, {"disk_size_gb": 150},
                     "changing its disks to 150 GB", id="disk-size-alone"),
        pytest.param(running_pool(), {"service_account": "a@p.iam.gserviceaccount.com", "secure_boot": True}, None,
                     "", id="creation-settings-are-never-updated"),
    ],
)  # fmt: skip
def test_settings_gke_changes_in_place_are_updated_one_at_a_time_when_they_differ(
    info: PoolInfo, target: dict[str, Any], update: dict[str, Any] | None, doing: str
) -> None:
    assert next_update(info, **target) == (update, doing)


def test_a_pool_at_the_target_needs_no_update() -> None:
    target = {"labels": {"team": "nlp"}, "image_type": "COS_CONTAINERD", "image_streaming": True,
              "disk_type": "pd-ssd", "disk_size_gb": 200}  # fmt: skip
    info = running_pool(labels={**OWN, **GKE_OWN, "team": "nlp"}, image_streaming=True, disk_type="pd-ssd",
                        disk_size_gb=200)  # fmt: skip
    assert next_update(info, **target) == (None, "")
    assert wanted_labels(info, PoolTarget(8, labels={"team": "nlp"})) is None


@pytest.mark.parametrize(
    ("info", "target", "note"),
    [
        (running_pool(), {}, ""),
        (running_pool(), {"service_account": "a@p.iam.gserviceaccount.com"},
         "its nodes run as the Compute Engine default service account, not a@p.iam.gserviceaccount.com: GKE sets"
         " these when it creates a pool, so the policy's apply when this one is created again (after it is"
         " released, or deleted by hand)"),
        (running_pool(service_account="a@p.iam.gserviceaccount.com"), {"service_account": "a@p.iam.gserviceaccount.com",
                                                                       "secure_boot": False}, ""),
        (running_pool(service_account="a@p.iam.gserviceaccount.com", secure_boot=True),
         {"service_account": "b@p.iam.gserviceaccount.com", "secure_boot": False},
         "its nodes run as a@p.iam.gserviceaccount.com service account, not b@p.iam.gserviceaccount.com and Secure"
         " Boot is on: GKE sets"),
    ],
)  # fmt: skip
def test_settings_gke_sets_only_at_creation_are_reported_when_they_differ(
    info: PoolInfo, target: dict[str, Any], note: str
) -> None:
    drift = creation_drift(info, PoolTarget(8, **target))
    assert drift.startswith(note)
    assert bool(drift) is bool(note)


@pytest.mark.parametrize(
    "doc",
    [
        workload().gpu_group(accelerator="nvidia-h100-mega-80gb", count=8, capacity="SpotWithFallback"),
        workload().gpu_group(machineType="g2-standard-32", capacity="SpotWithFallback"),
    ],
    ids=["h100-mega-x8", "l4-non-default-machine"],
)
def test_pool_names_from_long_shapes_fit_gke(doc: WorkloadDoc) -> None:
    for plan in build_gcp_plan(resolved(doc, permissive_policy())).node_pools:
        name = node_pool_resource(plan).name
        assert GKE_POOL_NAME_PATTERN.match(name), name
        assert len(name) <= 40


def test_operations_are_addressed_under_the_location() -> None:
    assert operations_parent(CLUSTER) == "projects/my-proj/locations/us-central1"


def test_a_finished_operation_is_classified_from_its_detail() -> None:
    message, detail = operation_text(stockout)
    operation = container_v1.Operation(
        name="operation-1",
        operation_type=container_v1.Operation.Type.CREATE_NODE_POOL,
        status=container_v1.Operation.Status.DONE,
        error={"code": 8, "message": message},
        detail=detail,
    )
    info = _operation_info(operation, "mlw-l4x1-spot")
    assert (info.name, info.pool, info.done, info.kind) == ("operation-1", "mlw-l4x1-spot", True, "CREATE_NODE_POOL")
    assert info.error is not None
    assert info.error.kind is FailureKind.STOCKOUT
    running = container_v1.Operation(name="operation-2", status=container_v1.Operation.Status.RUNNING)
    assert _operation_info(running, "p").done is False
    assert _operation_info(running, "p").error is None


@pytest.mark.parametrize(
    ("status", "usable", "failed"),
    [("RUNNING", True, False), ("RECONCILING", True, False), ("PROVISIONING", False, False),
     ("STOPPING", False, False), ("RUNNING_WITH_ERROR", True, False), ("ERROR", False, True)],
)  # fmt: skip
def test_pool_states(status: str, usable: bool, failed: bool) -> None:
    """RUNNING_WITH_ERROR is GKE's "partially usable": degraded, but its nodes serve."""
    info = PoolInfo("p", status)
    assert (info.usable, info.failed, info.degraded) == (usable, failed, status == "RUNNING_WITH_ERROR")


def test_pool_ownership_and_claims_are_read_from_its_labels() -> None:
    labels = {
        GCP_LABEL_MANAGED_BY: MANAGED_BY,
        GCP_LABEL_INSTALLATION: "team-a",
        claim_label("team-a"): "team-a",
        claim_label("team-b"): "team-b",
    }
    info = PoolInfo("p", "RUNNING", labels=labels)
    assert (info.managed, info.installation) == (True, "team-a")
    assert info.claimed_by_others("team-a") == [claim_label("team-b")]
    assert info.claimed_by_others("team-b") == [claim_label("team-a")]
    legacy = PoolInfo("p", "RUNNING", labels={GCP_LABEL_MANAGED_BY: MANAGED_BY})
    assert (legacy.managed, legacy.installation, legacy.claimed_by_others("team-a")) == (True, "", [])


@pytest.mark.parametrize("installation", ["a", "mlworkload-system", "x" * 63, "team_ml-2"])
def test_a_claim_label_is_a_valid_gcp_label_key_unique_per_installation(installation: str) -> None:
    key = claim_label(installation)
    assert re.fullmatch(r"[a-z][a-z0-9_-]{0,62}", key)
    assert key.startswith(GCP_LABEL_CLAIM_PREFIX)
    assert claim_label(installation + "x") != key


# --- live.pools_readiness -------------------------------------------------------------------------------

STOCKOUT = GcpError(FailureKind.STOCKOUT, "zone out of resources")
FLAKY = GcpError(FailureKind.UNAVAILABLE, "503")


@pytest.mark.parametrize(
    ("reports", "expected"),
    [
        pytest.param([], NO_NODE_POOLS, id="none"),
        pytest.param([PoolReport("a", "Running"), PoolReport("b", "Running")],
                     Readiness(True, REASON_PROVISIONED, "2 node pool(s) running"), id="all-running"),
        pytest.param([PoolReport("a", "Running"), PoolReport("b", "Provisioning", "op-1", "op-1 is running"),
                      PoolReport("c", "Queued", message="waiting")],
                     Readiness(False, REASON_PROVISIONING, "b: op-1 is running; c: waiting"), id="waiting"),
        pytest.param([PoolReport("a", "Running"), PoolReport("b", "Failed", message="no room", failure=STOCKOUT)],
                     Readiness(False, "Stockout", "node pool b: no room", True), id="stockout-stalls"),
        pytest.param([PoolReport("a", "Queued", message="w"), PoolReport("b", "Failed", message="503", failure=FLAKY)],
                     Readiness(False, "GcpUnavailable", "node pool b: 503", False), id="transient-does-not-stall"),
        pytest.param([PoolReport("a", "Running", degraded="GCE_STOCKOUT"), PoolReport("b", "Running")],
                     Readiness(True, REASON_PROVISIONED, "2 node pool(s) running (a degraded)"), id="degraded-ready"),
        pytest.param([PoolReport("a", "Deleting", message="replacing")],
                     Readiness(False, REASON_PROVISIONING, "a: replacing"), id="deleting"),
    ],
)  # fmt: skip
def test_pools_readiness(reports: list[PoolReport], expected: Readiness) -> None:
    assert pools_readiness(reports) == expected


def test_a_stalling_failure_is_not_hidden_by_an_earlier_transient_one() -> None:
    """Stalled tells a person to act; a 503 on one pool must not mask a stockout on another."""
    readiness = pools_readiness(
        [
            PoolReport("a", "Failed", message="503", failure=FLAKY),
            PoolReport("b", "Failed", message="x", failure=STOCKOUT),
        ]
    )
    assert not readiness.ready
    assert readiness.permanent


# --- iam._edit_dicts / iam._edit_proto ------------------------------------------------------------------

ROLE = "roles/storage.objectUser"
ME = "serviceAccount:ray-nlp@my-proj.iam.gserviceaccount.com"
OTHER = "group:ml@example.com"
CONDITION = {"title": "expires", "expression": 'request.time < timestamp("2030-01-01T00:00:00Z")'}
BINDING = IamBinding(resource="projects/_/buckets/b", role=ROLE, member=ME)


def dict_bindings(*entries: tuple[str, list[str], dict[str, str] | None]) -> list[dict[str, Any]]:
    """Bindings as google-cloud-storage's Policy holds them: members as sets."""
    out: list[dict[str, Any]] = []
    for role, members, condition in entries:
        entry: dict[str, Any] = {"role": role, "members": set(members)}
        if condition is not None:
            entry["condition"] = dict(condition)
        out.append(entry)
    return out


def proto_policy(*entries: tuple[str, list[str], dict[str, str] | None]) -> Any:
    policy = policy_pb2.Policy(version=3, etag=b"\x07\x06")
    for role, members, condition in entries:
        binding = policy.bindings.add(role=role, members=members)
        if condition is not None:
            binding.condition.CopyFrom(expr_pb2.Expr(**condition))
    return policy


def proto_as_tuples(policy: Any) -> list[tuple[str, list[str], bool]]:
    return [(b.role, sorted(b.members), b.HasField("condition")) for b in policy.bindings]


def dicts_as_tuples(bindings: list[dict[str, Any]]) -> list[tuple[str, list[str], bool]]:
    return [(b["role"], sorted(b["members"]), bool(b.get("condition"))) for b in bindings]


EDIT_CASES = [
    pytest.param([(ROLE, [OTHER], None)], True, True, [(ROLE, [OTHER, ME], False)], id="add-to-existing-role"),
    pytest.param([("roles/storage.legacyBucketReader", [OTHER], None)], True, True,
                 [("roles/storage.legacyBucketReader", [OTHER], False), (ROLE, [ME], False)], id="add-new-binding"),
    pytest.param([(ROLE, [ME, OTHER], None)], False, True, [(ROLE, [OTHER], False)], id="remove-keeps-others"),
    pytest.param([("roles/x", [OTHER], None), (ROLE, [ME], None)], False, True, [("roles/x", [OTHER], False)],
                 id="remove-last-drops-binding"),
    pytest.param([(ROLE, [ME], None)], True, False, [(ROLE, [ME], False)], id="add-present-is-noop"),
    pytest.param([(ROLE, [OTHER], None)], False, False, [(ROLE, [OTHER], False)], id="remove-absent-is-noop"),
    pytest.param([], False, False, [], id="remove-from-empty-is-noop"),
    pytest.param([(ROLE, [ME], CONDITION)], False, False, [(ROLE, [ME], True)], id="conditional-never-removed"),
    pytest.param([(ROLE, [OTHER], CONDITION)], True, True, [(ROLE, [OTHER], True), (ROLE, [ME], False)],
                 id="conditional-never-extended"),
    pytest.param([(ROLE, [ME], CONDITION), (ROLE, [ME], None)], False, True, [(ROLE, [ME], True)],
                 id="remove-unconditional-keeps-conditional"),
]  # fmt: skip


@pytest.mark.parametrize(("before", "present", "changed", "after"), EDIT_CASES)
def test_edit_dicts(
    before: list[tuple[str, list[str], dict[str, str] | None]],
    present: bool,
    changed: bool,
    after: list[tuple[str, list[str], bool]],
) -> None:
    bindings = dict_bindings(*before)
    assert iam._edit_dicts(bindings, BINDING, present) is changed
    assert dicts_as_tuples(bindings) == after
    conditional = [b for b in bindings if b.get("condition")]
    assert all(b["condition"] == CONDITION for b in conditional)


@pytest.mark.parametrize(("before", "present", "changed", "after"), EDIT_CASES)
def test_edit_proto(
    before: list[tuple[str, list[str], dict[str, str] | None]],
    present: bool,
    changed: bool,
    after: list[tuple[str, list[str], bool]],
) -> None:
    policy = proto_policy(*before)
    assert iam._edit_proto(policy, BINDING, present) is changed
    assert proto_as_tuples(policy) == after
    assert policy.etag == b"\x07\x06"  # the etag read is the one written back
    for binding in policy.bindings:
        if binding.HasField("condition"):
            assert binding.condition.expression == CONDITION["expression"]


class Recording:
    def __init__(self) -> None:
        self.calls: list[list[iam.Change]] = []
        self.reads: list[list[IamBinding]] = []

    def update(self, changes: Sequence[iam.Change]) -> set[IamBinding]:
        self.calls.append(list(changes))
        return {binding for binding, _ in changes}

    def present(self, bindings: Sequence[IamBinding]) -> set[IamBinding]:
        self.reads.append(list(bindings))
        return set(bindings)


def test_buckets_go_to_storage_backend_services_to_iap_and_everything_else_to_iam() -> None:
    accounts, buckets, iap = Recording(), Recording(), Recording()
    routed = iam.RoutedPolicies(accounts, buckets, iap)
    account = IamBinding(resource="projects/-/serviceAccounts/a@p.iam.gserviceaccount.com", role="r", member="m")
    backends = [
        IamBinding(resource=iap_resource("p", "k8s-be-30167--01177f64ec764488", None), role=IAP_ACCESSOR_ROLE,
                   member="user:a@example.com"),
        IamBinding(resource=iap_resource("p", "k8s1-a1b2c3d4-ns-svc-80-e5f6a7b8", "europe-west4"),
                   role=IAP_ACCESSOR_ROLE, member="group:b@example.com"),
    ]  # fmt: skip
    assert routed.update([(BINDING, True)]) == {BINDING}
    assert routed.update([(account, False)]) == {account}
    for backend in backends:
        assert routed.update([(backend, True)]) == {backend}
    assert buckets.calls == [[(BINDING, True)]]
    assert accounts.calls == [[(account, False)]]
    assert iap.calls == [[(backend, True)] for backend in backends]
    # Reads go the same way as writes: the look before an intent is recorded asks the API that grants.
    for binding in (BINDING, account, *backends):
        assert routed.present([binding]) == {binding}
    assert (buckets.reads, accounts.reads, iap.reads) == ([[BINDING]], [[account]], [[backend] for backend in backends])


def test_one_update_is_for_one_resource() -> None:
    account = IamBinding(resource="projects/-/serviceAccounts/a@p.iam.gserviceaccount.com", role="r", member="m")
    with pytest.raises(ValueError, match="one resource"):
        iam.RoutedPolicies(Recording(), Recording(), Recording()).update([(BINDING, True), (account, True)])


@pytest.mark.parametrize(
    ("region", "resource"),
    [
        (None, "projects/my-proj/iap_web/compute/services/k8s-be-30167--01177f64ec764488"),
        ("us-central1", "projects/my-proj/iap_web/compute-us-central1/services/k8s-be-30167--01177f64ec764488"),
    ],
    ids=["global-external-ingress", "regional-internal-ingress"],
)
def test_iap_resource_names_the_backend_service_as_terraform_does(region: str | None, resource: str) -> None:
    assert iap_resource("my-proj", "k8s-be-30167--01177f64ec764488", region) == resource


# --- clusters.enforces_network_policies -------------------------------------------------------------

_DATAPATH = container_v1.DatapathProvider


def gke_cluster(datapath: container_v1.DatapathProvider, calico: bool, addon: bool) -> container_v1.Cluster:
    return container_v1.Cluster(
        network_config=container_v1.NetworkConfig(datapath_provider=datapath),
        network_policy=container_v1.NetworkPolicy(
            enabled=calico, provider=container_v1.NetworkPolicy.Provider.CALICO if calico else 0
        ),
        addons_config=container_v1.AddonsConfig(
            network_policy_config=container_v1.NetworkPolicyConfig(disabled=not addon)
        ),
    )


@pytest.mark.parametrize(
    ("datapath", "calico", "addon", "enforced"),
    [
        pytest.param(_DATAPATH.ADVANCED_DATAPATH, False, False, True, id="dataplane-v2"),
        pytest.param(_DATAPATH.LEGACY_DATAPATH, True, True, True, id="calico"),
        pytest.param(_DATAPATH.DATAPATH_PROVIDER_UNSPECIFIED, True, True, True, id="calico-datapath-unset"),
        pytest.param(_DATAPATH.LEGACY_DATAPATH, False, False, False, id="legacy-without-enforcement"),
        pytest.param(_DATAPATH.LEGACY_DATAPATH, False, True, False, id="addon-enabled-nodes-not-yet"),
        pytest.param(_DATAPATH.LEGACY_DATAPATH, True, False, False, id="nodes-enabled-addon-disabled"),
    ],
)  # fmt: skip
def test_a_cluster_enforces_network_policies_with_dataplane_v2_or_calico_and_its_addon(
    datapath: container_v1.DatapathProvider, calico: bool, addon: bool, enforced: bool
) -> None:
    assert enforces_network_policies(gke_cluster(datapath, calico, addon)) is enforced


class StubBucket:
    """A google-cloud-storage Bucket whose policy writes fail with `error` (its client has no fake for this)."""

    def __init__(self, error: Exception) -> None:
        self.error = error
        self.reads = 0
        self.writes = 0

    def get_iam_policy(self, requested_policy_version: int) -> Policy:
        assert requested_policy_version == 3
        self.reads += 1
        policy: Policy = Policy.from_api_repr({"etag": "CAE=", "version": 1})  # type: ignore[no-untyped-call]
        return policy

    def set_iam_policy(self, policy: Policy) -> Policy:
        self.writes += 1
        raise self.error


class StubStorage:
    def __init__(self, bucket: StubBucket) -> None:
        self._bucket = bucket

    def bucket(self, name: str) -> StubBucket:
        assert name == "b"
        return self._bucket


@pytest.mark.parametrize(
    ("error", "kind", "attempts"),
    [
        (rest_error(precondition_failed(), "PUT", "https://storage.googleapis.com/storage/v1/b/b/iam"),
         FailureKind.STALE, iam.STALE_ETAG_ATTEMPTS),
        (rest_error(storage_permission_denied(ME, "storage.buckets.setIamPolicy"), "PUT"), FailureKind.PERMISSION, 1),
    ],
    ids=["stale-etag-bounded", "permission-not-retried"],
)  # fmt: skip
def test_only_a_stale_etag_restarts_the_read_modify_write_and_not_forever(
    error: Exception, kind: FailureKind, attempts: int
) -> None:
    bucket = StubBucket(error)
    with pytest.raises(GcpError) as info:
        iam.BucketPolicies(StubStorage(bucket)).update([(BINDING, True)])
    assert info.value.kind is kind
    assert (bucket.reads, bucket.writes) == (attempts, attempts)  # each attempt reads afresh
