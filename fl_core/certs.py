"""A federation's TLS certificates without openssl: a CA, and certificates it issues.

``bulwark certs init`` makes a certificate authority (a self-signed CA certificate and its key);
``bulwark certs issue`` signs a certificate for one party (the coordinator, a hospital, the key
holder) that serves for both ends of mutual TLS. Everything is built with ``cryptography``'s
x509 builder; nothing here implements cryptography.

Choices, and why:

* Keys are ECDSA on P-256 with SHA-256 signatures. gRPC's TLS (BoringSSL) accepts Ed25519
  certificates only under TLS 1.3 and not on every build it links against; P-256 is what every
  TLS stack accepts (RFC 8446 section 9.1 makes ecdsa_secp256r1_sha256 mandatory to implement).
* The CA certificate is marked ``CA:TRUE, pathlen:0`` with ``keyCertSign``/``cRLSign`` only, so
  the certificates it issues cannot issue others; an issued certificate is ``CA:FALSE`` with
  ``digitalSignature`` and extended key usages ``serverAuth`` and ``clientAuth``, and names its
  hosts in subjectAltName (gRPC checks the name dialled against it).
* Every certificate has an expiry (``not_valid_after``); TLS refuses an expired one at the
  handshake. Serial numbers are 159 random bits from the OS CSPRNG (``x509.random_serial_number``).
* Private keys are written as unencrypted PKCS#8 PEM with mode 0600, and never over an existing
  file: a second ``init`` into the same folder would otherwise replace the federation's CA.

An institution with its own PKI does not need any of this: give its CA and certificates to
``--tls-ca``, ``--tls-cert``, ``--tls-key`` and ``--tls-client-ca`` directly.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    load_pem_private_key,
)
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from .errors import ConfigError

__all__ = [
    "CA_CERT",
    "CA_KEY",
    "DEFAULT_CA_DAYS",
    "DEFAULT_CERT_DAYS",
    "IssuedFiles",
    "create_ca",
    "issue_certificate",
]

CA_CERT = "ca.pem"
"""The CA certificate's file name in a CA folder (for ``--tls-ca`` and ``--tls-client-ca``)."""

CA_KEY = "ca.key"
"""The CA private key's file name in a CA folder (keep it offline)."""

DEFAULT_CA_DAYS = 3650
"""Validity of a CA certificate, in days."""

DEFAULT_CERT_DAYS = 365
"""Validity of an issued certificate, in days."""

_CLOCK_SKEW = dt.timedelta(minutes=5)
"""Certificates are valid from a little before now, so that a peer whose clock is behind by a
few minutes does not refuse a certificate issued a moment ago."""


@dataclass(frozen=True, slots=True)
class IssuedFiles:
    """Where a certificate and its key were written."""

    cert: Path
    key: Path


def _write_new(path: Path, data: bytes, *, mode: int) -> None:
    """Write ``data`` to a file that must not exist yet, created with ``mode``."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    except FileExistsError:
        raise ConfigError(f"{path} already exists; remove it or choose another folder") from None
    except OSError as exc:
        raise ConfigError(f"cannot write {path}: {exc.strerror}") from None
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())


def _check_days(days: int) -> None:
    if not 1 <= days <= 36500:
        raise ConfigError(f"--days {days}: expected a number of days in [1, 36500]")


def _check_name(name: str) -> None:
    if not name or len(name) > 64 or not name.isprintable():
        raise ConfigError(f"name {name!r}: expected 1 to 64 printable characters")


def create_ca(folder: Path, *, name: str, days: int = DEFAULT_CA_DAYS) -> Path:
    """Create a federation CA in ``folder``: ``ca.pem`` and ``ca.key`` (mode 0600).

    Args:
        folder: created if missing; must not hold a CA already.
        name: the CA's common name (for example ``"Bulwark federation CA"``).
        days: how long the CA certificate is valid.

    Returns:
        The path of the CA certificate.

    Raises:
        ConfigError: a bad name or validity, or ``folder`` already holds ``ca.pem`` or ``ca.key``.
    """
    _check_name(name)
    _check_days(days)
    for existing in (folder / CA_CERT, folder / CA_KEY):
        if existing.exists():
            raise ConfigError(f"{existing} already exists; a folder holds one CA")
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _CLOCK_SKEW)
        .not_valid_after(now + dt.timedelta(days=days))
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
        )  # fmt: skip
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    folder.mkdir(parents=True, exist_ok=True)
    _write_new(folder / CA_KEY, _key_pem(key), mode=0o600)
    _write_new(folder / CA_CERT, cert.public_bytes(Encoding.PEM), mode=0o644)
    return folder / CA_CERT


def _load_ca(folder: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    try:
        cert = x509.load_pem_x509_certificate((folder / CA_CERT).read_bytes())
        key = load_pem_private_key((folder / CA_KEY).read_bytes(), password=None)
    except OSError as exc:
        raise ConfigError(
            f"--ca {folder}: cannot read {exc.filename}: {exc.strerror} (make one with "
            "`bulwark certs init`)"
        ) from None
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"--ca {folder}: not a CA made by `bulwark certs init`: {exc}") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ConfigError(f"--ca {folder}: {CA_KEY} is not an ECDSA key")
    if cert.public_key() != key.public_key():
        raise ConfigError(f"--ca {folder}: {CA_KEY} does not belong to {CA_CERT}")
    return cert, key


def _san(value: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(value))
    except ValueError:
        pass
    label = value.removeprefix("*.")
    if not label or not all(part and part.replace("-", "").isalnum() for part in label.split(".")):
        raise ConfigError(f"--san {value!r}: expected an IP address or a DNS name")
    return x509.DNSName(value)


def issue_certificate(
    ca: Path,
    *,
    name: str,
    out: Path,
    sans: tuple[str, ...] = (),
    days: int = DEFAULT_CERT_DAYS,
    valid_from: dt.datetime | None = None,
) -> IssuedFiles:
    """Issue a certificate for ``name`` from the CA in ``ca``; write ``NAME.pem``, ``NAME.key``.

    The certificate serves both as a TLS server certificate (the coordinator) and as a client
    certificate (mutual TLS), and names ``sans`` (IP addresses or DNS names) in its
    subjectAltName; without ``sans`` it names ``name`` itself as a DNS name.

    Args:
        ca: a folder made by :func:`create_ca`.
        name: the party's name (its common name, and the files' stem).
        out: folder for the two files (created if missing).
        sans: the hosts the certificate is valid for.
        days: validity in days.
        valid_from: start of validity (default: a few minutes ago); tests use a past date to
            make an expired certificate.

    Raises:
        ConfigError: an unreadable CA, a bad name, SAN or validity, or existing files.
    """
    _check_name(name)
    _check_days(days)
    if "/" in name or name.startswith("."):
        raise ConfigError(f"name {name!r} must not contain '/' or start with '.' (a file stem)")
    ca_cert, ca_key = _load_ca(ca)
    names = [_san(v) for v in (sans or (name,))]
    start = valid_from or dt.datetime.now(dt.UTC) - _CLOCK_SKEW
    end = start + dt.timedelta(days=days)
    if end > ca_cert.not_valid_after_utc:
        end = ca_cert.not_valid_after_utc  # no certificate outlives its CA
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )  # fmt: skip
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    files = IssuedFiles(cert=out / f"{name}.pem", key=out / f"{name}.key")
    for existing in (files.cert, files.key):
        if existing.exists():
            raise ConfigError(f"{existing} already exists; remove it or choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    _write_new(files.key, _key_pem(key), mode=0o600)
    _write_new(files.cert, cert.public_bytes(Encoding.PEM), mode=0o644)
    return files
