"""The signed roster: only the pinned authority's signature makes one; alterations are caught."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from fl_core.errors import ConfigError, PolicyRefused
from fl_core.federation import (
    Member,
    Roster,
    join_message,
    load_private_pem,
    load_public_pem,
    pinned_peers,
    raw_public,
    simulated_roster,
    verify,
    write_private_pem,
    write_public_pem,
)


def _member(name: str, role: str = "owner") -> tuple[Member, Ed25519PrivateKey]:
    key = Ed25519PrivateKey.generate()
    return Member(name=name, role=role, key=raw_public(key.public_key())), key


@pytest.fixture
def signed() -> tuple[Roster, bytes, Ed25519PrivateKey]:
    authority = Ed25519PrivateKey.generate()
    members = [
        _member("hospital-a")[0],
        _member("hospital-b")[0],
        _member("coord", "coordinator")[0],
    ]
    roster, signature = Roster.sign("clinics", members, authority)
    return roster, signature, authority


def test_a_signed_roster_reads_back(signed: tuple[Roster, bytes, Ed25519PrivateKey]) -> None:
    roster, signature, authority = signed
    back = Roster.parse(roster.to_json(signature), raw_public(authority.public_key()))
    assert back == roster
    assert back.fingerprint() == roster.fingerprint()
    assert set(back.keys("owner")) == {"hospital-a", "hospital-b"}
    assert back.member("coord", "coordinator").role == "coordinator"


@pytest.mark.parametrize(
    "tamper",
    [
        lambda d: d["roster"]["members"][0].update(role="keyholder"),
        lambda d: d["roster"]["members"][1].update(key="00" * 32),
        lambda d: d["roster"]["members"].append(
            {"name": "intruder", "role": "owner", "key": "11" * 32, "cert_sha256": ""}
        ),
        lambda d: d["roster"]["members"].pop(),
        lambda d: d["roster"].update(federation="other"),
        lambda d: d["roster"]["members"][0].update(cert_sha256="ab" * 32),
    ],
    ids=["role", "key", "added", "removed", "federation", "cert"],
)
def test_any_alteration_is_refused(
    signed: tuple[Roster, bytes, Ed25519PrivateKey], tamper: Callable[[Any], object]
) -> None:
    roster, signature, authority = signed
    doc = json.loads(roster.to_json(signature))
    tamper(doc)
    with pytest.raises(ConfigError, match="does not verify"):
        Roster.parse(json.dumps(doc), raw_public(authority.public_key()))


def test_another_authority_is_refused(signed: tuple[Roster, bytes, Ed25519PrivateKey]) -> None:
    roster, signature, _ = signed
    other = raw_public(Ed25519PrivateKey.generate().public_key())
    with pytest.raises(ConfigError, match="does not verify"):
        Roster.parse(roster.to_json(signature), other)


def test_not_a_roster_names_the_source() -> None:
    with pytest.raises(ConfigError, match="r.json: not a roster file"):
        Roster.parse("{}", b"\0" * 32, source="r.json")


def test_bad_entries_are_refused() -> None:
    key = b"\1" * 32
    with pytest.raises(ConfigError, match="role"):
        Member(name="a", role="admin", key=key)
    with pytest.raises(ConfigError, match="32"):
        Member(name="a", role="owner", key=b"short")
    with pytest.raises(ConfigError, match="empty"):
        Member(name="", role="owner", key=key)
    with pytest.raises(ConfigError, match="duplicate"):
        Roster.sign(
            "f", [Member(name="a", role="owner", key=key)] * 2, Ed25519PrivateKey.generate()
        )


def test_member_lookup_refuses_an_outsider_and_a_wrong_role(
    signed: tuple[Roster, bytes, Ed25519PrivateKey],
) -> None:
    roster, _, _ = signed
    with pytest.raises(PolicyRefused, match="'mallory' is not on"):
        roster.member("mallory")
    with pytest.raises(PolicyRefused, match="as keyholder"):
        roster.member("hospital-a", "keyholder")


def test_invented_peers_are_refused() -> None:
    roster, _ = simulated_roster(["a", "b", "c"])
    pins = pinned_peers(roster, {1: "a", 2: "b"})
    assert pins == {1: roster.member("a").key, 2: roster.member("b").key}
    with pytest.raises(PolicyRefused, match="'ghost'"):
        pinned_peers(roster, {1: "a", 2: "ghost"})
    with pytest.raises(PolicyRefused, match="as owner"):
        pinned_peers(roster, {1: "coordinator"})


def test_join_message_binds_job_name_role_and_challenge() -> None:
    key = Ed25519PrivateKey.generate()
    pub = raw_public(key.public_key())
    msg = join_message(job_sha256="j", name="a", role="owner", challenge=b"c" * 32)
    sig = key.sign(msg)
    assert verify(pub, sig, msg)
    for other in [
        join_message(job_sha256="k", name="a", role="owner", challenge=b"c" * 32),
        join_message(job_sha256="j", name="b", role="owner", challenge=b"c" * 32),
        join_message(job_sha256="j", name="a", role="keyholder", challenge=b"c" * 32),
        join_message(job_sha256="j", name="a", role="owner", challenge=b"d" * 32),
    ]:
        assert not verify(pub, sig, other)
    assert not verify(b"\0" * 31, sig, msg)


def test_key_files_round_trip(tmp_path: Path) -> None:
    key = Ed25519PrivateKey.generate()
    write_private_pem(tmp_path / "k.pem", key)
    write_public_pem(tmp_path / "k.pub.pem", key.public_key())
    assert (tmp_path / "k.pem").stat().st_mode & 0o777 == 0o600
    assert raw_public(load_private_pem(tmp_path / "k.pem").public_key()) == load_public_pem(
        tmp_path / "k.pub.pem"
    )
    with pytest.raises(FileExistsError):
        write_private_pem(tmp_path / "k.pem", key)
    with pytest.raises(ConfigError, match="cannot read public key"):
        load_public_pem(tmp_path / "typo.pem")
    with pytest.raises(ConfigError, match="not a PEM public key"):
        load_public_pem(tmp_path / "k.pem")
