"""GKE node pools: the request a plan becomes, and a thin adapter over `ClusterManagerClient`.

The adapter is synchronous (the client library is) and only translates: every call maps to one API
request, and every failure comes out as a classified `GcpError`. Deciding when to call is the
`PoolCoordinator`'s job.
"""

import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final, Protocol, TypeVar

from google.cloud import container_v1

from mlworkload.constants import GCP_LABEL_CLAIM_PREFIX, GCP_LABEL_INSTALLATION, GCP_LABEL_MANAGED_BY, MANAGED_BY
from mlworkload.gcp.errors import FailureKind, GcpError, classify, classify_message
from mlworkload.gcp.plan import NodePoolPlan
from mlworkload.metrics import GCP_API_ERRORS

_T = TypeVar("_T")
# With a service account of its own, a node's access is what IAM grants that account: Google's advice for custom
# node service accounts is the cloud-platform scope with IAM roles (the default scopes are for the default SA).
CLOUD_PLATFORM_SCOPE: Final = "https://www.googleapis.com/auth/cloud-platform"
_LOCATION_POLICIES: Final = {
    "ANY": container_v1.NodePoolAutoscaling.LocationPolicy.ANY,
    "BALANCED": container_v1.NodePoolAutoscaling.LocationPolicy.BALANCED,
}
_STATUS = container_v1.NodePool.Status
_TAINT_EFFECTS: Final = {
    "NO_SCHEDULE": container_v1.NodeTaint.Effect.NO_SCHEDULE,
    "PREFER_NO_SCHEDULE": container_v1.NodeTaint.Effect.PREFER_NO_SCHEDULE,
    "NO_EXECUTE": container_v1.NodeTaint.Effect.NO_EXECUTE,
}


@dataclass(frozen=True, slots=True)
class PoolInfo:
    """A node pool as GKE describes it."""

    name: str
    status: str  # PROVISIONING, RUNNING, RUNNING_WITH_ERROR, RECONCILING, STOPPING, ERROR
    message: str = ""
    labels: Mapping[str, str] = field(default_factory=dict)  # GCP resource labels (config.resourceLabels)
    etag: str = ""
    max_nodes: int | None = None  # autoscaling's total maximum, when autoscaling is on
    location_policy: str = ""  # ANY, BALANCED
    locations: tuple[str, ...] = ()
    version: str = ""
    image_type: str = ""
    service_account: str = ""  # "default": the Compute Engine default service account
    disk_type: str = ""
    disk_size_gb: int = 0
    secure_boot: bool = False
    image_streaming: bool = False  # config.gcfsConfig.enabled

    @property
    def managed(self) -> bool:
        """Carries the operator's ownership label (any installation, or a version before installations)."""
        return self.labels.get(GCP_LABEL_MANAGED_BY) == MANAGED_BY

    @property
    def installation(self) -> str:
        """The installation that created it; "" for a pool made before installations were labelled."""
        return self.labels.get(GCP_LABEL_INSTALLATION, "")

    def claimed_by_others(self, installation: str) -> list[str]:
        """Other installations' claim labels on it."""
        own = claim_label(installation)
        return sorted(key for key in self.labels if key.startswith(GCP_LABEL_CLAIM_PREFIX) and key != own)

    @property
    def usable(self) -> bool:
        """RUNNING_WITH_ERROR is GKE's "partially usable": its nodes serve, the autoscaler keeps retrying."""
        return self.status in ("RUNNING", "RECONCILING", "RUNNING_WITH_ERROR")

    @property
    def degraded(self) -> bool:
        return self.status == "RUNNING_WITH_ERROR"

    @property
    def failed(self) -> bool:
        return self.status == "ERROR"


def claim_label(installation: str) -> str:
    """The GCP label key an installation puts on pools it uses but did not create (<= 63 characters)."""
    return GCP_LABEL_CLAIM_PREFIX + hashlib.sha256(installation.encode()).hexdigest()[:12]


@dataclass(frozen=True, slots=True)
class OperationInfo:
    """A GKE long-running operation on one pool."""

    name: str
    pool: str
    done: bool
    kind: str = ""  # CREATE_NODE_POOL, DELETE_NODE_POOL, ...
    error: GcpError | None = None


class NodePools(Protocol):
    """One GKE API call per method; `cluster` is projects/P/locations/L/clusters/C."""

    def get(self, cluster: str, name: str) -> PoolInfo | None: ...

    def list(self, cluster: str) -> list[PoolInfo]: ...

    def create(self, plan: NodePoolPlan) -> OperationInfo: ...

    def delete(self, cluster: str, name: str) -> OperationInfo: ...

    def operation(self, cluster: str, name: str, pool: str) -> OperationInfo: ...

    def set_autoscaling(self, cluster: str, name: str, *, max_nodes: int, location_policy: str) -> OperationInfo:
        """SetNodePoolAutoscaling: on, from 0 to `max_nodes` nodes in total."""
        ...

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
        """UpdateNodePool of what is given, guarded by `pool.etag` (ABORTED when the pool changed since)."""
        ...


def node_pool_resource(plan: NodePoolPlan) -> container_v1.NodePool:
    """The NodePool to create: no nodes until pods ask, Workload Identity metadata, tainted for its pods."""
    accelerators = []
    if plan.accelerator is not None:
        accelerators.append(
            container_v1.AcceleratorConfig(
                accelerator_type=plan.accelerator.type,
                accelerator_count=plan.accelerator.count,
                gpu_driver_installation_config=container_v1.GPUDriverInstallationConfig(
                    gpu_driver_version=container_v1.GPUDriverInstallationConfig.GPUDriverVersion.DEFAULT
                ),
            )
        )
    config = container_v1.NodeConfig(
        machine_type=plan.machine_type,
        accelerators=accelerators,
        spot=plan.spot,
        labels=dict(plan.node_labels),
        resource_labels=dict(plan.labels),
        taints=[
            container_v1.NodeTaint(key=taint.key, value=taint.value, effect=_TAINT_EFFECTS[taint.effect])
            for taint in plan.taints
        ],
        workload_metadata_config=container_v1.WorkloadMetadataConfig(
            mode=container_v1.WorkloadMetadataConfig.Mode.GKE_METADATA
        ),
    )
    _node_settings(config, plan)
    return container_v1.NodePool(
        name=plan.name,
        initial_node_count=0,
        locations=list(plan.locations),
        config=config,
        autoscaling=container_v1.NodePoolAutoscaling(
            enabled=True,
            total_min_node_count=plan.min_nodes,
            total_max_node_count=plan.max_nodes,
            location_policy=_LOCATION_POLICIES[plan.location_policy],
        ),
        management=container_v1.NodeManagement(auto_upgrade=True, auto_repair=True),
    )


def _node_settings(config: container_v1.NodeConfig, plan: NodePoolPlan) -> None:
    """The policy's node settings; what it leaves out stays unset, so GKE applies its defaults."""
    if plan.service_account is not None:
        config.service_account = plan.service_account
        config.oauth_scopes = [CLOUD_PLATFORM_SCOPE]
    if plan.disk_type is not None:
        config.disk_type = plan.disk_type
    if plan.disk_size_gb is not None:
        config.disk_size_gb = plan.disk_size_gb
    if plan.image_type is not None:
        config.image_type = plan.image_type
    if plan.secure_boot is not None:
        config.shielded_instance_config = container_v1.ShieldedInstanceConfig(
            enable_secure_boot=plan.secure_boot, enable_integrity_monitoring=True
        )
    if plan.image_streaming is not None:
        config.gcfs_config = container_v1.GcfsConfig(enabled=plan.image_streaming)


def operations_parent(cluster: str) -> str:
    """projects/P/locations/L of a cluster path; operations are addressed under it."""
    return cluster.split("/clusters/", 1)[0]


def _pool_info(pool: container_v1.NodePool) -> PoolInfo:
    conditions = "; ".join(condition.message for condition in pool.conditions if condition.message)
    autoscaling = pool.autoscaling
    policy = container_v1.NodePoolAutoscaling.LocationPolicy(autoscaling.location_policy).name
    return PoolInfo(
        name=pool.name,
        status=_STATUS(pool.status).name,
        message=pool.status_message or conditions,
        labels=dict(pool.config.resource_labels),
        etag=pool.etag,
        max_nodes=autoscaling.total_max_node_count if autoscaling.enabled else None,
        location_policy="" if policy == "LOCATION_POLICY_UNSPECIFIED" else policy,
        locations=tuple(pool.locations),
        version=pool.version,
        image_type=pool.config.image_type,
        service_account=pool.config.service_account,
        disk_type=pool.config.disk_type,
        disk_size_gb=pool.config.disk_size_gb,
        secure_boot=pool.config.shielded_instance_config.enable_secure_boot,
        image_streaming=pool.config.gcfs_config.enabled,
    )


def _operation_info(operation: container_v1.Operation, pool: str) -> OperationInfo:
    done = operation.status == container_v1.Operation.Status.DONE
    error = None
    if done and operation.error and operation.error.code:
        # The GCE token ([GCE_STOCKOUT], [GCE_QUOTA_EXCEEDED]) is only in the detail, not the error.
        text = " ".join(part for part in (operation.error.message, operation.detail) if part)
        error = classify_message(text, operation.error.code)
    kind = container_v1.Operation.Type(operation.operation_type).name
    return OperationInfo(name=operation.name, pool=pool, done=done, kind=kind, error=error)


class GkeNodePools:
    """`NodePools` over google-cloud-container (REST transport)."""

    def __init__(self, client: container_v1.ClusterManagerClient) -> None:
        self._client = client

    @staticmethod
    def _call(call: Callable[[], _T]) -> _T:
        try:
            return call()
        except Exception as error:  # every client failure leaves as a classified GcpError
            failure = classify(error)
            GCP_API_ERRORS.labels(api="container", reason=failure.kind.value).inc()
            raise failure from error

    def get(self, cluster: str, name: str) -> PoolInfo | None:
        try:
            pool = self._call(lambda: self._client.get_node_pool(name=f"{cluster}/nodePools/{name}"))
        except GcpError as error:
            if error.kind is FailureKind.NOT_FOUND:
                return None
            raise
        return _pool_info(pool)

    def list(self, cluster: str) -> list[PoolInfo]:
        response = self._call(lambda: self._client.list_node_pools(parent=cluster))
        return [_pool_info(pool) for pool in response.node_pools]

    def create(self, plan: NodePoolPlan) -> OperationInfo:
        resource = node_pool_resource(plan)
        operation = self._call(lambda: self._client.create_node_pool(parent=plan.cluster_path, node_pool=resource))
        return _operation_info(operation, plan.name)

    def delete(self, cluster: str, name: str) -> OperationInfo:
        operation = self._call(lambda: self._client.delete_node_pool(name=f"{cluster}/nodePools/{name}"))
        return _operation_info(operation, name)

    def operation(self, cluster: str, name: str, pool: str) -> OperationInfo:
        path = f"{operations_parent(cluster)}/operations/{name}"
        return _operation_info(self._call(lambda: self._client.get_operation(name=path)), pool)

    def set_autoscaling(self, cluster: str, name: str, *, max_nodes: int, location_policy: str) -> OperationInfo:
        request = container_v1.SetNodePoolAutoscalingRequest(
            name=f"{cluster}/nodePools/{name}",
            autoscaling=container_v1.NodePoolAutoscaling(
                enabled=True,
                total_min_node_count=0,
                total_max_node_count=max_nodes,
                location_policy=_LOCATION_POLICIES[location_policy],
            ),
        )
        return _operation_info(self._call(lambda: self._client.set_node_pool_autoscaling(request=request)), name)

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
        # node_version and image_type are "Required" in the proto: the pool's own unless the image changes, so
        # nothing else does.
        request = container_v1.UpdateNodePoolRequest(
            name=f"{cluster}/nodePools/{pool.name}",
            node_version=pool.version,
            image_type=image_type or pool.image_type,
            etag=pool.etag,
        )
        if locations is not None:
            request.locations = list(locations)
        if resource_labels is not None:
            request.resource_labels = container_v1.ResourceLabels(labels=dict(resource_labels))
        if image_streaming is not None:
            request.gcfs_config = container_v1.GcfsConfig(enabled=image_streaming)
        if disk_type is not None:
            request.disk_type = disk_type
        if disk_size_gb is not None:
            request.disk_size_gb = disk_size_gb
        return _operation_info(self._call(lambda: self._client.update_node_pool(request=request)), pool.name)
