"""What GKE made of the endpoints: URLs only once they answer, IAP backends, EndpointsReady."""

import json
from typing import Any

from mlworkload.controller.exposure import observe_exposure
from mlworkload.policy import ResolvedWorkload
from tests.support.documents import permissive_policy, resolved, workload

ACCESSORS = permissive_policy().set("expose.iapAccessors", ["group:ml@example.com"])
BACKEND = "k8s1-0a1b2c3d-team-nlp-demo-serve-8000-9f8e7d6c"
DEFAULT_BACKEND = "k8s1-0a1b2c3d-kube-system-default-http-backend-80-1a2b3c4d"


def external_serve() -> ResolvedWorkload:
    doc = workload().service().expose("serve", visibility="External", iap=True, host="llm.example.com")
    return resolved(doc, ACCESSORS)


def ingress(address: str | None = None, backends: dict[str, str] | None = None) -> dict[str, Any]:
    live: dict[str, Any] = {"metadata": {"name": "demo-serve", "annotations": {}}}
    if backends is not None:
        live["metadata"]["annotations"]["ingress.kubernetes.io/backends"] = json.dumps(backends)
    if address is not None:
        live["status"] = {"loadBalancer": {"ingress": [{"ip": address}]}}
    return live


def certificate(status: str) -> dict[str, Any]:
    return {"metadata": {"name": "demo-serve"}, "status": {"certificateStatus": status}}


def test_nothing_exposed_is_ready_with_no_urls() -> None:
    exposure = observe_exposure(resolved(workload(), permissive_policy()), {})
    assert (exposure.readiness.ready, exposure.readiness.reason, exposure.urls) == (True, "NoEndpoints", {})


def test_an_external_iap_endpoint_walks_from_address_to_certificate_to_serving() -> None:
    workload_ = external_serve()
    waiting = observe_exposure(workload_, {("Ingress", "demo-serve"): ingress()})
    assert (waiting.readiness.ready, waiting.readiness.reason, waiting.urls) == (False, "WaitingForAddress", {})

    provisioning = observe_exposure(
        workload_,
        {("Ingress", "demo-serve"): ingress("34.1.2.3", {BACKEND: "Unknown", DEFAULT_BACKEND: "HEALTHY"}),
         ("ManagedCertificate", "demo-serve"): certificate("Provisioning")},
    )  # fmt: skip
    assert provisioning.readiness.reason == "WaitingForCertificate"
    assert "llm.example.com resolves to 34.1.2.3" in provisioning.readiness.message
    assert provisioning.urls == {}  # HTTPS only, and the certificate is not there yet
    assert provisioning.backends == {
        "demo-serve": (BACKEND,)
    }  # IAP grants need no certificate; GKE's default is not ours

    serving = observe_exposure(
        workload_,
        {("Ingress", "demo-serve"): ingress("34.1.2.3", {BACKEND: "HEALTHY"}),
         ("ManagedCertificate", "demo-serve"): certificate("Active")},
    )  # fmt: skip
    assert (serving.readiness.ready, serving.readiness.reason) == (True, "Serving")
    assert serving.urls == {"serve": "https://llm.example.com"}


def test_iap_grants_wait_for_the_backend_gke_names() -> None:
    exposure = observe_exposure(
        external_serve(),
        {("Ingress", "demo-serve"): ingress("34.1.2.3"), ("ManagedCertificate", "demo-serve"): certificate("Active")},
    )
    assert exposure.readiness.reason == "WaitingForBackend"
    assert exposure.urls == {"serve": "https://llm.example.com"}
    assert exposure.backends == {}


def test_a_plain_http_endpoint_without_host_is_reported_at_its_address() -> None:
    doc = workload().service().expose("serve", visibility="External", iap=False)
    exposure = observe_exposure(resolved(doc, ACCESSORS), {("Ingress", "demo-serve"): ingress("34.1.2.3")})
    assert exposure.urls == {"serve": "http://34.1.2.3"}
    assert exposure.readiness.ready
