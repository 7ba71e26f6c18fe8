"""A fake GKE v1 REST API for node pools and their long-running operations.

It speaks what ``container_v1.ClusterManagerClient(transport="rest")`` sends and parses:

- Requests carry ``$alt=json;enum-encoding=int`` and encode enums as numbers and int64 as strings
  (``google.api_core.rest_helpers.transcode_request(..., rest_numeric_enums=True)``), e.g.
  ``{"nodePool": {"config": {"accelerators": [{"acceleratorCount": "1", ...}], "taints": [{"effect": 1}]},
  "autoscaling": {"locationPolicy": 2}}}``. Bodies are parsed with the API's own proto schema
  (``google.container.v1``), so an unknown field is a 400 like the real front end's "Invalid JSON payload
  received", and both enum spellings are accepted. Node pools are stored in canonical REST JSON
  (camelCase, string enums, int64 as strings) and answered with numeric enums when asked for them.
- ``Operation.name`` is the short id (``operation-1718024305921-fd4f65ea-...``, the format seen in
  rancher/gke-operator#509); poll it as ``projects/P/locations/L/operations/<name>``. ``selfLink`` and
  ``targetLink`` use the project *number*, as the real API does; do not parse them.

Behaviour confirmed against public reports of the real API:

- One operation per cluster at a time (the default, ``max_concurrent_node_pool_operations = 1``): a
  node-pool create/delete while any operation runs on the cluster is HTTP 400 FAILED_PRECONDITION (legacy
  reason ``failedPrecondition``) with a message like "Operation operation-... is currently creating a node
  pool for cluster C. Please wait and try again once it is done." (prometheus/test-infra#84,
  hashicorp/terraform-provider-google#10366) or "Cluster is running incompatible operation operation-..."
  (rancher/gke-operator#509). Newer GKE is laxer: https://cloud.google.com/kubernetes-engine/docs/troubleshooting/concurrent-operations
  says it "generally" allows one cluster-level operation or one operation per node pool, and a cluster can
  hit "Error 429: Too many operations: cluster "C" hits the concurrent operations quota 5, please try again
  later." (terraform-provider-google#15205). Raise ``max_concurrent_node_pool_operations`` to get that
  model: operations on different pools overlap up to the quota (then 429 RESOURCE_EXHAUSTED), while an
  operation on the same pool or a cluster-level one (``start_operation``) still gives the 400.
  The token ``CLUSTER_ALREADY_HAS_OPERATION`` is *not* in those messages; newer errors carry it as the error
  code (reports quote ``FAILED_PRECONDITION: ... CLUSTER_ALREADY_HAS_OPERATION``), which the fake sends as a
  ``google.rpc.ErrorInfo`` reason (``busy_error_info``; turn it off for the 2024 shape with no ErrorInfo).
  Over REST the client raises ``BadRequest``, not ``FailedPrecondition``.
- A duplicate name is 409 "Already exists: projects/.../nodePools/NAME." (``alreadyExists``;
  terraform-google-kubernetes-engine#367); the REST client raises ``Conflict``.
- A missing cluster/pool is 404 "Not found: projects/.../clusters/C." (terraform-provider-google#7851).
- Quota has two shapes: at create time, 403 PERMISSION_DENIED "Insufficient regional quota to satisfy
  request: resource "CPUS": ..." (``forbidden``; k8s-config-connector#321, kubeflow#842) - see
  ``quota_exceeded_at_create``; and after creation, the operation ends DONE with ``error.code`` 8
  (RESOURCE_EXHAUSTED), ``error.message`` "Instance '...' creation failed: Quota 'X' exceeded. Limit: ..."
  and the token ``[GCE_QUOTA_EXCEEDED]`` only in ``detail``/``statusMessage`` and
  ``clusterConditions[].code`` (kubernetes-sigs/sig-storage-local-static-provisioner#526) - see
  ``quota_exceeded``.
- A stockout ends the operation with "Google Compute Engine: Not all instances running in IGM after ...
  Current errors: [GCE_STOCKOUT]: Instance '...' creation failed: The zone '...' does not have enough
  resources available to fulfill the request. ..." and leaves the pool in an error state rather than
  deleting it (terraform-provider-google#6287, #10823, magic-modules#5225) - see ``stockout``. As for quota,
  that summary goes to ``detail``/``statusMessage`` and the instance error to ``error.message``.
- An unknown machine type is 400 'Invalid machine type "e2-standard-4" in zone "us-central2-b":
  GCE_NOT_FOUND' (keras-team/kinetic#305); GPUs on the default machine type are 400 "Cannot use default
  machine type (e2-medium) with GPUs; choose a different machine type." (terraform-provider-google#8387).

NetworkPolicy enforcement, as ``GetCluster`` reports it (what ``mlworkload.gcp.clusters`` reads): a Dataplane V2
cluster has ``networkConfig.datapathProvider`` ``ADVANCED_DATAPATH`` (``DatapathProvider`` reference) and no
Calico (``networkPolicy.enabled`` false: ``true`` conflicts with Dataplane V2,
terraform-google-kubernetes-engine#1085); a legacy cluster enforces through Calico, ``networkPolicy``
``{"enabled": true, "provider": "CALICO"}`` plus the add-on, ``addonsConfig.networkPolicyConfig`` not disabled;
the add-on is enabled first and enforcement on the nodes second (CIS GKE benchmark), so a cluster can have the
add-on alone. proto3 JSON leaves false and unset fields out, so "disabled" shows as
``{"networkPolicyConfig": {"disabled": true}}`` and "enabled" as ``{"networkPolicyConfig": {}}``. Approximation:
a Dataplane V2 cluster's add-on is reported disabled (the add-on is Calico's, unused there).

Updates of an existing pool, as the REST client sends them (``container_v1`` REST transport, ``rest_base.py``):

- ``SetNodePoolAutoscaling`` is ``POST .../nodePools/{pool}:setAutoscaling`` with ``{"autoscaling": {...}}``;
  ``UpdateNodePool`` is ``PUT .../nodePools/{pool}`` with the whole ``UpdateNodePoolRequest`` as body
  (``locations``, ``resourceLabels: {"labels": {...}}``, ``etag``, ``nodeVersion``, ``imageType``). Both answer
  an Operation and take the cluster's operation slot like create and delete (the busy answers above).
- ``UpdateNodePoolRequest.etag``: "If an etag is provided and does not match the current etag of the node pool,
  update will be blocked and an ABORTED error will be returned" (the proto's field doc); ``NodePool.etag`` is
  "computed by the server based on the value of node pool fields" - the fake makes a new one on every change.
  ``resourceLabels`` replaces the pool's resource labels (``config.resourceLabels``) as a whole.
- Operation types: an UpdateNodePool is ``UPGRADE_NODES`` ("A node pool is being updated. Despite calling this
  an upgrade, this includes most forms of updates to node pools", ``Operation.Type``); the pool is
  ``RECONCILING`` ("Some work is actively being done on the node pool", ``NodePool.Status``) until it ends.
  SetNodePoolAutoscaling is reported as ``UPDATE_CLUSTER`` here (approximation: no public record of its type).
  Changes apply when the operation ends.
- ``nodeVersion``/``imageType`` are "Required" in the proto, but terraform's and gcloud's label and location
  updates send the changed field alone; the fake accepts either (and the operator sends the pool's own).

Node settings (``NodeConfig``), stored as sent and answered on Get and List:

- Defaults when a create leaves them out, as GKE fills them in: ``diskSizeGb`` 100 ("If unspecified, the default
  disk size is 100GB", ``NodeConfig.disk_size_gb``), ``diskType`` ``pd-balanced`` (GKE's default since 1.24; the
  proto still says pd-standard), ``imageType`` ``COS_CONTAINERD``, ``serviceAccount`` ``default`` ("if no Service
  Account is specified, the "default" service account is used", ``NodeConfig.service_account``) with GKE's
  default scopes, and ``shieldedInstanceConfig`` with integrity monitoring on and Secure Boot off (Shielded GKE
  Nodes' defaults).
- GKE adds ``goog-gke-node-pool-provisioning-model`` (``spot``, ``on-demand``) to ``config.resourceLabels`` of the
  pools it creates; public Terraform configurations ignore it in their diffs because "GKE auto-injects internal
  GCP resource labels (e.g. goog-gke-node-pool-provisioning-model=spot ...)". ``put_node_pool`` adds none (a pool
  stored as given).
- Refused as GKE refuses them (HTTP 400 INVALID_ARGUMENT; the wording is an approximation): a disk under 10 GB
  ("The smallest allowed disk size is 10GB", ``NodeConfig.disk_size_gb`` and ``UpdateNodePoolRequest``); image
  streaming (``gcfsConfig.enabled``) on another image than ``COS_CONTAINERD`` ("Your node pools must use the
  Container-Optimized OS with containerd node image", GKE's image streaming requirements); an image type GKE does
  not offer; a boot disk type the machine series does not take (``DISK_TYPES_BY_SERIES``: Hyperdisk only on
  Titanium series such as N4, C4, A3 Ultra and A4; no pd-standard on G2, C3 and A3; no Hyperdisk on N1, N2, E2,
  A2 and G2, per GCE's machine series pages); a service account that is not an email (or ``default``).
- ``UpdateNodePool`` applies ``imageType`` (when it differs), ``gcfsConfig``, ``diskType`` and ``diskSizeGb``
  with the same checks ("Initiates an upgrade operation that migrates the nodes in the node pool to the
  specified disk type", ``UpdateNodePoolRequest.disk_type``); a node pool's service account and Shielded
  Instance options cannot be changed there (``UpdateNodePoolRequest`` has no such fields, so the API's own
  schema refuses them).

Test-facing controls beyond the API: ``delete_node_pool_by_hand`` (someone runs ``gcloud container node-pools
delete``: a DELETE operation and a STOPPING pool), ``remove_node_pool`` (the pool is gone at once), and
``capacity_returned`` (a RUNNING_WITH_ERROR pool's instances came up: RUNNING again - an approximation of GKE
reconciling the pool's status once its managed instance group is whole).

Approximations (no public wording found): the messages for an invalid pool name, bad autoscaling bounds
and an unknown accelerator type; which check wins when a duplicate create meets a busy cluster (409 here);
cancel (ends the operation with CANCELLED at once); the canonical code of a stockout (RESOURCE_EXHAUSTED); the
messages for a stale etag and for zones outside the cluster's.
While its create operation runs a pool is listed with status PROVISIONING, while deleted STOPPING (as
gcloud shows during operations; not found in writing), so a restarted adapter that lists pools sees it.
"""

from __future__ import annotations

import copy
import re
import threading
import time
import uuid
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

from google.cloud.container_v1.types import cluster_service
from google.protobuf import json_format  # type: ignore[import-untyped]

from tests.support.gcp.core import Reply, Request, Route, route
from tests.support.gcp.errors import ApiError, Json, canonical_code

API: Final = "https://container.googleapis.com/v1"
NODE_POOL_NAME: Final = re.compile(r"[a-z]([-a-z0-9]{0,38}[a-z0-9])?")
DEFAULT_VERSION: Final = "1.33.5-gke.1308000"
DEFAULT_ACCELERATORS: Final = frozenset(
    {
        "nvidia-tesla-t4",
        "nvidia-tesla-p4",
        "nvidia-tesla-p100",
        "nvidia-tesla-v100",
        "nvidia-l4",
        "nvidia-tesla-a100",
        "nvidia-a100-80gb",
        "nvidia-h100-80gb",
        "nvidia-h100-mega-80gb",
        "nvidia-h200-141gb",
        "nvidia-b200",
    }
)
_ACTIVE: Final = frozenset({"PENDING", "RUNNING", "ABORTING"})
_BUSY_VERBS: Final = {
    "CREATE_NODE_POOL": "creating a node pool for cluster",
    "DELETE_NODE_POOL": "deleting a node pool for cluster",
    "UPGRADE_MASTER": "upgrading cluster",
    "UPGRADE_NODES": "upgrading a node pool for cluster",
}
_UPDATES: Final = frozenset({"UPGRADE_NODES", "UPDATE_CLUSTER"})
IMAGE_TYPES: Final = frozenset({"COS_CONTAINERD", "UBUNTU_CONTAINERD", "WINDOWS_LTSC_CONTAINERD"})
DEFAULT_SCOPES: Final = tuple(
    f"https://www.googleapis.com/auth/{scope}"
    for scope in ("devstorage.read_only", "logging.write", "monitoring", "service.management.readonly",
                  "servicecontrol", "trace.append")
)  # fmt: skip
_PD: Final = frozenset({"pd-standard", "pd-balanced", "pd-ssd"})
_HYPERDISK: Final = frozenset({"hyperdisk-balanced"})
DISK_TYPES_BY_SERIES: Final = {
    **dict.fromkeys(("e2", "n1", "n2", "n2d", "c2", "c2d", "t2d", "a2"), _PD),
    "g2": frozenset({"pd-balanced", "pd-ssd"}),
    **dict.fromkeys(("c3", "c3d", "a3"), frozenset({"pd-balanced", "pd-ssd", "hyperdisk-balanced"})),
    **dict.fromkeys(("n4", "n4d", "c4", "c4d", "a4", "a4x", "a3-ultragpu"), _HYPERDISK),
}
_SERVICE_ACCOUNT: Final = re.compile(r"default|[a-z0-9][a-z0-9-]*@[a-z0-9.-]+\.gserviceaccount\.com")

_P = r"^/v1/projects/(?P<project>[^/]+)/locations/(?P<location>[^/]+)"
_C = _P + r"/clusters/(?P<cluster>[^/:]+)"


def _disk_types(machine: str) -> frozenset[str] | None:
    series = [name for name in DISK_TYPES_BY_SERIES if machine.startswith(f"{name}-")]
    return DISK_TYPES_BY_SERIES[max(series, key=len)] if series else None


def _default_disk(machine: str) -> str:
    """pd-balanced, or Hyperdisk Balanced on a series that takes nothing else (approximation)."""
    disks = _disk_types(machine)
    return "pd-balanced" if disks is None or "pd-balanced" in disks else "hyperdisk-balanced"


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True)
class OperationFailure:
    """How an operation ends when it fails. Text fields may use {instance} {project} {zone} {region} {pool}."""

    status: str  # canonical code of Operation.error, e.g. RESOURCE_EXHAUSTED
    message: str  # Operation.error.message
    detail: str  # Operation.detail and the deprecated Operation.statusMessage
    condition_code: str  # StatusCondition.Code in clusterConditions, e.g. GCE_STOCKOUT
    pool_status: str = "RUNNING_WITH_ERROR"
    keep_pool: bool = True


def stockout(zone: str | None = None) -> OperationFailure:
    """The zone has no capacity for the machines (GCE_STOCKOUT); the pool stays, in an error state."""
    zone_text = zone or "{zone}"
    instance_error = (
        f"Instance '{{instance}}' creation failed: The zone 'projects/{{project}}/zones/{zone_text}' does not have "
        "enough resources available to fulfill the request.  Try a different zone, or try again later."
    )
    return OperationFailure(
        status="RESOURCE_EXHAUSTED",
        message=instance_error,
        detail="Google Compute Engine: Not all instances running in IGM after 14.691006793s. Expected 1, running 0, "
        f"transitioning 1. Current errors: [GCE_STOCKOUT]: {instance_error}",
        condition_code="GCE_STOCKOUT",
    )


def quota_exceeded(metric: str = "NVIDIA_L4_GPUS", limit: float = 0.0, region: str | None = None) -> OperationFailure:
    """A regional quota ran out while the pool's VMs were created (GCE_QUOTA_EXCEEDED)."""
    instance_error = (
        f"Instance '{{instance}}' creation failed: Quota '{metric}' exceeded.  Limit: {limit} in region "
        f"{region or '{region}'}."
    )
    return OperationFailure(
        status="RESOURCE_EXHAUSTED",
        message=instance_error,
        detail="Insufficient quota to satisfy the request: Not all instances running in IGM after 26.633785888s. "
        f"Expected 1, running 0, transitioning 1. Current errors: [GCE_QUOTA_EXCEEDED]: {instance_error}",
        condition_code="GCE_QUOTA_EXCEEDED",
    )


def quota_exceeded_at_create(
    project: str, resource: str = "CPUS", requires: float = 8.0, short: float = 8.0, quota: float = 24.0
) -> ApiError:
    """GKE's up-front quota check: 403 PERMISSION_DENIED (reason ``forbidden``), not RESOURCE_EXHAUSTED."""
    available = quota - (requires - short)
    return ApiError(
        "PERMISSION_DENIED",
        f'Insufficient regional quota to satisfy request: resource "{resource}": request requires '
        f"'{requires}' and is short '{short}'. project has a quota of '{quota}' with '{available}' available. "
        f"View and manage quotas at https://console.cloud.google.com/iam-admin/quotas?usage=USED&project={project}.",
    )


def permission_denied(permission: str, resource: str) -> ApiError:
    """403 as GKE words it: Required "container.clusters.update" permission(s) for "projects/...".."""
    return ApiError("PERMISSION_DENIED", f'Required "{permission}" permission(s) for "{resource}".')


def invalid_argument(message: str) -> ApiError:
    return ApiError("INVALID_ARGUMENT", message)


@dataclass
class Cluster:
    project: str
    location: str
    name: str
    locations: list[str]
    workload_pool: str | None
    version: str = DEFAULT_VERSION
    node_pools: dict[str, Json] = field(default_factory=dict)
    datapath_provider: str = "ADVANCED_DATAPATH"  # GKE Dataplane V2; LEGACY_DATAPATH is kube-proxy's iptables
    calico: bool = False  # networkPolicy.enabled: Calico enforcement on the nodes
    network_policy_addon: bool = False  # addonsConfig.networkPolicyConfig not disabled

    def network_json(self) -> Json:
        """networkConfig, networkPolicy and addonsConfig as GetCluster returns them (canonical REST JSON)."""
        body: Json = {
            "networkConfig": {"datapathProvider": self.datapath_provider},
            "addonsConfig": {"networkPolicyConfig": {} if self.network_policy_addon else {"disabled": True}},
        }
        if self.calico:
            body["networkPolicy"] = {"enabled": True, "provider": "CALICO"}
        return body

    @property
    def path(self) -> str:
        return f"projects/{self.project}/locations/{self.location}/clusters/{self.name}"


@dataclass
class Operation:
    name: str
    project: str
    location: str
    cluster: str
    op_type: str
    target: str
    pool: str | None
    status: str = "PENDING"
    polls: int = 0
    start_time: str = field(default_factory=_now)
    end_time: str = ""
    failure: OperationFailure | None = None
    error: Json | None = None
    detail: str = ""
    conditions: list[Json] = field(default_factory=list)
    changes: Json | None = None  # an update's changes to the pool, applied when the operation ends
    pool_status: str = ""  # the pool's status before an update, restored when it ends

    @property
    def cluster_path(self) -> str:
        return f"projects/{self.project}/locations/{self.location}/clusters/{self.cluster}"

    @property
    def active(self) -> bool:
        return self.status in _ACTIVE


@dataclass
class _QueuedFailure:
    failure: OperationFailure
    pool: str | None
    op_types: frozenset[str]
    times: int


def _to_int_enums(message_type: Any, data: Json) -> Json:
    """Re-encode canonical JSON with numeric enums, as the server does for ``enum-encoding=int``."""
    message = json_format.ParseDict(data, message_type())
    encoded: Json = json_format.MessageToDict(message, use_integers_for_enums=True)
    return encoded


def _canonical(message_type: Any, data: Json) -> Json:
    message = json_format.ParseDict(data, message_type())
    encoded: Json = json_format.MessageToDict(message)
    return encoded


class FakeGke:
    """Clusters, node pools and operations; thread-safe; driven over HTTP and by the test.

    ``auto_complete_after_polls``: None (default) keeps operations RUNNING until the test calls
    ``complete_operations()``; N completes an operation on its N-th GetOperation poll.
    """

    service: Final = "container"

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.clusters: dict[str, Cluster] = {}
        self.operations: dict[str, Operation] = {}
        self.auto_complete_after_polls: int | None = None
        self.busy_error_info = True
        self.max_concurrent_node_pool_operations = 1
        self.known_machine_types: frozenset[str] | None = None  # None: any well-formed name is valid
        self.known_accelerator_types: frozenset[str] = DEFAULT_ACCELERATORS
        self.project_numbers: dict[str, str] = {}
        self.on_cluster_added: Callable[[Cluster], None] | None = None
        self._failures: list[_QueuedFailure] = []

    # --- test-facing state helpers ---------------------------------------------------------------

    def reset(self) -> None:
        with self.lock:
            self.clusters.clear()
            self.operations.clear()
            self._failures.clear()
            self.auto_complete_after_polls = None
            self.busy_error_info = True
            self.max_concurrent_node_pool_operations = 1
            self.known_machine_types = None
            self.known_accelerator_types = DEFAULT_ACCELERATORS

    def add_cluster(
        self,
        project: str,
        location: str,
        name: str,
        *,
        locations: Iterable[str] | None = None,
        workload_identity: bool = True,
        version: str = DEFAULT_VERSION,
        datapath_provider: str = "ADVANCED_DATAPATH",
        calico: bool = False,
        network_policy_addon: bool | None = None,
    ) -> Cluster:
        """A RUNNING cluster with no node pools. Zonal when ``location`` is a zone, else 3 zones a-c.

        NetworkPolicies: Dataplane V2 by default; ``datapath_provider="LEGACY_DATAPATH"`` with ``calico=True``
        for Calico (its add-on follows unless ``network_policy_addon`` says otherwise), without for none.
        """
        zones = list(locations) if locations is not None else None
        if zones is None:
            zones = [location] if re.fullmatch(r".+-[a-z]", location) else [f"{location}-{z}" for z in "abc"]
        cluster = Cluster(project, location, name, zones, f"{project}.svc.id.goog" if workload_identity else None)
        cluster.version = version
        cluster.datapath_provider = datapath_provider
        cluster.calico = calico
        cluster.network_policy_addon = calico if network_policy_addon is None else network_policy_addon
        with self.lock:
            self.clusters[cluster.path] = cluster
        if self.on_cluster_added is not None:
            self.on_cluster_added(cluster)
        return cluster

    def put_node_pool(self, cluster_path: str, pool: Json, status: str = "RUNNING") -> Json:
        """Store a pool as if someone else created it (camelCase REST JSON; enums may be names or numbers)."""
        with self.lock:
            cluster = self.clusters[cluster_path]
            stored = self._with_defaults(cluster, _canonical(cluster_service.NodePool.pb(), pool))
            stored["status"] = status
            cluster.node_pools[stored["name"]] = stored
            return copy.deepcopy(stored)

    def node_pool(self, cluster_path: str, name: str) -> Json | None:
        with self.lock:
            pool = self.clusters[cluster_path].node_pools.get(name)
            return copy.deepcopy(pool) if pool is not None else None

    def node_pools(self, cluster_path: str) -> list[Json]:
        with self.lock:
            return copy.deepcopy(list(self.clusters[cluster_path].node_pools.values()))

    def delete_node_pool_by_hand(self, cluster_path: str, name: str) -> str:
        """Someone deletes the pool outside the operator (gcloud, the console): a DELETE operation, pool STOPPING."""
        with self.lock:
            cluster = self.clusters[cluster_path]
            cluster.node_pools[name]["status"] = "STOPPING"
            return self._new_operation(cluster, "DELETE_NODE_POOL", pool=name).name

    def remove_node_pool(self, cluster_path: str, name: str) -> None:
        """The pool is gone at once (its deletion finished between two looks)."""
        with self.lock:
            del self.clusters[cluster_path].node_pools[name]

    def clear_queued_failures(self) -> None:
        """Operations queued to fail (``fail_operations``) will not: capacity or quota is back."""
        with self.lock:
            self._failures.clear()

    def capacity_returned(self, cluster_path: str, name: str) -> None:
        """A RUNNING_WITH_ERROR pool got its instances after all: RUNNING, its error message gone."""
        with self.lock:
            pool = self.clusters[cluster_path].node_pools[name]
            pool["status"] = "RUNNING"
            pool.pop("statusMessage", None)
            pool.pop("conditions", None)
            pool["etag"] = uuid.uuid4().hex[:16]

    def operation(self, name: str) -> Json:
        """An operation in canonical REST JSON (string enums), by its short name."""
        with self.lock:
            return self._operation_json(self.operations[name])

    def active_operations(self, cluster_path: str | None = None) -> list[str]:
        with self.lock:
            return [
                op.name
                for op in self.operations.values()
                if op.active and (cluster_path is None or op.cluster_path == cluster_path)
            ]

    def start_operation(self, cluster_path: str, op_type: str = "UPGRADE_MASTER") -> str:
        """Begin an operation GKE itself started (an auto-upgrade, a repair) that blocks the cluster."""
        with self.lock:
            cluster = self.clusters[cluster_path]
            op = self._new_operation(cluster, op_type, pool=None)
            op.status = "RUNNING"
            return op.name

    def complete_operations(self, cluster_path: str | None = None) -> list[str]:
        """Finish every active operation (optionally of one cluster); returns their names."""
        with self.lock:
            names = self.active_operations(cluster_path)
            for name in names:
                self._finish(self.operations[name])
            return names

    def complete_operation(self, name: str) -> None:
        with self.lock:
            op = self.operations[name]
            if op.active:
                self._finish(op)

    def fail_operations(
        self,
        failure: OperationFailure,
        *,
        pool: str | None = None,
        times: int = 1,
        op_types: Iterable[str] = ("CREATE_NODE_POOL",),
    ) -> None:
        """The next ``times`` operations of these types (for ``pool``, or any) will end with ``failure``."""
        with self.lock:
            self._failures.append(_QueuedFailure(failure, pool, frozenset(op_types), times))

    def project_number(self, project: str) -> str:
        if project not in self.project_numbers:
            self.project_numbers[project] = str(100_000_000_000 + zlib.crc32(project.encode()) % 900_000_000_000)
        return self.project_numbers[project]

    # --- HTTP ------------------------------------------------------------------------------------

    def routes(self) -> list[Route]:
        return [
            route("GET", _C + r"$", "GetCluster", self._get_cluster),
            route("GET", _C + r"/nodePools$", "ListNodePools", self._list_node_pools),
            route("POST", _C + r"/nodePools$", "CreateNodePool", self._create_node_pool),
            route("GET", _C + r"/nodePools/(?P<pool>[^/:]+)$", "GetNodePool", self._get_node_pool),
            route("DELETE", _C + r"/nodePools/(?P<pool>[^/:]+)$", "DeleteNodePool", self._delete_node_pool),
            route("PUT", _C + r"/nodePools/(?P<pool>[^/:]+)$", "UpdateNodePool", self._update_node_pool),
            route(
                "POST",
                _C + r"/nodePools/(?P<pool>[^/:]+):setAutoscaling$",
                "SetNodePoolAutoscaling",
                self._set_autoscaling,
            ),
            route("GET", _P + r"/operations$", "ListOperations", self._list_operations),
            route("GET", _P + r"/operations/(?P<op>[^/:]+)$", "GetOperation", self._get_operation),
            route("POST", _P + r"/operations/(?P<op>[^/:]+):cancel$", "CancelOperation", self._cancel_operation),
        ]

    def _cluster(self, request: Request) -> Cluster:
        p = request.params
        path = f"projects/{p['project']}/locations/{p['location']}/clusters/{p['cluster']}"
        cluster = self.clusters.get(path)
        if cluster is None:
            raise ApiError("NOT_FOUND", f"Not found: {path}.")
        return cluster

    def _pool(self, cluster: Cluster, name: str) -> Json:
        pool = cluster.node_pools.get(name)
        if pool is None:
            raise ApiError("NOT_FOUND", f"Not found: {cluster.path}/nodePools/{name}.")
        return pool

    @staticmethod
    def _render(message_type: Any, data: Json, request: Request) -> Reply:
        return Reply(_to_int_enums(message_type, data) if request.wants_int_enums else copy.deepcopy(data))

    def _get_cluster(self, request: Request) -> Reply:
        with self.lock:
            cluster = self._cluster(request)
            body: Json = {
                "name": cluster.name,
                "location": cluster.location,
                "zone": cluster.location,
                "locations": list(cluster.locations),
                "status": "RUNNING",
                "currentMasterVersion": cluster.version,
                "currentNodeVersion": cluster.version,
                "selfLink": f"{API}/{cluster.path}",
                "nodePools": list(cluster.node_pools.values()),
                **cluster.network_json(),
            }
            if cluster.workload_pool:
                body["workloadIdentityConfig"] = {"workloadPool": cluster.workload_pool}
            return self._render(cluster_service.Cluster.pb(), body, request)

    def _list_node_pools(self, request: Request) -> Reply:
        with self.lock:
            pools = list(self._cluster(request).node_pools.values())
            body: Json = {"nodePools": pools} if pools else {}
            return self._render(cluster_service.ListNodePoolsResponse.pb(), body, request)

    def _get_node_pool(self, request: Request) -> Reply:
        with self.lock:
            pool = self._pool(self._cluster(request), request.params["pool"])
            return self._render(cluster_service.NodePool.pb(), pool, request)

    def _create_node_pool(self, request: Request) -> Reply:
        with self.lock:
            cluster = self._cluster(request)
            pool = self._parse_pool(request.body)
            self._validate(cluster, pool)
            name = pool["name"]
            if name in cluster.node_pools:
                raise ApiError("ALREADY_EXISTS", f"Already exists: {cluster.path}/nodePools/{name}.")
            self._check_not_busy(cluster, name)
            stored = self._with_defaults(cluster, pool)
            model = "spot" if stored["config"].get("spot") else "on-demand"
            stored["config"].setdefault("resourceLabels", {})["goog-gke-node-pool-provisioning-model"] = model
            stored["status"] = "PROVISIONING"
            cluster.node_pools[name] = stored
            op = self._new_operation(cluster, "CREATE_NODE_POOL", pool=name)
            return self._render(cluster_service.Operation.pb(), self._operation_json(op), request)

    def _delete_node_pool(self, request: Request) -> Reply:
        with self.lock:
            cluster = self._cluster(request)
            pool = self._pool(cluster, request.params["pool"])
            self._check_not_busy(cluster, pool["name"])
            pool["status"] = "STOPPING"
            op = self._new_operation(cluster, "DELETE_NODE_POOL", pool=pool["name"])
            return self._render(cluster_service.Operation.pb(), self._operation_json(op), request)

    def _update_node_pool(self, request: Request) -> Reply:
        with self.lock:
            cluster = self._cluster(request)
            pool = self._pool(cluster, request.params["pool"])
            update = self._parse(request.body, cluster_service.UpdateNodePoolRequest)
            if update.get("etag") and update["etag"] != pool.get("etag"):
                raise ApiError("ABORTED", f"Node pool {pool['name']} was modified since it was read (etag mismatch); "
                               "read it again and retry.")  # fmt: skip
            changes: Json = {}
            if "locations" in update:
                outside = sorted(set(update["locations"]) - set(cluster.locations))
                if not update["locations"] or outside:
                    raise invalid_argument(f"Node pool locations {outside or '[]'} must be zones of cluster "
                                           f"{cluster.name}: {', '.join(cluster.locations)}.")  # fmt: skip
                changes["locations"] = list(update["locations"])
            if "resourceLabels" in update:
                changes["resourceLabels"] = dict(update["resourceLabels"].get("labels", {}))
            config = pool.get("config", {})
            if update.get("imageType") and update["imageType"] != config.get("imageType"):
                changes["imageType"] = update["imageType"]
            if "gcfsConfig" in update:
                changes["gcfsConfig"] = {"enabled": True} if update["gcfsConfig"].get("enabled") else {}
            if "diskType" in update:
                changes["diskType"] = update["diskType"]
            if "diskSizeGb" in update:  # int64 in the request (a JSON string), int32 in NodeConfig
                changes["diskSizeGb"] = int(update["diskSizeGb"])
            node_changes = {key: value for key, value in changes.items() if key not in ("locations", "resourceLabels")}
            if node_changes:
                self._validate_node_config(pool["name"], {**config, **node_changes})
            self._check_not_busy(cluster, pool["name"])
            op = self._new_operation(cluster, "UPGRADE_NODES", pool=pool["name"])
            op.changes, op.pool_status = changes, pool["status"]
            pool["status"] = "RECONCILING"
            return self._render(cluster_service.Operation.pb(), self._operation_json(op), request)

    def _set_autoscaling(self, request: Request) -> Reply:
        with self.lock:
            cluster = self._cluster(request)
            pool = self._pool(cluster, request.params["pool"])
            body = self._parse(request.body, cluster_service.SetNodePoolAutoscalingRequest)
            autoscaling = body.get("autoscaling", {})
            self._validate_autoscaling(autoscaling)
            self._check_not_busy(cluster, pool["name"])
            op = self._new_operation(cluster, "UPDATE_CLUSTER", pool=pool["name"])
            op.changes, op.pool_status = {"autoscaling": autoscaling}, pool["status"]
            return self._render(cluster_service.Operation.pb(), self._operation_json(op), request)

    @staticmethod
    def _parse(body: Any, message: Any) -> Json:
        """A request body read with the API's own schema (an unknown field is a 400), in canonical JSON."""
        if not isinstance(body, dict):
            raise ApiError("INVALID_ARGUMENT", "Invalid JSON payload received. Expected an object.")
        try:
            parsed = json_format.ParseDict(body, message.pb()())
        except json_format.ParseError as error:
            raise ApiError("INVALID_ARGUMENT", f"Invalid JSON payload received. {error}") from error
        canonical: Json = json_format.MessageToDict(parsed)
        return canonical

    def _find_operation(self, request: Request) -> Operation:
        p = request.params
        op = self.operations.get(p["op"])
        if op is None or op.project != p["project"] or p["location"] not in (op.location, "-"):
            raise ApiError(
                "NOT_FOUND", f"Not found: projects/{p['project']}/locations/{p['location']}/operations/{p['op']}."
            )
        return op

    def _get_operation(self, request: Request) -> Reply:
        with self.lock:
            op = self._find_operation(request)
            if op.active:
                op.polls += 1
                if op.status == "PENDING":
                    op.status = "RUNNING"
                if self.auto_complete_after_polls is not None and op.polls >= self.auto_complete_after_polls:
                    self._finish(op)
            return self._render(cluster_service.Operation.pb(), self._operation_json(op), request)

    def _list_operations(self, request: Request) -> Reply:
        with self.lock:
            p = request.params
            ops = [
                self._operation_json(op)
                for op in self.operations.values()
                if op.project == p["project"] and p["location"] in (op.location, "-")
            ]
            body: Json = {"operations": ops} if ops else {}
            return self._render(cluster_service.ListOperationsResponse.pb(), body, request)

    def _cancel_operation(self, request: Request) -> Reply:
        with self.lock:
            op = self._find_operation(request)
            if op.active:
                self._finish(op, cancelled=True)
            return Reply({})

    # --- behaviour -------------------------------------------------------------------------------

    @staticmethod
    def _parse_pool(body: Any) -> Json:
        if not isinstance(body, dict):
            raise ApiError("INVALID_ARGUMENT", "Invalid JSON payload received. Expected an object.")
        try:
            request = json_format.ParseDict(body, cluster_service.CreateNodePoolRequest.pb()())
        except json_format.ParseError as error:
            raise ApiError("INVALID_ARGUMENT", f"Invalid JSON payload received. {error}") from error
        if not request.HasField("node_pool"):
            raise ApiError("INVALID_ARGUMENT", "node_pool must be specified.")
        pool: Json = json_format.MessageToDict(request.node_pool)
        return pool

    def _validate(self, cluster: Cluster, pool: Json) -> None:
        name = pool.get("name", "")
        if not NODE_POOL_NAME.fullmatch(name):
            raise invalid_argument(
                f'Node pool name "{name}" is invalid: it must be 1-40 lowercase letters, digits or hyphens, '
                "start with a letter and end with a letter or digit."
            )
        config = pool.get("config", {})
        zone = (pool.get("locations") or cluster.locations)[0]
        machine_type = config.get("machineType")
        accelerators = config.get("accelerators", [])
        if accelerators and not machine_type:
            raise invalid_argument(
                "Cannot use default machine type (e2-medium) with GPUs; choose a different machine type."
            )
        if machine_type and (
            not re.fullmatch(r"[a-z][a-z0-9]*-[a-z0-9-]+", machine_type)
            or (self.known_machine_types is not None and machine_type not in self.known_machine_types)
        ):
            raise invalid_argument(f'Invalid machine type "{machine_type}" in zone "{zone}": GCE_NOT_FOUND')
        self._validate_node_config(name, config)
        account = config.get("serviceAccount")
        if account is not None and not _SERVICE_ACCOUNT.fullmatch(account):
            raise invalid_argument(f'Invalid service account "{account}": it must be an email address.')
        for accelerator in accelerators:
            kind = accelerator.get("acceleratorType", "")
            if kind not in self.known_accelerator_types:
                raise invalid_argument(f'Invalid accelerator type "{kind}" in zone "{zone}": GCE_NOT_FOUND')
            if int(accelerator.get("acceleratorCount", "0")) < 1:
                raise invalid_argument(f'Accelerator count for "{kind}" must be at least 1.')
        self._validate_autoscaling(pool.get("autoscaling", {}))

    @staticmethod
    def _validate_node_config(pool: str, config: Json) -> None:
        """The checks of node settings common to create and update (``config`` as the pool would have it)."""
        size = int(config.get("diskSizeGb", 100))
        if size and size < 10:
            raise invalid_argument(f"Invalid disk size {size}GB for node pool {pool}: the smallest allowed disk size "
                                   "is 10GB.")  # fmt: skip
        image = config.get("imageType", "COS_CONTAINERD")
        if image.upper() not in IMAGE_TYPES:
            raise invalid_argument(f'Invalid image type "{image}": it must be one of {", ".join(sorted(IMAGE_TYPES))}.')
        if config.get("gcfsConfig", {}).get("enabled") and image.upper() != "COS_CONTAINERD":
            raise invalid_argument(f"Image streaming (gcfsConfig) requires the COS_CONTAINERD image type; node pool "
                                   f"{pool} uses {image}.")  # fmt: skip
        machine = config.get("machineType", "e2-medium")
        disk, disks = config.get("diskType", _default_disk(machine)), _disk_types(machine)
        if disks is not None and disk not in disks:
            raise invalid_argument(f"Invalid value for field 'diskType': '{disk}'. {disk} disk type cannot be used by "
                                   f"{machine} machine type.")  # fmt: skip

    @staticmethod
    def _validate_autoscaling(autoscaling: Json) -> None:
        if not autoscaling.get("enabled"):
            return
        for low_key, high_key in (("minNodeCount", "maxNodeCount"), ("totalMinNodeCount", "totalMaxNodeCount")):
            low, high = int(autoscaling.get(low_key, 0)), int(autoscaling.get(high_key, 0))
            if not 0 <= low <= high or high > 1000:
                raise invalid_argument(
                    f"Invalid autoscaling bounds: min node count {low} and max node count {high} must satisfy "
                    "0 <= min <= max <= 1000."
                )

    def _check_not_busy(self, cluster: Cluster, pool: str) -> None:
        running = [op for op in self.operations.values() if op.active and op.cluster_path == cluster.path]
        limit = self.max_concurrent_node_pool_operations
        blocking = [op for op in running if op.pool is None or op.pool == pool or limit <= 1]
        if blocking:
            raise self._busy(cluster, blocking[0])
        if len(running) >= limit:
            raise ApiError(
                "RESOURCE_EXHAUSTED",
                f'Too many operations: cluster "{cluster.name}" hits the concurrent operations quota {limit}, '
                "please try again later.",
            )

    def _busy(self, cluster: Cluster, op: Operation) -> ApiError:
        verb = _BUSY_VERBS.get(op.op_type)
        message = (
            f"Operation {op.name} is currently {verb} {cluster.name}. Please wait and try again once it is done."
            if verb
            else f"Cluster is running incompatible operation {op.name}."
        )
        error = ApiError("FAILED_PRECONDITION", message)
        if self.busy_error_info:
            error.with_error_info("CLUSTER_ALREADY_HAS_OPERATION", "container.googleapis.com")
        return error

    def _with_defaults(self, cluster: Cluster, pool: Json) -> Json:
        stored = copy.deepcopy(pool)
        config = stored.setdefault("config", {})
        config.setdefault("machineType", "e2-medium")
        config.setdefault("diskSizeGb", 100)
        config.setdefault("diskType", _default_disk(config["machineType"]))
        config.setdefault("imageType", "COS_CONTAINERD")
        config.setdefault("serviceAccount", "default")
        if config["serviceAccount"] == "default":
            config.setdefault("oauthScopes", list(DEFAULT_SCOPES))
        config.setdefault("shieldedInstanceConfig", {"enableIntegrityMonitoring": True})
        config.setdefault("metadata", {"disable-legacy-endpoints": "true"})
        stored.setdefault("locations", list(cluster.locations))
        stored.setdefault("management", {"autoUpgrade": True, "autoRepair": True})
        stored.setdefault("upgradeSettings", {"maxSurge": 1, "strategy": "SURGE"})
        stored.setdefault("podIpv4CidrSize", 24)
        stored["version"] = cluster.version
        stored["selfLink"] = f"{API}/{cluster.path}/nodePools/{stored['name']}"
        stored["etag"] = uuid.uuid4().hex[:16]
        return stored

    def _new_operation(self, cluster: Cluster, op_type: str, pool: str | None) -> Operation:
        number = self.project_number(cluster.project)
        target = f"{API}/projects/{number}/locations/{cluster.location}/clusters/{cluster.name}"
        if pool is not None:
            target += f"/nodePools/{pool}"
        name = f"operation-{int(time.time() * 1000)}-{uuid.uuid4()}"
        op = Operation(name, cluster.project, cluster.location, cluster.name, op_type, target, pool)
        for queued in self._failures:
            if queued.times > 0 and op_type in queued.op_types and queued.pool in (None, pool):
                queued.times -= 1
                op.failure = queued.failure
                break
        self._failures = [queued for queued in self._failures if queued.times > 0]
        self.operations[name] = op
        return op

    def _finish(self, op: Operation, *, cancelled: bool = False) -> None:
        op.status = "DONE"
        op.end_time = _now()
        cluster = self.clusters.get(op.cluster_path)
        pool = cluster.node_pools.get(op.pool) if cluster is not None and op.pool is not None else None
        if cancelled:
            op.error = {"code": canonical_code("CANCELLED"), "message": "Operation was cancelled."}
            if cluster is not None and pool is not None and op.op_type == "CREATE_NODE_POOL":
                del cluster.node_pools[pool["name"]]
            elif pool is not None:
                pool["status"] = op.pool_status or "RUNNING"
            return
        if op.failure is not None:
            self._fail(op, op.failure, cluster, pool)
            return
        if cluster is not None and pool is not None:
            if op.op_type == "DELETE_NODE_POOL":
                del cluster.node_pools[pool["name"]]
            elif op.op_type in _UPDATES:
                self._apply(pool, op)
            else:
                pool["status"] = "RUNNING"

    @staticmethod
    def _apply(pool: Json, op: Operation) -> None:
        changes = op.changes or {}
        if "locations" in changes:
            pool["locations"] = changes["locations"]
        if "resourceLabels" in changes:
            pool.setdefault("config", {})["resourceLabels"] = changes["resourceLabels"]
        if "autoscaling" in changes:
            pool["autoscaling"] = changes["autoscaling"]
        config = pool.setdefault("config", {})
        for key in ("imageType", "gcfsConfig", "diskType", "diskSizeGb"):
            if key in changes:
                config[key] = changes[key]
        pool["status"] = op.pool_status or "RUNNING"
        pool["etag"] = uuid.uuid4().hex[:16]

    def _fail(self, op: Operation, failure: OperationFailure, cluster: Cluster | None, pool: Json | None) -> None:
        zone = (pool or {}).get("locations", [op.location])[0]
        values = {
            "instance": f"gke-{op.cluster}-{op.pool or 'pool'}-{uuid.uuid4().hex[:8]}-{uuid.uuid4().hex[:4]}",
            "project": op.project,
            "zone": zone,
            "region": re.sub(r"-[a-z]$", "", zone),
            "pool": op.pool or "",
        }
        message = failure.message.format(**values)
        op.detail = failure.detail.format(**values)
        op.error = {"code": canonical_code(failure.status), "message": message}
        op.conditions = [
            {"code": failure.condition_code, "message": message, "canonicalCode": failure.status},
            {"message": op.detail, "canonicalCode": failure.status},
        ]
        if cluster is None or pool is None:
            return
        if failure.keep_pool:
            pool["status"] = failure.pool_status
            pool["statusMessage"] = op.detail
            pool["conditions"] = copy.deepcopy(op.conditions)
        else:
            del cluster.node_pools[pool["name"]]

    def _operation_json(self, op: Operation) -> Json:
        base = f"{API}/projects/{self.project_number(op.project)}/locations/{op.location}"
        body: Json = {
            "name": op.name,
            "zone": op.location,
            "operationType": op.op_type,
            "status": op.status,
            "selfLink": f"{base}/operations/{op.name}",
            "targetLink": op.target,
            "location": op.location,
            "startTime": op.start_time,
        }
        if op.end_time:
            body["endTime"] = op.end_time
        if op.detail:
            body["detail"] = op.detail
            body["statusMessage"] = op.detail
        if op.error is not None:
            body["error"] = copy.deepcopy(op.error)
        if op.conditions:
            body["clusterConditions"] = copy.deepcopy(op.conditions)
        return body
