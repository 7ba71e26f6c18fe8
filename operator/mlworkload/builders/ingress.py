"""Ingresses for the dashboard and Serve endpoints, on GKE's internal or external load balancer.

An endpoint with a certificate is HTTPS only: External endpoints with a host get a Google-managed
certificate (a `ManagedCertificate`, which GKE supports for external load balancers only); Internal
endpoints use the policy's pre-shared regional certificates. IAP is only ever offered over HTTPS
(admission refuses an IAP endpoint without a certificate).
"""

import hashlib
import re
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
# ingress-gce's NEG naming (pkg/utils/namer: Namer.NEG, negSuffix, TrimFieldsEvenly; maxNEGDescriptiveLabel).
_NEG_PREFIX = re.compile(r"k8s1-(?P<uid>[0-9a-z]{1,8})-")
_NEG_FIELDS_MAX = 38


def _trim_fields_evenly(limit: int, *fields: str) -> list[str]:
    total = sum(map(len, fields))
    if total <= limit:
        return list(fields)
    excess = total - limit
    lengths = [len(field) - len(field) * excess // total - 1 for field in fields]
    for index in range(limit - sum(lengths)):
        lengths[index] += 1
    return [field[:length] for field, length in zip(fields, lengths, strict=True)]


def neg_backend_name(cluster_uid: str, namespace: str, service: str, port: int) -> str:
    """The name GKE gives the NEG, and the backend service, of a Service port: Namer.NEG of ingress-gce."""
    short_uid = cluster_uid[:8]
    fields = _trim_fields_evenly(_NEG_FIELDS_MAX, namespace, service, str(port))
    digest = hashlib.sha256(";".join([short_uid, namespace, service, str(port)]).encode()).hexdigest()[:8]
    return f"k8s1-{short_uid}-{'-'.join(fields)}-{digest}"


def is_backend_of(name: str, namespace: str, service: str, port: int) -> bool:
    """Whether a backend service name is the one GKE makes for this Service port, hash included. Users who
    may edit an Ingress may write any name into its annotation: IAP is granted only where this holds."""
    match = _NEG_PREFIX.match(name)
    return match is not None and name == neg_backend_name(match["uid"], namespace, service, port)


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
