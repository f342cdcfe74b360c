"""X.509 material for the clinic's MQTT broker: one private CA and mutual TLS for everyone.

Why a private CA and client certificates rather than passwords: with Mosquitto's
``require_certificate true`` and ``use_identity_as_username true`` the certificate's common
name *is* the MQTT username, so the broker's ACL (written by ``ivgw broker-config``) ties
every topic a client may touch to a name only this CA can vouch for. A node's name is its
node id, the gateway is ``ivgw-gateway``, central systems are ``central-*``; node ids may
not start with a reserved prefix (``ivgw-``, ``central-``), so no node certificate can
ever carry the gateway's or a central system's rights, and the other way round.

Why ECDSA P-256 everywhere: the node's MicroPython TLS (mbedTLS) handles it, handshakes are
cheap on a small board, and OpenSSL (Mosquitto, paho) handles it too. Keys are written as
one PEM block each (SEC1 for keys) because the node decodes the first PEM block itself
(firmware/mqtt/_setup.py ``tls_context``).

Validity: the CA 10 years, leaf certificates 825 days; ``ivgw broker-config`` re-issues a
leaf that expires within 30 days. Private keys are written readable by their owner only.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = [
    "CA_CERT",
    "CA_KEY",
    "GATEWAY_CN",
    "RESERVED_PREFIXES",
    "SERVER_CN",
    "CertError",
    "CertificateAuthority",
    "Issued",
    "ca_exists",
    "common_name",
    "load_ca",
    "load_or_create_ca",
    "reserved",
    "write_private",
    "write_public",
]

CA_CERT = "ca.crt"
CA_KEY = "ca.key"
CA_CN = "ivgw clinic broker CA"
SERVER_CN = "ivgw-broker"
GATEWAY_CN = "ivgw-gateway"
RESERVED_PREFIXES = ("ivgw-", "central-")
CA_DAYS = 3650
LEAF_DAYS = 825
RENEW_BEFORE_DAYS = 30


class CertError(Exception):
    """Certificate material that is missing or unusable; one sentence naming the file."""


def reserved(name: str) -> bool:
    """Whether ``name`` is kept for the gateway, the broker or central systems."""
    low = name.lower()
    return any(low.startswith(p) for p in RESERVED_PREFIXES)


@dataclass(frozen=True)
class Issued:
    """A freshly issued certificate and its private key, both PEM (one block each)."""

    cert_pem: bytes
    key_pem: bytes


def _now(now: datetime.datetime | None) -> datetime.datetime:
    return now if now is not None else datetime.datetime.now(datetime.UTC)


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


@dataclass(frozen=True)
class CertificateAuthority:
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    @classmethod
    def create(cls, now: datetime.datetime | None = None) -> CertificateAuthority:
        t = _now(now)
        key = _new_key()
        ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
        cert = (
            x509.CertificateBuilder()
            .subject_name(_name(CA_CN))
            .issuer_name(_name(CA_CN))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(t - datetime.timedelta(minutes=5))
            .not_valid_after(t + datetime.timedelta(days=CA_DAYS))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=False,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(ski, critical=False)
            .sign(key, hashes.SHA256())
        )
        return cls(cert, key)

    @property
    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    def _leaf(
        self,
        cn: str,
        usage: x509.ObjectIdentifier,
        san: Sequence[x509.GeneralName],
        now: datetime.datetime | None,
        days: int,
    ) -> Issued:
        t = _now(now)
        key = _new_key()
        b = (
            x509.CertificateBuilder()
            .subject_name(_name(cn))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(t - datetime.timedelta(minutes=5))
            .not_valid_after(t + datetime.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=True,
                    key_cert_sign=False,
                    crl_sign=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()),
                critical=False,
            )
        )
        if san:
            b = b.add_extension(x509.SubjectAlternativeName(list(san)), critical=False)
        cert = b.sign(self.key, hashes.SHA256())
        return Issued(cert.public_bytes(serialization.Encoding.PEM), _key_pem(key))

    def issue_server(
        self, hosts: Sequence[str], now: datetime.datetime | None = None, days: int = LEAF_DAYS
    ) -> Issued:
        """The broker's certificate: every name in ``hosts`` (DNS names or IP addresses) plus
        ``ivgw-broker`` (the name nodes check when they reach the broker by IP address),
        ``localhost`` and 127.0.0.1 in the subject alternative names."""
        return self._leaf(SERVER_CN, ExtendedKeyUsageOID.SERVER_AUTH, _san(hosts), now, days)

    def issue_client(
        self, cn: str, now: datetime.datetime | None = None, days: int = LEAF_DAYS
    ) -> Issued:
        """A client certificate whose common name becomes the MQTT username."""
        return self._leaf(cn, ExtendedKeyUsageOID.CLIENT_AUTH, (), now, days)

    def still_good(
        self,
        cert_pem: bytes,
        cn: str,
        hosts: Sequence[str] | None = None,
        now: datetime.datetime | None = None,
    ) -> bool:
        """Whether an existing certificate can be kept: issued by this CA for ``cn`` (and
        exactly ``hosts``, for the server), and valid for more than 30 more days."""
        try:
            cert = x509.load_pem_x509_certificate(cert_pem)
            self.key.public_key().verify(
                cert.signature, cert.tbs_certificate_bytes, ec.ECDSA(hashes.SHA256())
            )
        except (ValueError, InvalidSignature, TypeError):
            return False
        if common_name(cert_pem) != cn:
            return False
        t = _now(now)
        if cert.not_valid_after_utc - t < datetime.timedelta(days=RENEW_BEFORE_DAYS):
            return False
        if hosts is not None:
            try:
                ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
            except x509.ExtensionNotFound:
                return False
            return set(ext.value) == set(_san(hosts))
        return True


def _san(hosts: Sequence[str]) -> list[x509.GeneralName]:
    names: list[x509.GeneralName] = []
    seen: set[str] = set()
    for h in [*hosts, SERVER_CN, "localhost", "127.0.0.1"]:
        if h in seen:
            continue
        seen.add(h)
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(h)))
        except ValueError:
            names.append(x509.DNSName(h))
    return names


def common_name(cert_pem: bytes) -> str:
    """The subject common name of a PEM certificate ("" if it has none)."""
    cert = x509.load_pem_x509_certificate(cert_pem)
    attrs = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(attrs[0].value) if attrs else ""


def ca_exists(directory: Path) -> bool:
    return (directory / CA_CERT).is_file() and (directory / CA_KEY).is_file()


def load_ca(directory: Path) -> CertificateAuthority:
    """The CA kept in ``directory`` (``ca.crt`` and ``ca.key``)."""
    cert_path, key_path = directory / CA_CERT, directory / CA_KEY
    if not ca_exists(directory):
        raise CertError("%s: no broker CA here (run `ivgw broker-config`)" % directory)
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    except ValueError:
        raise CertError("%s: not a PEM certificate" % cert_path) from None
    try:
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    except (ValueError, TypeError):
        raise CertError("%s: not an unencrypted PEM private key" % key_path) from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise CertError("%s: the CA key must be an EC P-256 key" % key_path)
    spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    if key.public_key().public_bytes(*spki) != cert.public_key().public_bytes(*spki):
        raise CertError("%s does not belong to %s" % (key_path, cert_path))
    return CertificateAuthority(cert, key)


def load_or_create_ca(
    directory: Path, now: datetime.datetime | None = None
) -> tuple[CertificateAuthority, bool]:
    """The CA in ``directory``, created (folder 0700, key 0600) if absent; bool: created."""
    if ca_exists(directory):
        return load_ca(directory), False
    if (directory / CA_CERT).exists() or (directory / CA_KEY).exists():
        raise CertError(
            "%s: only half of the CA is here (%s and %s go together)" % (directory, CA_CERT, CA_KEY)
        )
    ca = CertificateAuthority.create(now)
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    write_private(directory / CA_KEY, _key_pem(ca.key))
    write_public(directory / CA_CERT, ca.cert_pem)
    return ca, True


def write_private(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data``, readable by its owner only, never briefly wider."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, path)


def write_public(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
