"""What GKE has made of a workload's endpoints: addresses, certificates and backend services.

Pure: the resolved workload and its observed children in, URLs, the backend services IAP access is
granted on, and the `EndpointsReady` readiness out. A URL is reported only once it can answer: the
Ingress has an address, and an HTTPS endpoint's managed certificate is Active. GKE provisions a
load balancer in minutes and a managed certificate in up to an hour; the Ray workload is Ready
meanwhile (its in-cluster Services work), so this readiness never holds `Ready` back.
"""

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from mlworkload.builders.endpoints import ExposedEndpoint, exposed_endpoints
from mlworkload.builders.ingress import BACKENDS_ANNOTATION, is_backend_of
from mlworkload.constants import (
    REASON_NO_ENDPOINTS,
    REASON_SERVING,
    REASON_WAITING_FOR_ADDRESS,
    REASON_WAITING_FOR_BACKEND,
    REASON_WAITING_FOR_CERTIFICATE,
)
from mlworkload.gcp.provisioner import Readiness
from mlworkload.policy.resolve import ResolvedWorkload

Manifest = dict[str, Any]
ChildKey = tuple[str, str]

CERTIFICATE_ACTIVE: Final = "Active"

NO_ENDPOINTS: Final = Readiness(True, REASON_NO_ENDPOINTS, "no endpoint is exposed")


@dataclass(frozen=True, slots=True)
class Exposure:
    urls: dict[str, str] = field(default_factory=dict)  # "dashboard" | "serve" -> URL
    backends: dict[str, tuple[str, ...]] = field(default_factory=dict)  # Ingress name -> backend services
    readiness: Readiness = NO_ENDPOINTS


def _address(ingress: Manifest | None) -> str | None:
    for entry in ((ingress or {}).get("status") or {}).get("loadBalancer", {}).get("ingress") or []:
        address = entry.get("ip") or entry.get("hostname")
        if address:
            return str(address)
    return None


def backend_services(ingress: Manifest | None, namespace: str, endpoint: ExposedEndpoint) -> tuple[str, ...] | None:
    """The endpoint's backend services GKE names on its Ingress; None until it does. Only names GKE would
    give this Service port count: not its default backend, and nothing someone else wrote there."""
    annotations = ((ingress or {}).get("metadata") or {}).get("annotations") or {}
    try:
        backends = json.loads(annotations[BACKENDS_ANNOTATION])
    except (KeyError, ValueError, TypeError):
        return None
    if not isinstance(backends, dict):
        return None
    ours = (str(name) for name in backends if is_backend_of(str(name), namespace, endpoint.name, endpoint.port))
    return tuple(sorted(ours)) or None


def _certificate_status(certificate: Manifest | None) -> str:
    return str(((certificate or {}).get("status") or {}).get("certificateStatus") or "not yet reported")


def _endpoint_state(
    endpoint: ExposedEndpoint, observed: Mapping[ChildKey, Manifest], namespace: str, grants_wanted: bool
) -> tuple[str | None, tuple[str, ...] | None, tuple[str, str] | None]:
    """(URL, backend services, why it is not serving yet as (reason, message))."""
    ingress = observed.get(("Ingress", endpoint.name))
    exposure = endpoint.endpoint
    backends = backend_services(ingress, namespace, endpoint)
    address = _address(ingress)
    if address is None:
        return None, backends, (REASON_WAITING_FOR_ADDRESS, f"{endpoint.which}: the load balancer has no address yet")
    if exposure.managed_certificate:
        status = _certificate_status(observed.get(("ManagedCertificate", endpoint.name)))
        if status != CERTIFICATE_ACTIVE:
            return (
                None,
                backends,
                (
                    REASON_WAITING_FOR_CERTIFICATE,
                    f"{endpoint.which}: the managed certificate for {exposure.host} is {status}; GKE activates it once"
                    f" {exposure.host} resolves to {address}",
                ),
            )
    url = f"{'https' if exposure.https else 'http'}://{exposure.host or address}"
    if grants_wanted and backends is None:
        return (
            url,
            None,
            (
                REASON_WAITING_FOR_BACKEND,
                f"{endpoint.which}: IAP access is granted once GKE names the load balancer's backend service",
            ),
        )
    return url, backends, None


def observe_exposure(resolved: ResolvedWorkload, observed: Mapping[ChildKey, Manifest]) -> Exposure:
    """URLs that answer, backend services for IAP grants, and what the endpoints still wait for."""
    endpoints = exposed_endpoints(resolved)
    if not endpoints:
        return Exposure()
    accessors = bool(resolved.policy.expose.iap_accessors)
    urls: dict[str, str] = {}
    backends: dict[str, tuple[str, ...]] = {}
    waiting: list[tuple[str, str]] = []
    for endpoint in endpoints:
        url, services, why = _endpoint_state(
            endpoint, observed, resolved.namespace, accessors and endpoint.endpoint.iap
        )
        if url is not None:
            urls[endpoint.which] = url
        if services:
            backends[endpoint.name] = services
        if why is not None:
            waiting.append(why)
    if waiting:
        return Exposure(urls, backends, Readiness(False, waiting[0][0], "; ".join(message for _, message in waiting)))
    serving = ", ".join(f"{which} at {url}" for which, url in urls.items())
    return Exposure(urls, backends, Readiness(True, REASON_SERVING, serving))
