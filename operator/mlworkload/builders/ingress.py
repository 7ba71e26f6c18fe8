"""Ingresses for the dashboard and Serve endpoints, on GKE's internal or external load balancer.

An endpoint with a certificate is HTTPS only: External endpoints with a host get a Google-managed
certificate (a `ManagedCertificate`, which GKE supports for external load balancers only); Internal
endpoints use the policy's pre-shared regional certificates. IAP is only ever offered over HTTPS
(admission refuses an IAP endpoint without a certificate).
"""

from typing import Any

from mlworkload.api.workload import Visibility
from mlworkload.builders.endpoints import ExposedEndpoint
from mlworkload.builders.metadata import Manifest, object_meta
from mlworkload.policy.resolve import ResolvedWorkload

# GKE picks the load balancer from this annotation; it ignores spec.ingressClassName for gce.
INGRESS_CLASS_ANNOTATION = "kubernetes.io/ingress.class"
INGRESS_CLASS = {Visibility.INTERNAL: "gce-internal", Visibility.EXTERNAL: "gce"}
MANAGED_CERTIFICATES_ANNOTATION = "networking.gke.io/managed-certificates"
PRE_SHARED_CERT_ANNOTATION = "ingress.gcp.kubernetes.io/pre-shared-cert"
ALLOW_HTTP_ANNOTATION = "kubernetes.io/ingress.allow-http"
# Set by GKE's Ingress controller once it made the load balancer: backend service name -> health.
BACKENDS_ANNOTATION = "ingress.kubernetes.io/backends"


def _annotations(endpoint: ExposedEndpoint) -> dict[str, str]:
    exposure = endpoint.endpoint
    annotations = {INGRESS_CLASS_ANNOTATION: INGRESS_CLASS[exposure.visibility]}
    if exposure.managed_certificate:
        annotations[MANAGED_CERTIFICATES_ANNOTATION] = endpoint.name
    elif exposure.pre_shared_certificates:
        annotations[PRE_SHARED_CERT_ANNOTATION] = ",".join(exposure.pre_shared_certificates)
    if exposure.https:
        annotations[ALLOW_HTTP_ANNOTATION] = "false"
    return annotations


def build_ingress(resolved: ResolvedWorkload, endpoint: ExposedEndpoint) -> Manifest:
    backend = {"service": {"name": endpoint.name, "port": {"number": endpoint.port}}}
    spec: dict[str, Any]
    if endpoint.endpoint.host:
        path = {"path": "/", "pathType": "Prefix", "backend": backend}
        spec = {"rules": [{"host": endpoint.endpoint.host, "http": {"paths": [path]}}]}
    else:
        spec = {"defaultBackend": backend}
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": object_meta(resolved, endpoint.name, _annotations(endpoint)),
        "spec": spec,
    }


def build_managed_certificate(resolved: ResolvedWorkload, endpoint: ExposedEndpoint) -> Manifest | None:
    """The Google-managed certificate for an External endpoint's host; None for other endpoints."""
    if not endpoint.endpoint.managed_certificate:
        return None
    return {
        "apiVersion": "networking.gke.io/v1",
        "kind": "ManagedCertificate",
        "metadata": object_meta(resolved, endpoint.name),
        "spec": {"domains": [endpoint.endpoint.host]},
    }
