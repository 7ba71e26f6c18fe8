"""The webhook certificate decisions (mlworkload.webhook.certificates) and the keeper's pure parts, on a clock
the tests move: fresh, due for renewal, CA rollover with both CAs trusted, expired CAs dropped, racing writers
converging on one certificate, the caBundle patch and the atomic swap of the served files."""

import asyncio
import base64
import copy
import datetime
import ssl
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jsonpatch
import pytest
from cryptography import x509
from cryptography.x509 import verification

from mlworkload.controller.kube import KubeError
from mlworkload.webhook.certificates import (
    CA_VALIDITY,
    SERVING_VALIDITY,
    KeyPair,
    Reason,
    WebhookTls,
    issue_ca,
    issue_serving,
    plan,
    read_tls,
    service_hosts,
)
from mlworkload.webhook.keeper import (
    CertificateKeeper,
    Conflict,
    StoredSecret,
    bundle_patch,
    converge_secret,
    write_served,
)
from tests.support.clock import ManualClock

HOSTS = service_hosts("mlworkload-webhook", "mlworkload-system")
DAY = 86_400.0


def at(clock: ManualClock) -> datetime.datetime:
    return datetime.datetime.fromtimestamp(clock(), datetime.UTC)


def clock_at(clock: ManualClock) -> Callable[[], datetime.datetime]:
    return lambda: at(clock)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(start=1_800_000_000.0)  # 2027-01-15


def verifies(bundle: bytes, serving: bytes, host: str, when: datetime.datetime) -> bool:
    """Whether a TLS client trusting `bundle` accepts `serving` for `host` at `when` (RFC 5280 path building)."""
    store = verification.Store(x509.load_pem_x509_certificates(bundle))
    verifier = verification.PolicyBuilder().store(store).time(when).build_server_verifier(x509.DNSName(host))
    try:
        verifier.verify(x509.load_pem_x509_certificate(serving), [])
    except verification.VerificationError:
        return False
    return True


def cert(pem: bytes) -> x509.Certificate:
    return x509.load_pem_x509_certificate(pem)


def test_a_fresh_secret_has_a_ca_and_a_serving_certificate_for_the_service_names(clock: ManualClock) -> None:
    renewal = plan(None, HOSTS, at(clock))
    assert renewal.reasons == {Reason.MISSING}
    tls = renewal.tls
    assert verifies(tls.bundle, tls.serving.cert, "mlworkload-webhook.mlworkload-system.svc", at(clock))
    assert verifies(tls.bundle, tls.serving.cert, "mlworkload-webhook.mlworkload-system.svc.cluster.local", at(clock))
    assert not verifies(tls.bundle, tls.serving.cert, "elsewhere.mlworkload-system.svc", at(clock))
    sans = cert(tls.serving.cert).extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == HOSTS
    assert cert(tls.ca.cert).not_valid_after_utc - at(clock) == CA_VALIDITY
    assert cert(tls.serving.cert).not_valid_after_utc - at(clock) == SERVING_VALIDITY
    assert tls.previous_cas == ()


def test_nothing_is_due_on_a_fresh_secret_and_the_secret_reads_back_as_written(clock: ManualClock) -> None:
    tls = plan(None, HOSTS, at(clock)).tls
    stored = read_tls(tls.secret_data())
    assert stored == tls
    kept = plan(stored, HOSTS, at(clock))
    assert kept.reasons == frozenset()
    assert kept.tls is stored


def test_the_serving_certificate_is_renewed_with_a_third_of_its_validity_left_by_the_same_ca(
    clock: ManualClock,
) -> None:
    tls = plan(None, HOSTS, at(clock)).tls
    clock.advance(SERVING_VALIDITY.total_seconds() * 2 / 3 - DAY)
    assert plan(tls, HOSTS, at(clock)).reasons == frozenset()
    clock.advance(2 * DAY)
    renewal = plan(tls, HOSTS, at(clock))
    assert renewal.reasons == {Reason.SERVING_RENEWAL}
    assert renewal.tls.ca == tls.ca
    assert renewal.tls.bundle == tls.bundle  # no caBundle change for a renewal under the same CA
    assert renewal.tls.serving != tls.serving
    assert cert(renewal.tls.serving.cert).not_valid_after_utc - at(clock) == SERVING_VALIDITY
    assert verifies(renewal.tls.bundle, renewal.tls.serving.cert, HOSTS[0], at(clock))


def test_a_ca_near_expiry_rolls_over_keeping_the_old_ca_in_the_bundle_until_it_expires(clock: ManualClock) -> None:
    tls = plan(None, HOSTS, at(clock)).tls
    clock.advance(CA_VALIDITY.total_seconds() * 2 / 3 + DAY)
    # Serving certificates were renewed along the way (a year each); this is the one served when the CA is due.
    served = issue_serving(tls.ca, HOSTS, at(clock) - datetime.timedelta(days=1))
    before = WebhookTls(tls.ca, (), served)
    renewal = plan(before, HOSTS, at(clock))
    assert Reason.CA_RENEWAL in renewal.reasons
    rolled = renewal.tls
    assert rolled.ca != tls.ca
    assert rolled.previous_cas == (tls.ca.cert,)
    assert x509.load_pem_x509_certificates(rolled.bundle) == [cert(rolled.ca.cert), cert(tls.ca.cert)]
    # Both the new serving certificate and a replica's old one verify against the new bundle.
    assert verifies(rolled.bundle, rolled.serving.cert, HOSTS[0], at(clock))
    assert verifies(rolled.bundle, served.cert, HOSTS[0], at(clock))
    # The old CA leaves the bundle once it has expired, and not before.
    clock.advance((cert(tls.ca.cert).not_valid_after_utc - at(clock)).total_seconds() - DAY)
    assert Reason.EXPIRED_CA not in plan(rolled, HOSTS, at(clock)).reasons
    clock.advance(2 * DAY)
    later = plan(rolled, HOSTS, at(clock))
    assert Reason.EXPIRED_CA in later.reasons
    assert later.tls.previous_cas == ()
    assert later.tls.ca == rolled.ca


def test_a_serving_certificate_never_outlives_its_ca(clock: ManualClock) -> None:
    ca = issue_ca(at(clock), validity=datetime.timedelta(days=100))
    serving = issue_serving(ca, HOSTS, at(clock))
    assert cert(serving.cert).not_valid_after_utc == cert(ca.cert).not_valid_after_utc


def test_other_names_or_another_issuer_mean_a_new_serving_certificate(clock: ManualClock) -> None:
    tls = plan(None, HOSTS, at(clock)).tls
    renamed = plan(tls, service_hosts("other-webhook", "ops"), at(clock))
    assert renamed.reasons == {Reason.HOSTS}
    assert verifies(renamed.tls.bundle, renamed.tls.serving.cert, "other-webhook.ops.svc", at(clock))
    stranger = issue_serving(issue_ca(at(clock)), HOSTS, at(clock))
    reissued = plan(WebhookTls(tls.ca, (), stranger), HOSTS, at(clock))
    assert reissued.reasons == {Reason.ISSUER}
    assert verifies(reissued.tls.bundle, reissued.tls.serving.cert, HOSTS[0], at(clock))


def test_an_unreadable_or_inconsistent_secret_reads_as_none(clock: ManualClock) -> None:
    tls = plan(None, HOSTS, at(clock)).tls
    data = tls.secret_data()
    assert read_tls(None) is None
    assert read_tls({}) is None
    assert read_tls({**data, "tls.crt": "not base64!"}) is None
    assert read_tls({key: value for key, value in data.items() if key != "ca.key"}) is None
    other = plan(None, HOSTS, at(clock)).tls
    assert read_tls({**data, "tls.key": other.secret_data()["tls.key"]}) is None  # a key of another certificate


def test_a_new_ca_made_from_nothing_keeps_the_cas_the_configuration_trusts_now(clock: ManualClock) -> None:
    """The Secret was deleted: replicas still serving from the CA in the caBundle are not cut off."""
    old = plan(None, HOSTS, at(clock)).tls
    clock.advance(DAY)
    remade = plan(None, HOSTS, at(clock), trusted_now=old.bundle + b"garbage")
    assert remade.tls.previous_cas == (old.ca.cert,)
    assert verifies(remade.tls.bundle, old.serving.cert, HOSTS[0], at(clock))
    assert plan(None, HOSTS, at(clock), trusted_now=b"not a bundle").tls.previous_cas == ()


class RacingSecretStore:
    """An API server's Secret semantics (409 on create of an existing one, on a stale resourceVersion), where
    the first `readers` reads all return before any write: every writer decides from the same state."""

    def __init__(self, readers: int) -> None:
        self.stored: StoredSecret | None = None
        self.writes = 0
        self._version = 0
        self.hold_reads(readers)

    def hold_reads(self, readers: int) -> None:
        """The next `readers` reads return together, once all of them have read."""
        self._waiting = readers
        self._all_read = asyncio.Event()

    async def read(self) -> StoredSecret | None:
        seen = self.stored
        if self._waiting:
            self._waiting -= 1
            if not self._waiting:
                self._all_read.set()
            await self._all_read.wait()
        return seen

    async def create(self, data: dict[str, str]) -> None:
        if self.stored is not None:
            raise Conflict("exists")
        self._commit(data)

    async def replace(self, data: dict[str, str], resource_version: str) -> None:
        if self.stored is None or self.stored.resource_version != resource_version:
            raise Conflict("stale")
        self._commit(data)

    def _commit(self, data: dict[str, str]) -> None:
        self._version += 1
        self.writes += 1
        self.stored = StoredSecret(dict(data), str(self._version))


def test_replicas_racing_to_create_the_secret_converge_on_one_certificate(clock: ManualClock) -> None:
    store = RacingSecretStore(readers=3)

    async def race() -> list[tuple[WebhookTls, frozenset[Reason]]]:
        return list(await asyncio.gather(*(converge_secret(store, HOSTS, clock_at(clock)) for _ in range(3))))

    results = asyncio.run(race())
    assert store.writes == 1
    assert store.stored is not None
    winner = read_tls(store.stored.data)
    assert [tls for tls, _ in results] == [winner] * 3
    assert sorted(len(reasons) for _, reasons in results) == [0, 0, 1]  # the losers wrote nothing


def test_replicas_racing_to_renew_converge_on_one_certificate(clock: ManualClock) -> None:
    store = RacingSecretStore(readers=0)
    asyncio.run(converge_secret(store, HOSTS, clock_at(clock)))
    clock.advance(SERVING_VALIDITY.total_seconds() * 0.7)
    store.hold_reads(2)  # both replicas see the same certificate due

    async def race() -> list[tuple[WebhookTls, frozenset[Reason]]]:
        return list(await asyncio.gather(*(converge_secret(store, HOSTS, clock_at(clock)) for _ in range(2))))

    results = asyncio.run(race())
    assert store.writes == 2  # the create, then one renewal
    assert store.stored is not None
    assert [tls for tls, _ in results] == [read_tls(store.stored.data)] * 2


def test_the_ca_bundle_patch_touches_only_the_webhooks_that_differ() -> None:
    configuration = {
        "webhooks": [
            {"name": "policy.mlworkload.io", "clientConfig": {"caBundle": "NEW"}},
            {"name": "policy-spec.mlworkload.io", "clientConfig": {"caBundle": "OLD"}},
            {"name": "third.mlworkload.io", "clientConfig": {"service": {"name": "x"}}},
        ]
    }
    assert bundle_patch(configuration, "NEW") == [
        {"op": "test", "path": "/webhooks/1/name", "value": "policy-spec.mlworkload.io"},
        {"op": "add", "path": "/webhooks/1/clientConfig/caBundle", "value": "NEW"},
        {"op": "test", "path": "/webhooks/2/name", "value": "third.mlworkload.io"},
        {"op": "add", "path": "/webhooks/2/clientConfig/caBundle", "value": "NEW"},
    ]
    assert bundle_patch({"webhooks": [{"name": "a", "clientConfig": {"caBundle": "NEW"}}]}, "NEW") == []


def test_served_files_are_swapped_together_and_rewritten_only_on_change(tmp_path: Path, clock: ManualClock) -> None:
    first = plan(None, HOSTS, at(clock)).tls
    second = plan(None, HOSTS, at(clock)).tls
    directory = tmp_path / "tls"
    assert write_served(directory, first.serving) is True
    assert write_served(directory, first.serving) is False
    assert write_served(directory, second.serving) is True
    assert ((directory / "tls.crt").read_bytes(), (directory / "tls.key").read_bytes()) == (
        second.serving.cert,
        second.serving.key,
    )
    assert (directory / "tls.crt").is_symlink()
    assert (directory / "tls.key").is_symlink()
    assert len([p for p in directory.iterdir() if p.is_dir() and not p.is_symlink()]) == 1  # old versions removed
    assert (directory / "..data" / "tls.key").stat().st_mode & 0o077 == 0
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(directory / "tls.crt", directory / "tls.key")  # a matching pair, as kopf loads it


def test_the_secret_data_is_base64_of_pem(clock: ManualClock) -> None:
    tls = plan(None, HOSTS, at(clock)).tls
    data = tls.secret_data()
    assert sorted(data) == ["ca.crt", "ca.key", "tls.crt", "tls.key"]
    assert base64.b64decode(data["ca.crt"]) == tls.bundle
    assert KeyPair(base64.b64decode(data["tls.crt"]), base64.b64decode(data["tls.key"])) == tls.serving


class FakeConfiguration:
    """A ValidatingWebhookConfiguration with two webhooks and no caBundle, as the chart renders it."""

    def __init__(self, refuse_patches: bool = False) -> None:
        self.body: dict[str, Any] = {"webhooks": [{"name": "a", "clientConfig": {}}, {"name": "b", "clientConfig": {}}]}
        self.patches = 0
        self.refuse_patches = refuse_patches

    async def read(self) -> dict[str, Any] | None:
        return copy.deepcopy(self.body)

    async def patch(self, operations: list[dict[str, Any]]) -> None:
        if self.refuse_patches:
            raise KubeError(403, "Forbidden", "cannot patch")
        self.patches += 1
        self.body = jsonpatch.apply_patch(self.body, operations)


def test_a_second_pass_writes_nothing(tmp_path: Path, clock: ManualClock) -> None:
    store, configuration = RacingSecretStore(readers=0), FakeConfiguration()
    keeper = CertificateKeeper(store, configuration, tmp_path / "tls", HOSTS, clock_at(clock))
    asyncio.run(keeper.ensure())
    assert (store.writes, configuration.patches) == (1, 1)
    assert store.stored is not None
    bundle = store.stored.data["ca.crt"]
    assert [hook["clientConfig"]["caBundle"] for hook in configuration.body["webhooks"]] == [bundle, bundle]
    served = (tmp_path / "tls" / "..data").resolve()
    asyncio.run(keeper.ensure())
    assert (store.writes, configuration.patches) == (1, 1)
    assert (tmp_path / "tls" / "..data").resolve() == served  # the files were not rewritten either


def test_a_certificate_is_not_served_before_the_configuration_trusts_its_ca(tmp_path: Path, clock: ManualClock) -> None:
    store, configuration = RacingSecretStore(readers=0), FakeConfiguration(refuse_patches=True)
    keeper = CertificateKeeper(store, configuration, tmp_path / "tls", HOSTS, clock_at(clock))
    with pytest.raises(KubeError):
        asyncio.run(keeper.ensure())
    assert store.writes == 1  # the Secret is kept, and the next pass retries the caBundle
    assert not (tmp_path / "tls" / "tls.crt").exists()
