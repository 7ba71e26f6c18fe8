"""The operator split by role (`mlworkload run --role`), against the in-memory API server.

The webhook role with certificates owned by the operator (the chart's default): it makes the certificate
Secret, puts the bundle into the chart's own ValidatingWebhookConfiguration, and serves TLS that a client
trusting only that caBundle accepts for the Service's name, as the API server does. A renewal is served
without a restart, a caBundle reset by someone else is put back, a restart reuses the Secret. The controller
role reconciles and serves no webhook.
"""

import base64
import datetime
import json
import socket
import ssl
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

from mlworkload.webhook.certificates import issue_serving, read_tls, service_hosts
from tests.support.documents import workload
from tests.support.helm import render
from tests.support.kube import KubeEmulatorServer, wait_until
from tests.support.operator import emulated_cluster, free_port, running_operator

NS = "team-nlp"
SYSTEM = "mlworkload-system"
SERVICE = "mlworkload-webhook"
SECRET = "mlworkload-webhook-ca"
CONFIGURATION = "mlworkload"
HOST = f"{SERVICE}.{SYSTEM}.svc"
VWC = "admissionregistration.k8s.io/v1"
WAIT = 30.0


@pytest.fixture
def server() -> Iterator[KubeEmulatorServer]:
    with emulated_cluster(NS, SYSTEM) as emulator:
        (configuration,) = [m for m in render() if m["kind"] == "ValidatingWebhookConfiguration"]
        assert configuration["metadata"]["name"] == CONFIGURATION
        emulator.put_object(configuration)
        yield emulator


@contextmanager
def webhook_role(server: KubeEmulatorServer, tmp_path: Path, port: int, check_seconds: float = 0.5) -> Iterator[None]:
    tmp_path.mkdir(parents=True, exist_ok=True)
    settings = {
        "MLW_ROLE": "webhook",
        "MLW_WEBHOOK_CERTIFICATES": "operator",
        "POD_NAMESPACE": SYSTEM,
        "MLW_WEBHOOK_SERVICE": SERVICE,
        "MLW_WEBHOOK_SECRET": SECRET,
        "MLW_WEBHOOK_CONFIGURATION": CONFIGURATION,
        "MLW_WEBHOOK_CERT_DIR": str(tmp_path / "served"),
        "MLW_WEBHOOK_CERTIFICATE_CHECK_SECONDS": str(check_seconds),
    }
    with running_operator(server.kubeconfig(tmp_path / "kubeconfig"), webhook_port=port, settings=settings):
        yield


def secret(server: KubeEmulatorServer) -> dict[str, Any]:
    return server.get_object("v1", "Secret", SECRET, SYSTEM) or {}


def ca_bundles(server: KubeEmulatorServer) -> list[str | None]:
    configuration = server.get_object(VWC, "ValidatingWebhookConfiguration", CONFIGURATION) or {}
    return [webhook["clientConfig"].get("caBundle") for webhook in configuration.get("webhooks") or []]


def bundle_in_place(server: KubeEmulatorServer) -> bool:
    """The Secret exists and every webhook trusts exactly its bundle."""
    data = secret(server).get("data") or {}
    return bool(data) and ca_bundles(server) == [data["ca.crt"]] * 2


def trusting(server: KubeEmulatorServer) -> ssl.SSLContext | None:
    """A TLS client that trusts exactly what the webhook configuration says, as the API server does (None while
    it says nothing)."""
    (bundle, *_) = ca_bundles(server)
    return ssl.create_default_context(cadata=base64.b64decode(bundle).decode("ascii")) if bundle else None


def served_trusted(server: KubeEmulatorServer, port: int) -> bytes | None:
    """The certificate served, if a client trusting the caBundle accepts it for the Service's name."""
    context = trusting(server)
    return served(port, context) if context is not None else None


def served(port: int, context: ssl.SSLContext | None = None) -> bytes | None:
    """The certificate the webhook serves (PEM), verified by `context` for the Service's name; None if refused."""
    if context is None:
        context = ssl.create_default_context()
        context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    try:
        with (
            socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
            context.wrap_socket(raw, server_hostname=HOST) as tls,
        ):
            der = tls.getpeercert(binary_form=True)
    except (OSError, ssl.SSLError):
        return None
    assert der is not None
    return ssl.DER_cert_to_PEM_cert(der).encode("ascii")


def secret_certificate(server: KubeEmulatorServer) -> bytes:
    return base64.b64decode(secret(server)["data"]["tls.crt"])


def same_certificate(pem: bytes | None, other: bytes) -> bool:
    return pem is not None and x509.load_pem_x509_certificate(pem) == x509.load_pem_x509_certificate(other)


def admitted(port: int, context: ssl.SSLContext | None) -> bool:
    assert context is not None
    doc = workload("probe", NS).doc
    review = {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {
        "uid": "review-1", "operation": "CREATE", "name": "probe", "namespace": NS,
        "kind": {"group": "mlworkload.io", "version": "v1alpha1", "kind": "MLWorkload"},
        "resource": {"group": "mlworkload.io", "version": "v1alpha1", "resource": "mlworkloads"},
        "userInfo": {"username": "alice"}, "object": doc, "oldObject": None, "dryRun": False}}  # fmt: skip
    request = urllib.request.Request(f"https://{HOST}:{port}/policy", data=json.dumps(review).encode(),
                                     headers={"Content-Type": "application/json"})  # fmt: skip
    # The Service's name resolves to the pod here as in the cluster; the certificate is checked against it.
    with _resolving(HOST), urllib.request.urlopen(request, context=context, timeout=10) as response:
        return bool(json.loads(response.read())["response"]["allowed"])


@contextmanager
def _resolving(host: str) -> Iterator[None]:
    original = socket.getaddrinfo

    def lookup(name: Any, *args: Any, **kwargs: Any) -> Any:
        return original("127.0.0.1" if name == host else name, *args, **kwargs)

    socket.getaddrinfo = lookup  # type: ignore[assignment]
    try:
        yield
    finally:
        socket.getaddrinfo = original


def test_the_webhook_role_makes_its_secret_patches_the_ca_bundle_and_serves_what_it_trusts(
    server: KubeEmulatorServer, tmp_path: Path
) -> None:
    assert ca_bundles(server) == [None, None]  # the chart renders no certificate material
    port = free_port()
    with webhook_role(server, tmp_path, port):
        wait_until(lambda: bundle_in_place(server), timeout=WAIT, what="the Secret made and its bundle in the caBundle")
        wait_until(lambda: served_trusted(server, port) is not None, timeout=WAIT,
                   what="TLS verified against the caBundle for the Service's name")  # fmt: skip
        assert same_certificate(served(port), secret_certificate(server))
        wait_until(lambda: admitted(port, trusting(server)), timeout=WAIT, what="a workload admitted over that TLS")
        assert secret(server)["type"] == "kubernetes.io/tls"
        # The webhook role wrote nothing but its certificate Secret and the caBundle.
        written = {(r.method, r.path.rsplit("/", 1)[0] if r.method != "POST" else r.path) for r in server.writes()}
        assert written <= {
            ("POST", f"/api/v1/namespaces/{SYSTEM}/secrets"),
            ("PUT", f"/api/v1/namespaces/{SYSTEM}/secrets"),
            ("PATCH", "/apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations"),
        }, written


def test_an_expiring_certificate_is_renewed_and_served_without_a_restart(
    server: KubeEmulatorServer, tmp_path: Path
) -> None:
    port = free_port()
    with webhook_role(server, tmp_path, port):
        wait_until(lambda: served_trusted(server, port) is not None, timeout=WAIT, what="the first certificate")
        current = read_tls(secret(server)["data"])
        assert current is not None
        # Someone's clock, or a missed year of checks: the certificate in the Secret has 20 days left.
        now = datetime.datetime.now(datetime.UTC)
        expiring = issue_serving(current.ca, service_hosts(SERVICE, SYSTEM), now - datetime.timedelta(days=345))
        stale = secret(server)
        stale["data"] = {**stale["data"], "tls.crt": base64.b64encode(expiring.cert).decode(),
                         "tls.key": base64.b64encode(expiring.key).decode()}  # fmt: skip
        server.put_object(stale)
        wait_until(lambda: not same_certificate(secret_certificate(server), expiring.cert), timeout=WAIT,
                   what="the expiring certificate renewed in the Secret")  # fmt: skip
        renewed = secret_certificate(server)
        assert x509.load_pem_x509_certificate(renewed).not_valid_after_utc > now + datetime.timedelta(days=300)
        assert read_tls(secret(server)["data"]).ca == current.ca  # type: ignore[union-attr]  # same CA: no new bundle
        wait_until(lambda: same_certificate(served_trusted(server, port), renewed), timeout=WAIT,
                   what="the renewed certificate served by the same process")  # fmt: skip


def test_a_ca_bundle_reset_by_someone_else_is_put_back_at_once(server: KubeEmulatorServer, tmp_path: Path) -> None:
    port = free_port()
    # A check interval far beyond the test: only the watch on the webhook configuration can restore it.
    with webhook_role(server, tmp_path, port, check_seconds=3600):
        wait_until(lambda: bundle_in_place(server), timeout=WAIT, what="the caBundle set")
        kept = ca_bundles(server)
        configuration = server.get_object(VWC, "ValidatingWebhookConfiguration", CONFIGURATION)
        assert configuration is not None
        for webhook in configuration["webhooks"]:
            webhook["clientConfig"].pop("caBundle")  # what `helm upgrade` or an Argo CD sync of the chart does
        server.put_object(configuration)
        wait_until(lambda: ca_bundles(server) == kept, timeout=WAIT, what="the caBundle restored")
        assert served_trusted(server, port) is not None


def test_a_second_start_reuses_the_secret(server: KubeEmulatorServer, tmp_path: Path) -> None:
    port = free_port()
    with webhook_role(server, tmp_path, port):
        wait_until(lambda: served_trusted(server, port) is not None, timeout=WAIT, what="the first start serving")
    first = secret(server)
    bundles = ca_bundles(server)
    with webhook_role(server, tmp_path / "again", port):
        wait_until(lambda: served_trusted(server, port) is not None, timeout=WAIT, what="the second start serving")
        assert same_certificate(served(port), secret_certificate(server))
    assert secret(server)["metadata"]["resourceVersion"] == first["metadata"]["resourceVersion"]  # not rewritten
    assert secret(server)["data"] == first["data"]
    assert ca_bundles(server) == bundles


def test_the_controller_role_reconciles_and_serves_no_webhook(server: KubeEmulatorServer, tmp_path: Path) -> None:
    port = free_port()
    server.put_object(workload("plain", NS).doc)
    settings = {"MLW_ROLE": "controller", "POD_NAMESPACE": SYSTEM, "MLW_WEBHOOK_CERTIFICATES": "operator"}
    with running_operator(server.kubeconfig(tmp_path / "kubeconfig"), webhook_port=port, settings=settings):
        wait_until(lambda: (server.get_object("mlworkload.io/v1alpha1", "MLWorkload", "plain", NS) or {})
                   .get("status", {}).get("observedGeneration") is not None, timeout=WAIT,
                   what="the workload reconciled")  # fmt: skip
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=5).close()
    assert secret(server) == {}
    assert ca_bundles(server) == [None, None]
