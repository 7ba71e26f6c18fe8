"""Ingresses for the dashboard and Serve endpoints, on GKE's internal or external load balancer."""

from typing import Any

from mlworkload.api.workload import Visibility
from mlworkload.builders.endpoints import ExposedEndpoint
from mlworkload.builders.metadata import Manifest, object_meta
from mlworkload.policy.resolve import ResolvedWorkload

# GKE picks the load balancer from this annotation; it ignores spec.ingressClassName for gce.
INGRESS_CLASS_ANNOTATION = "kubernetes.io/ingress.class"
INGRESS_CLASS = {Visibility.INTERNAL: "gce-internal", Visibility.EXTERNAL: "gce"}


def build_ingress(resolved: ResolvedWorkload, endpoint: ExposedEndpoint) -> Manifest:
    backend = {"service": {"name": endpoint.name, "port": {"number": endpoint.port}}}
    spec: dict[str, Any]
    if endpoint.endpoint.host:
        path = {"path": "/", "pathType": "Prefix", "backend": backend}
        spec = {"rules": [{"host": endpoint.endpoint.host, "http": {"paths": [path]}}]}
    else:
        spec = {"defaultBackend": backend}
    annotations = {INGRESS_CLASS_ANNOTATION: INGRESS_CLASS[endpoint.endpoint.visibility]}
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": object_meta(resolved, endpoint.name, annotations),
        "spec": spec,
    }
