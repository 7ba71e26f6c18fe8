"""The workload's exposed HTTP endpoints (dashboard, serve), as the exposure builders need them."""

from dataclasses import dataclass

from mlworkload.api.workload import WorkloadType
from mlworkload.builders.metadata import selector_labels
from mlworkload.builders.names import endpoint_name
from mlworkload.constants import PORT_DASHBOARD, PORT_SERVE, RAY_LABEL_NODE_TYPE, RAY_LABEL_SERVE
from mlworkload.policy.resolve import ResolvedEndpoint, ResolvedWorkload


@dataclass(frozen=True, slots=True)
class ExposedEndpoint:
    which: str  # "dashboard" or "serve"
    name: str  # of its Ingress, Service and BackendConfig
    port: int
    health_path: str
    pod_selector: dict[str, str]
    endpoint: ResolvedEndpoint


def exposed_endpoints(resolved: ResolvedWorkload) -> list[ExposedEndpoint]:
    """Enabled endpoints. Serve traffic goes to the pods KubeRay marks ready for Serve on a
    RayService (workers included), and to the head elsewhere."""
    head = {**selector_labels(resolved), RAY_LABEL_NODE_TYPE: "head"}
    endpoints = []
    if resolved.dashboard is not None:
        endpoints.append(
            ExposedEndpoint("dashboard", endpoint_name(resolved, "dashboard"), PORT_DASHBOARD,
                            "/api/gcs_healthz", head, resolved.dashboard)
        )  # fmt: skip
    if resolved.serve is not None:
        serving = (
            {**selector_labels(resolved), RAY_LABEL_SERVE: "true"} if resolved.type is WorkloadType.SERVICE else head
        )
        endpoints.append(
            ExposedEndpoint("serve", endpoint_name(resolved, "serve"), PORT_SERVE, "/-/healthz", serving,
                            resolved.serve)
        )  # fmt: skip
    return endpoints
