"""What the webhook's certificate Secret should hold, decided from what it holds and the time: no I/O.

The Secret carries a CA and a serving certificate it signed, for the webhook Service's DNS names:

  ca.crt   the CA bundle: the current CA first, then older CAs that have not expired yet
  ca.key   the current CA's key
  tls.crt  the serving certificate, signed by the current CA
  tls.key  its key

Renewal happens when less than a third of a certificate's validity is left (cert-manager's default
for `renewBefore`), so a pod that misses several checks still renews long before expiry. A CA due
for renewal is replaced by a new one, and the old CA stays in the bundle until it expires: a replica
still serving a certificate from the old CA, or an API server that has not seen the new bundle yet,
is still trusted. Keys are random, so "pure" means: no clock, no network, no files.
"""

import base64
import binascii
import datetime
import ipaddress
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_VALIDITY = datetime.timedelta(days=3650)
SERVING_VALIDITY = datetime.timedelta(days=365)
RENEW_WHEN_LEFT = 1 / 3  # of a certificate's whole validity
# Certificates start a little in the past: an API server whose clock is behind ours still accepts them.
BACKDATE = datetime.timedelta(minutes=5)

BUNDLE, CA_KEY, CERT, KEY = "ca.crt", "ca.key", "tls.crt", "tls.key"


class Reason(StrEnum):
    """Why the Secret is rewritten (logged, and what the tests assert on)."""

    MISSING = "missing"  # no Secret, or one that cannot be read: a new CA
    CA_RENEWAL = "ca-renewal"  # the CA has less than a third of its validity left
    SERVING_RENEWAL = "serving-renewal"  # the serving certificate has less than a third left
    HOSTS = "hosts"  # the serving certificate does not name exactly the Service's DNS names
    ISSUER = "issuer"  # the serving certificate was not signed by the current CA
    EXPIRED_CA = "expired-ca"  # the bundle carries a CA that has expired


@dataclass(frozen=True)
class KeyPair:
    """One certificate and its private key, PEM."""

    cert: bytes
    key: bytes


@dataclass(frozen=True)
class WebhookTls:
    """What the Secret holds: the current CA, the older CAs still trusted, and the serving certificate."""

    ca: KeyPair
    previous_cas: tuple[bytes, ...]  # PEM certificates, newest first
    serving: KeyPair

    @property
    def bundle(self) -> bytes:
        """The caBundle for the ValidatingWebhookConfiguration: every CA a serving certificate may come from."""
        return b"".join((self.ca.cert, *self.previous_cas))

    def secret_data(self) -> dict[str, str]:
        """The Secret's `data` (base64, as the API wants it)."""
        raw = {BUNDLE: self.bundle, CA_KEY: self.ca.key, CERT: self.serving.cert, KEY: self.serving.key}
        return {name: base64.b64encode(value).decode("ascii") for name, value in sorted(raw.items())}


@dataclass(frozen=True)
class Renewal:
    """The outcome of `plan`: what the Secret should hold, and why it changed (empty: keep it as it is)."""

    tls: WebhookTls
    reasons: frozenset[Reason]


def read_tls(data: Mapping[str, str] | None) -> WebhookTls | None:
    """The Secret's `data` as WebhookTls; None when anything is missing or unreadable (a new CA is made then)."""
    if not data:
        return None
    try:
        raw = {name: base64.b64decode(data[name], validate=True) for name in (BUNDLE, CA_KEY, CERT, KEY)}
        cas = x509.load_pem_x509_certificates(raw[BUNDLE])
        ca_key = serialization.load_pem_private_key(raw[CA_KEY], password=None)
        serving = x509.load_pem_x509_certificate(raw[CERT])
        serving_key = serialization.load_pem_private_key(raw[KEY], password=None)
    except (KeyError, ValueError, binascii.Error):
        return None
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey) or not isinstance(serving_key, ec.EllipticCurvePrivateKey):
        return None
    current = next((ca for ca in cas if ca.public_key() == ca_key.public_key()), None)
    if current is None or serving.public_key() != serving_key.public_key():
        return None  # a key that belongs to no certificate: the Secret was edited by hand, start again
    previous = tuple(_pem(ca) for ca in cas if ca is not current)
    return WebhookTls(KeyPair(_pem(current), raw[CA_KEY]), previous, KeyPair(raw[CERT], raw[KEY]))


def due(tls: WebhookTls | None, hosts: Sequence[str], now: datetime.datetime) -> frozenset[Reason]:
    """Every reason to rewrite the Secret now; empty when it may stay as it is."""
    if tls is None:
        return frozenset({Reason.MISSING})
    reasons: set[Reason] = set()
    ca = x509.load_pem_x509_certificate(tls.ca.cert)
    serving = x509.load_pem_x509_certificate(tls.serving.cert)
    if _renewal_due(ca, now):
        reasons.add(Reason.CA_RENEWAL)
    if _renewal_due(serving, now):
        reasons.add(Reason.SERVING_RENEWAL)
    if sorted(_dns_names(serving)) != sorted(hosts):
        reasons.add(Reason.HOSTS)
    if not _signed_by(serving, ca):
        reasons.add(Reason.ISSUER)
    if any(x509.load_pem_x509_certificate(pem).not_valid_after_utc <= now for pem in tls.previous_cas):
        reasons.add(Reason.EXPIRED_CA)
    return frozenset(reasons)


def plan(tls: WebhookTls | None, hosts: Sequence[str], now: datetime.datetime, trusted_now: bytes = b"") -> Renewal:
    """What the Secret should hold at `now`: `tls` itself when nothing is due, else a renewed copy.

    `trusted_now`: the bundle the webhook configuration carries today. When a new CA has to be made
    from nothing (the Secret was deleted), the CAs in it that have not expired are kept in the new
    bundle, so replicas still serving a certificate from them are not cut off before they catch up.
    """
    reasons = due(tls, hosts, now)
    if not reasons:
        assert tls is not None  # nothing is due only for an existing Secret
        return Renewal(tls, reasons)
    if tls is None:
        ca = issue_ca(now)
        previous = _unexpired(_certificates(trusted_now), now, exclude=ca.cert)
    elif Reason.CA_RENEWAL in reasons:
        ca = issue_ca(now)
        previous = _unexpired((tls.ca.cert, *tls.previous_cas), now, exclude=ca.cert)
    else:
        ca = tls.ca
        previous = _unexpired(tls.previous_cas, now, exclude=ca.cert)
    if tls is not None and ca is tls.ca and not reasons & {Reason.SERVING_RENEWAL, Reason.HOSTS, Reason.ISSUER}:
        serving = tls.serving  # only an expired CA leaves the bundle
    else:
        serving = issue_serving(ca, hosts, now)
    return Renewal(WebhookTls(ca, previous, serving), reasons)


def issue_ca(now: datetime.datetime, validity: datetime.timedelta = CA_VALIDITY) -> KeyPair:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"mlworkload-webhook-ca-{now:%Y%m%d%H%M%S}")])
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + validity)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_usage(cert_sign=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return KeyPair(_pem(certificate), _key_pem(key))


def issue_serving(
    ca: KeyPair, hosts: Sequence[str], now: datetime.datetime, validity: datetime.timedelta = SERVING_VALIDITY
) -> KeyPair:
    """A serving certificate for `hosts` (DNS names), never outliving the CA that signs it."""
    ca_cert = x509.load_pem_x509_certificate(ca.cert)
    ca_key = serialization.load_pem_private_key(ca.key, password=None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)  # read_tls and issue_ca make only these
    key = ec.generate_private_key(ec.SECP256R1())
    certificate = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(min(now + validity, ca_cert.not_valid_after_utc))
        .add_extension(x509.SubjectAlternativeName([_alt_name(host) for host in hosts]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_usage(cert_sign=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return KeyPair(_pem(certificate), _key_pem(key))


def _alt_name(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


def write_self_signed(directory: Path, hosts: Sequence[str]) -> tuple[Path, Path]:
    """A throwaway CA and a serving certificate for `hosts` (DNS names or IPs) in `directory`, for a webhook whose
    caller trusts it by other means (a laptop, a test): tls.crt, tls.key and the CA as ca.crt."""
    now = datetime.datetime.now(datetime.UTC)
    ca = issue_ca(now)
    serving = issue_serving(ca, hosts, now)
    directory.mkdir(parents=True, exist_ok=True)
    certfile, keyfile = directory / CERT, directory / KEY
    certfile.write_bytes(serving.cert)
    keyfile.write_bytes(serving.key)
    keyfile.chmod(0o600)
    (directory / BUNDLE).write_bytes(ca.cert)
    return certfile, keyfile


def service_hosts(service: str, namespace: str) -> list[str]:
    """The names the API server may use for the webhook Service (it calls `<service>.<namespace>.svc`)."""
    return [f"{service}.{namespace}.svc", f"{service}.{namespace}.svc.cluster.local"]


def encoded_bundle(tls: WebhookTls) -> str:
    """The caBundle as the ValidatingWebhookConfiguration stores it (base64 of the PEM bundle)."""
    return base64.b64encode(tls.bundle).decode("ascii")


# --- helpers ----------------------------------------------------------------------------------------


def _renewal_due(certificate: x509.Certificate, now: datetime.datetime) -> bool:
    lifetime = certificate.not_valid_after_utc - certificate.not_valid_before_utc
    return certificate.not_valid_after_utc - now < lifetime * RENEW_WHEN_LEFT


def _dns_names(certificate: x509.Certificate) -> list[str]:
    try:
        names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return list(names.get_values_for_type(x509.DNSName))


def _signed_by(certificate: x509.Certificate, ca: x509.Certificate) -> bool:
    try:
        certificate.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def _certificates(bundle: bytes) -> tuple[bytes, ...]:
    """The CA certificates of a PEM bundle; none when it is empty or unreadable (someone reset it)."""
    try:
        return tuple(_pem(ca) for ca in x509.load_pem_x509_certificates(bundle))
    except ValueError:
        return ()


def _unexpired(cas: Sequence[bytes], now: datetime.datetime, exclude: bytes) -> tuple[bytes, ...]:
    kept: list[bytes] = []
    for pem in cas:
        certificate = x509.load_pem_x509_certificate(pem)
        is_ca = _is_ca(certificate)
        if pem != exclude and pem not in kept and is_ca and certificate.not_valid_after_utc > now:
            kept.append(pem)
    return tuple(kept)


def _is_ca(certificate: x509.Certificate) -> bool:
    try:
        return certificate.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        return False


def _usage(*, cert_sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=not cert_sign, content_commitment=False, key_encipherment=False, data_encipherment=False,
        key_agreement=False, key_cert_sign=cert_sign, crl_sign=cert_sign, encipher_only=False, decipher_only=False,
    )  # fmt: skip


def _pem(certificate: x509.Certificate) -> bytes:
    return certificate.public_bytes(serialization.Encoding.PEM)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
