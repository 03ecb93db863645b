"""The federation CA and the certificates it issues (fl_core/certs.py)."""

from __future__ import annotations

import datetime as dt
import ipaddress
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID

from fl_core.certs import CA_CERT, CA_KEY, create_ca, issue_certificate
from fl_core.errors import ConfigError


def _load(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def test_an_issued_certificate_chains_to_the_ca_and_names_its_hosts(tmp_path: Path) -> None:
    create_ca(tmp_path / "ca", name="Test federation CA")

    files = issue_certificate(
        tmp_path / "ca", name="coordinator", out=tmp_path / "c", sans=("127.0.0.1", "localhost")
    )

    ca, cert = _load(tmp_path / "ca" / CA_CERT), _load(files.cert)
    cert.verify_directly_issued_by(ca)  # raises if the signature or issuer does not match
    assert isinstance(cert.public_key(), ec.EllipticCurvePublicKey)
    assert cert.public_key().curve.name == "secp256r1"  # type: ignore[union-attr]
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]
    assert san.get_values_for_type(x509.DNSName) == ["localhost"]
    usage = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert set(usage) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    constraints = ca.extensions.get_extension_for_class(x509.BasicConstraints).value
    assert constraints.ca and constraints.path_length == 0
    assert cert.not_valid_after_utc - cert.not_valid_before_utc == dt.timedelta(days=365)


def test_keys_are_private_and_nothing_is_overwritten(tmp_path: Path) -> None:
    create_ca(tmp_path / "ca", name="CA")
    files = issue_certificate(tmp_path / "ca", name="hospital-0", out=tmp_path / "c")

    assert stat.S_IMODE((tmp_path / "ca" / CA_KEY).stat().st_mode) == 0o600
    assert stat.S_IMODE(files.key.stat().st_mode) == 0o600
    before = (tmp_path / "ca" / CA_KEY).read_bytes()
    with pytest.raises(ConfigError, match="already exists"):
        create_ca(tmp_path / "ca", name="CA")
    with pytest.raises(ConfigError, match="already exists"):
        issue_certificate(tmp_path / "ca", name="hospital-0", out=tmp_path / "c")
    assert (tmp_path / "ca" / CA_KEY).read_bytes() == before


def test_default_san_is_the_name_and_validity_never_outlives_the_ca(tmp_path: Path) -> None:
    create_ca(tmp_path / "ca", name="CA", days=10)

    files = issue_certificate(tmp_path / "ca", name="hospital-1", out=tmp_path / "c", days=365)

    cert, ca = _load(files.cert), _load(tmp_path / "ca" / CA_CERT)
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["hospital-1"]
    assert cert.not_valid_after_utc == ca.not_valid_after_utc


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"sans": ("not a host!",)}, "--san"),
        ({"days": 0}, "--days 0"),
        ({"name": "../evil"}, "must not contain '/'"),
        ({"name": ""}, "1 to 64 printable"),
    ],
)
def test_bad_requests_are_named(tmp_path: Path, kwargs: dict[str, object], message: str) -> None:
    create_ca(tmp_path / "ca", name="CA")
    args: dict[str, object] = {"name": "h", "out": tmp_path / "c", **kwargs}

    with pytest.raises(ConfigError, match=message):
        issue_certificate(tmp_path / "ca", **args)  # type: ignore[arg-type]


def test_a_folder_without_a_ca_is_explained(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="bulwark certs init"):
        issue_certificate(tmp_path / "nothing", name="h", out=tmp_path / "c")
