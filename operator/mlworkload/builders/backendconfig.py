"""GKE BackendConfigs: the load balancer's health check for a Ray endpoint, and IAP when asked."""

from mlworkload.builders.endpoints import ExposedEndpoint
from mlworkload.builders.metadata import Manifest, object_meta
from mlworkload.policy.resolve import ResolvedWorkload


def build_backend_config(resolved: ResolvedWorkload, endpoint: ExposedEndpoint) -> Manifest:
    spec: Manifest = {
        "healthCheck": {"type": "HTTP", "requestPath": endpoint.health_path, "port": endpoint.port},
    }
    if endpoint.endpoint.iap:
        # No oauthclientCredentials: GKE uses the Google-managed OAuth client (GKE >= 1.29.4).
        spec["iap"] = {"enabled": True}
    return {
        "apiVersion": "cloud.google.com/v1",
        "kind": "BackendConfig",
        "metadata": object_meta(resolved, endpoint.name),
        "spec": spec,
    }
