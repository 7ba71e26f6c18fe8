"""The GCP side of desired state: node pools and IAM bindings, as `mlworkload plan` prints them."""

from typing import Literal

from pydantic import Field

from mlworkload.api.base import ApiModel


class Taint(ApiModel):
    key: str
    value: str
    effect: Literal["NO_SCHEDULE", "PREFER_NO_SCHEDULE", "NO_EXECUTE"] = "NO_SCHEDULE"


class AcceleratorPlan(ApiModel):
    type: str
    count: int


class NodePoolPlan(ApiModel):
    """One GKE node pool, shared by every workload of the same shape."""

    name: str
    project: str
    location: str
    cluster: str
    machine_type: str
    accelerator: AcceleratorPlan | None = None
    spot: bool
    min_nodes: int = 0
    max_nodes: int
    locations: list[str] = Field(default_factory=list)
    location_policy: Literal["ANY", "BALANCED"] = "ANY"
    labels: dict[str, str] = Field(
        default_factory=dict, description="GCP labels on the pool's VMs: the operator's, then the policy's."
    )
    node_labels: dict[str, str] = Field(default_factory=dict, description="Kubernetes labels on its nodes.")
    taints: list[Taint] = Field(default_factory=list)
    # Node settings from the policy; None: GKE's default at creation, and whatever the pool has afterwards.
    service_account: str | None = Field(default=None, description="GSA the nodes run as (set at creation).")
    secure_boot: bool | None = Field(default=None, description="Shielded nodes' Secure Boot (set at creation).")
    disk_type: str | None = Field(default=None, description="Boot disk type (updated in place).")
    disk_size_gb: int | None = Field(default=None, description="Boot disk size in GB (updated in place).")
    image_type: str | None = Field(default=None, description="Node image type (updated in place).")
    image_streaming: bool | None = Field(default=None, description="GKE image streaming (updated in place).")

    @property
    def cluster_path(self) -> str:
        return f"projects/{self.project}/locations/{self.location}/clusters/{self.cluster}"


class IamBinding(ApiModel):
    """One member granted one role on one resource."""

    resource: str
    role: str
    member: str


class GcpPlan(ApiModel):
    node_pools: list[NodePoolPlan] = Field(default_factory=list)
    iam_bindings: list[IamBinding] = Field(default_factory=list)
