"""Keeps the webhook's certificate at run time: its Secret, the caBundle, and the files the server reads.

One pass (`CertificateKeeper.ensure`), at start-up, periodically and whenever the webhook
configuration changes, is level-triggered and idempotent, so a second pass writes nothing:

1. the Secret holds a CA and a serving certificate that `certificates.plan` finds nothing due on
   (created with 409-on-conflict, replaced with a resourceVersion precondition: replicas racing
   converge on one certificate, the loser reads the winner's);
2. every webhook in the ValidatingWebhookConfiguration carries the Secret's bundle (a JSON patch,
   only of the webhooks that differ, each guarded by a test of its name);
3. the serving certificate and key are in the served directory, swapped together through a symlink
   as the kubelet does for mounted Secrets: kopf's WebhookServer sees the files change and restarts
   its listener with them, so a renewal is served without a restart.

Step 3 waits for step 2 when the bundle had to change: a certificate from a new CA is served only
once the API server can be told to trust that CA.
"""

import asyncio
import base64
import datetime
import logging
import secrets
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from cryptography import x509

from mlworkload.controller.kube import ClientKubeApi, KubeError
from mlworkload.webhook.certificates import CERT, KEY, KeyPair, Reason, WebhookTls, encoded_bundle, plan, read_tls

logger = logging.getLogger(__name__)

Clock = Callable[[], datetime.datetime]
WEBHOOK_CONFIGURATIONS = "/apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations"
# Rereads after a lost race before a pass gives up (and the next pass tries again).
ATTEMPTS = 5


def utc_now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


class Conflict(Exception):
    """Someone else wrote the Secret first (409): read theirs."""


@dataclass(frozen=True)
class StoredSecret:
    data: dict[str, str]
    resource_version: str


class SecretStore(Protocol):
    """The certificate Secret, as the keeper needs it."""

    async def read(self) -> StoredSecret | None: ...

    async def create(self, data: dict[str, str]) -> None: ...  # Conflict when it exists

    async def replace(self, data: dict[str, str], resource_version: str) -> None: ...  # Conflict when stale


class WebhookConfigurations(Protocol):
    """The ValidatingWebhookConfiguration, as the keeper needs it."""

    async def read(self) -> dict[str, Any] | None: ...

    async def patch(self, operations: list[dict[str, Any]]) -> None: ...


async def converge_secret(
    store: SecretStore, hosts: Sequence[str], clock: Clock, trusted_now: bytes = b""
) -> tuple[WebhookTls, frozenset[Reason]]:
    """The Secret's certificate once nothing is due on it; what this call wrote it for (empty: nothing)."""
    for _ in range(ATTEMPTS):
        stored = await store.read()
        current = read_tls(stored.data) if stored is not None else None
        renewal = plan(current, hosts, clock(), trusted_now)
        if not renewal.reasons:
            return renewal.tls, renewal.reasons
        try:
            if stored is None:
                await store.create(renewal.tls.secret_data())
            else:
                await store.replace(renewal.tls.secret_data(), stored.resource_version)
        except Conflict:
            continue  # another replica wrote first: its certificate is as good as ours
        return renewal.tls, renewal.reasons
    raise Conflict(f"the certificate Secret changed under each of {ATTEMPTS} attempts to renew it")


def bundle_patch(configuration: dict[str, Any], bundle: str) -> list[dict[str, Any]]:
    """JSON patch operations that set every webhook's caBundle to `bundle`; none when all carry it already."""
    operations: list[dict[str, Any]] = []
    for index, webhook in enumerate(configuration.get("webhooks") or []):
        if (webhook.get("clientConfig") or {}).get("caBundle") == bundle:
            continue
        # The test guards against a webhook list reordered since it was read: the patch then fails whole.
        operations.append({"op": "test", "path": f"/webhooks/{index}/name", "value": webhook.get("name")})
        operations.append({"op": "add", "path": f"/webhooks/{index}/clientConfig/caBundle", "value": bundle})
    return operations


def write_served(directory: Path, pair: KeyPair) -> bool:
    """tls.crt and tls.key in `directory`, replaced together; False when they already hold `pair`.

    Each version goes into its own subdirectory and `..data` is switched to it with one rename,
    so no reader ever sees a certificate with another version's key (a mismatch would stop the
    server when it reloads).
    """
    if _read(directory / CERT) == pair.cert and _read(directory / KEY) == pair.key:
        return False
    directory.mkdir(parents=True, exist_ok=True)
    version = directory / f"..{secrets.token_hex(8)}"
    version.mkdir(mode=0o700)
    (version / CERT).write_bytes(pair.cert)
    key = version / KEY
    key.touch(mode=0o600)
    key.write_bytes(pair.key)
    link = directory / "..data_tmp"
    link.unlink(missing_ok=True)
    link.symlink_to(version.name)
    link.replace(directory / "..data")
    for name in (CERT, KEY):
        served = directory / name
        if not served.is_symlink():
            served.unlink(missing_ok=True)
            served.symlink_to(Path("..data") / name)
    for old in directory.glob("..*"):
        if old.is_dir() and not old.is_symlink() and old.name != version.name:
            shutil.rmtree(old, ignore_errors=True)
    return True


def _read(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except OSError:
        return None


class CertificateKeeper:
    """One replica's keeper of the webhook certificate (module docstring)."""

    def __init__(
        self,
        secret: SecretStore,
        configuration: WebhookConfigurations,
        directory: Path,
        hosts: Sequence[str],
        clock: Clock = utc_now,
    ) -> None:
        self._secret = secret
        self._configuration = configuration
        self.directory = directory
        self._hosts = list(hosts)
        self._clock = clock
        self._lock = asyncio.Lock()  # start-up, the timer and configuration events may overlap

    @property
    def certfile(self) -> Path:
        return self.directory / CERT

    @property
    def keyfile(self) -> Path:
        return self.directory / KEY

    async def ensure(self) -> None:
        async with self._lock:
            configuration = await self._configuration.read()
            trusted = _bundle_of(configuration)
            tls, reasons = await converge_secret(self._secret, self._hosts, self._clock, trusted)
            if reasons:
                logger.info("webhook certificate Secret written: %s", ", ".join(sorted(reasons)))
            bundle = encoded_bundle(tls)
            operations = bundle_patch(configuration, bundle) if configuration is not None else []
            if operations:
                await self._configuration.patch(operations)
                logger.info("caBundle of %d webhook(s) set to the certificate Secret's bundle", len(operations) // 2)
            if write_served(self.directory, tls.serving):
                logger.info("serving the webhook certificate valid until %s", _not_after(tls.serving))

    async def run(self, interval: float) -> None:
        """`ensure` every `interval` seconds until cancelled; a failed pass is logged and retried next time."""
        while True:
            await asyncio.sleep(interval)
            try:
                await self.ensure()
            except (KubeError, Conflict, OSError) as error:
                logger.warning("keeping the webhook certificate failed, retrying in %.0f s: %s", interval, error)
            except Exception:  # a bug must not end the loop: the certificate would silently expire
                logger.exception("keeping the webhook certificate failed unexpectedly, retrying in %.0f s", interval)


def _bundle_of(configuration: dict[str, Any] | None) -> bytes:
    """The CAs the webhook configuration trusts now (the first webhook's; all carry the same once kept)."""
    for webhook in (configuration or {}).get("webhooks") or []:
        encoded = (webhook.get("clientConfig") or {}).get("caBundle")
        if encoded:
            try:
                return base64.b64decode(encoded, validate=True)
            except ValueError:
                return b""
    return b""


def _not_after(pair: KeyPair) -> str:
    return x509.load_pem_x509_certificate(pair.cert).not_valid_after_utc.isoformat()


# --- the Kubernetes side ---------------------------------------------------------------------------


class KubeSecretStore:
    """SecretStore on the API server; RBAC: get/update of this one Secret by name, create (not limitable)."""

    def __init__(self, kube: ClientKubeApi, namespace: str, name: str) -> None:
        self._kube, self._namespace, self._name = kube, namespace, name

    @property
    def _collection(self) -> str:
        return f"/api/v1/namespaces/{self._namespace}/secrets"

    async def read(self) -> StoredSecret | None:
        try:
            found = await asyncio.to_thread(self._kube.request, "GET", f"{self._collection}/{self._name}")
        except KubeError as error:
            if error.status == 404:
                return None
            raise
        return StoredSecret(dict(found.get("data") or {}), str(found["metadata"]["resourceVersion"]))

    async def create(self, data: dict[str, str]) -> None:
        await self._write("POST", self._collection, self._manifest(data, None))

    async def replace(self, data: dict[str, str], resource_version: str) -> None:
        await self._write("PUT", f"{self._collection}/{self._name}", self._manifest(data, resource_version))

    async def _write(self, method: str, path: str, body: dict[str, Any]) -> None:
        try:
            await asyncio.to_thread(self._kube.request, method, path, body=body)
        except KubeError as error:
            if error.status == 409:
                raise Conflict(error.message) from error
            raise

    def _manifest(self, data: dict[str, str], resource_version: str | None) -> dict[str, Any]:
        metadata: dict[str, Any] = {
            "name": self._name,
            "namespace": self._namespace,
            "labels": {"app.kubernetes.io/managed-by": "mlworkload", "app.kubernetes.io/component": "webhook"},
        }
        if resource_version is not None:
            metadata["resourceVersion"] = resource_version
        # kubernetes.io/tls: tools that show certificates (kubectl, Lens, cert-manager's cmctl) recognise it.
        return {"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls", "metadata": metadata, "data": data}


class KubeWebhookConfigurations:
    """WebhookConfigurations on the API server; RBAC: get/patch of this one object by name."""

    def __init__(self, kube: ClientKubeApi, name: str) -> None:
        self._kube, self.name = kube, name

    async def read(self) -> dict[str, Any] | None:
        try:
            return await asyncio.to_thread(self._kube.request, "GET", f"{WEBHOOK_CONFIGURATIONS}/{self.name}")
        except KubeError as error:
            if error.status == 404:  # not applied yet (Helm applies it after the Deployments): nothing to patch
                return None
            raise

    async def patch(self, operations: list[dict[str, Any]]) -> None:
        await asyncio.to_thread(
            self._kube.request, "PATCH", f"{WEBHOOK_CONFIGURATIONS}/{self.name}", body=operations,
            content_type="application/json-patch+json",
        )  # fmt: skip


def served_directory(configured: str | None) -> Path:
    """Where the served files go: the configured directory, else a private temporary one."""
    if configured:
        return Path(configured)
    return Path(tempfile.mkdtemp(prefix="mlworkload-webhook-"))
