"""What GKE made of the endpoints: URLs only once they answer, IAP backends, EndpointsReady."""

import json
from typing import Any

import pytest

from mlworkload.builders.ingress import is_backend_of, neg_backend_name
from mlworkload.controller.exposure import observe_exposure
from mlworkload.policy import ResolvedWorkload
from tests.support.documents import permissive_policy, resolved, workload

ACCESSORS = permissive_policy().set("expose.iapAccessors", ["group:ml@example.com"])
BACKEND = neg_backend_name("0a1b2c3d4e5f", "team-nlp", "demo-serve", 8000)  # as GKE names it
DEFAULT_BACKEND = neg_backend_name("0a1b2c3d4e5f", "kube-system", "default-http-backend", 80)


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


LONG = "01234567890123456789012345678901234567890123456789"


@pytest.mark.parametrize(
    ("namespace", "service", "port", "expected"),
    [
        ("namespace", "name", 80, "k8s1-01234567-namespace-name-80-5104b449"),
        (LONG[:10], LONG[:10], 1234567890, "k8s1-01234567-0123456789-0123456789-1234567890-ed141b14"),
        (LONG, "0", 0, "k8s1-01234567-0123456789012345678901234567890123456-0--72142e04"),
        (LONG, LONG, 0, "k8s1-01234567-0123456789012345678-0123456789012345678--9129e3d2"),
        (LONG, LONG[:40], 2147483647, "k8s1-01234567-0123456789012345678-0123456789012345-214-ed1f2a2f"),
    ],
)
def test_backend_names_follow_ingress_gces_own_test_vectors(
    namespace: str, service: str, port: int, expected: str
) -> None:
    """The cases of ingress-gce's TestNamerNEG (pkg/utils/namer), cluster id 01234567."""
    assert neg_backend_name("0123456789abcdef", namespace, service, port) == expected
    assert is_backend_of(expected, namespace, service, port)


def test_iap_is_granted_only_on_the_backend_gke_makes_for_the_endpoint() -> None:
    """Whoever may edit the Ingress may write any name into its annotation: another team's backend (or one
    with a made-up hash) is never granted."""
    other_team = neg_backend_name("0a1b2c3d4e5f", "team-cv", "vision-serve", 8000)
    forged = BACKEND[:-8] + "00000000"
    live = ingress("34.1.2.3", {other_team: "HEALTHY", forged: "HEALTHY", "k8s-be-30167--01177f64ec764488": "HEALTHY"})
    children = {("Ingress", "demo-serve"): live, ("ManagedCertificate", "demo-serve"): certificate("Active")}
    exposure = observe_exposure(external_serve(), children)
    assert exposure.backends == {}
    assert exposure.readiness.reason == "WaitingForBackend"
