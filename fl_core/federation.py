"""The federation roster: who may take part, in which role, under which key, signed by an authority.

A federation authority holds an offline Ed25519 key. It signs the roster, a list of members (name,
role ``owner`` / ``coordinator`` / ``keyholder``, raw Ed25519 identity public key, and optionally
the SHA-256 fingerprint of the member's TLS certificate). Every party pins the authority's public
key when it enrols, and loads the roster only if the signature verifies against that pinned key:
a coordinator cannot add members, change a key, or turn an owner into a key holder.

What the roster is used for:

- **Join by proof of possession** (:func:`join_message`): a client signs a fresh challenge from the
  coordinator, bound to the job's hash, its name and role; a coordinator with a roster accepts only
  the member's roster key (and, with mutual TLS, only the member's certificate).
- **The coordinator proves itself too** (:func:`coordinator_message`): it signs the same challenge
  with its roster key, and a client with a roster refuses a coordinator that is not on it.
- **SecAgg peers** are pinned to the roster's owner keys, so a coordinator cannot invent peers.

The roster file is JSON: ``{"roster": {...canonical body...}, "signature": "<hex>"}``; the body's
canonical form (sorted keys, no spaces, members sorted by name) is what is signed.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
    load_pem_private_key,
    load_pem_public_key,
)

from .errors import ConfigError, PolicyRefused

ROLES = ("owner", "coordinator", "keyholder")
ROSTER_DOMAIN = b"bulwark-roster-v1\x00"
JOIN_DOMAIN = b"bulwark-join-v1\x00"
COORDINATOR_DOMAIN = b"bulwark-coordinator-v1\x00"
MAX_NAME = 128


@dataclass(frozen=True, slots=True)
class Member:
    """One roster entry."""

    name: str
    role: str
    key: bytes
    """Raw Ed25519 identity public key (32 bytes)."""
    cert_sha256: str = ""
    """SHA-256 (hex) of the member's TLS certificate (DER), when it uses mutual TLS."""

    def __post_init__(self) -> None:
        if not self.name or len(self.name) > MAX_NAME or not self.name.isprintable():
            raise ConfigError(
                f"roster: member name {self.name!r} is empty, too long or unprintable"
            )
        if self.role not in ROLES:
            raise ConfigError(f"roster: {self.name!r} has role {self.role!r}; allowed: {ROLES}")
        if len(self.key) != 32:
            raise ConfigError(f"roster: {self.name!r} has a key of {len(self.key)} bytes, not 32")
        if self.cert_sha256 and (
            len(self.cert_sha256) != 64
            or any(c not in "0123456789abcdef" for c in self.cert_sha256)
        ):
            raise ConfigError(f"roster: {self.name!r} cert_sha256 is not 64 lowercase hex digits")

    def to_dict(self) -> dict[str, str]:
        """The entry as JSON-ready strings."""
        return {
            "name": self.name,
            "role": self.role,
            "key": self.key.hex(),
            "cert_sha256": self.cert_sha256,
        }


@dataclass(frozen=True, slots=True)
class Roster:
    """A verified roster (only :meth:`load`, :meth:`sign` and :meth:`parse` make one)."""

    federation: str
    members: tuple[Member, ...]
    authority: bytes
    """The raw authority public key the roster verified against."""

    def member(self, name: str, role: str | None = None) -> Member:
        """The entry of ``name`` (in ``role``, when given).

        Raises:
            PolicyRefused: ``name`` is not on the roster (in that role).
        """
        for m in self.members:
            if m.name == name and (role is None or m.role == role):
                return m
        what = f"as {role}" if role else "at all"
        raise PolicyRefused(
            f"{name[:MAX_NAME]!r} is not on federation {self.federation!r}'s roster {what}"
        )

    def keys(self, role: str) -> dict[str, bytes]:
        """The raw identity key of every member in ``role``, by name."""
        return {m.name: m.key for m in self.members if m.role == role}

    def body(self) -> dict[str, object]:
        """The signed content."""
        return {
            "federation": self.federation,
            "members": [m.to_dict() for m in sorted(self.members, key=lambda m: m.name)],
        }

    def fingerprint(self) -> str:
        """SHA-256 (hex) of the canonical body: names the exact roster in logs and reports."""
        return hashlib.sha256(canonical(self.body())).hexdigest()

    @staticmethod
    def sign(
        federation: str, members: Iterable[Member], authority: Ed25519PrivateKey
    ) -> tuple[Roster, bytes]:
        """A roster and its signature by ``authority``.

        Raises:
            ConfigError: a name appears twice.
        """
        entries = tuple(sorted(members, key=lambda m: m.name))
        names = [m.name for m in entries]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ConfigError(f"roster: duplicate member names {dupes}")
        roster = Roster(federation, entries, raw_public(authority.public_key()))
        return roster, authority.sign(ROSTER_DOMAIN + canonical(roster.body()))

    def to_json(self, signature: bytes) -> str:
        """The roster file's text."""
        return json.dumps({"roster": self.body(), "signature": signature.hex()}, indent=2) + "\n"

    @staticmethod
    def parse(text: str, authority: bytes, *, source: str = "roster") -> Roster:
        """Verify and read a roster file's text against the pinned ``authority`` key.

        Raises:
            ConfigError: naming ``source`` and what is wrong (bad JSON, bad signature, a bad
                entry, a duplicate name).
        """
        try:
            doc = json.loads(text)
            body, signature = doc["roster"], bytes.fromhex(doc["signature"])
            federation = str(body["federation"])
            raw = body["members"]
            members = [
                Member(
                    name=str(m["name"]),
                    role=str(m["role"]),
                    key=bytes.fromhex(m["key"]),
                    cert_sha256=str(m.get("cert_sha256", "")),
                )
                for m in raw
            ]
        except ConfigError as exc:
            raise ConfigError(f"{source}: {exc}") from None
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ConfigError(
                f"{source}: not a roster file ({type(exc).__name__}: {exc})"
            ) from None
        roster = Roster(federation, tuple(sorted(members, key=lambda m: m.name)), authority)
        names = [m.name for m in members]
        if len(set(names)) != len(names):
            raise ConfigError(f"{source}: duplicate member names")
        try:
            Ed25519PublicKey.from_public_bytes(authority).verify(
                signature, ROSTER_DOMAIN + canonical(roster.body())
            )
        except (InvalidSignature, ValueError):
            raise ConfigError(
                f"{source}: the signature does not verify against the pinned federation "
                f"authority key {authority.hex()[:16]}...: the roster was altered or signed by "
                "another authority"
            ) from None
        return roster

    @staticmethod
    def load(path: Path, authority: Path | bytes) -> Roster:
        """Load ``path`` and verify it against the pinned authority key (raw or a PEM file)."""
        pinned = authority if isinstance(authority, bytes) else load_public_pem(authority)
        try:
            text = path.read_text()
        except OSError as exc:
            raise ConfigError(f"cannot read roster {path}: {exc.strerror}") from None
        return Roster.parse(text, pinned, source=str(path))


# --- messages signed at join ------------------------------------------------------------------


def join_message(*, job_sha256: str, name: str, role: str, challenge: bytes) -> bytes:
    """What a client signs to prove it holds its identity key (bound to job, name and role)."""
    return JOIN_DOMAIN + canonical(
        {"job": job_sha256, "name": name, "role": role, "challenge": challenge.hex()}
    )


def coordinator_message(
    *, job_sha256: str, coordinator: str, client: str, challenge: bytes
) -> bytes:
    """What the coordinator signs with its roster key when it hands a client a challenge."""
    return COORDINATOR_DOMAIN + canonical(
        {
            "job": job_sha256,
            "coordinator": coordinator,
            "client": client,
            "challenge": challenge.hex(),
        }
    )


def verify(key: bytes, signature: bytes, message: bytes) -> bool:
    """Whether ``signature`` by raw Ed25519 ``key`` over ``message`` verifies."""
    try:
        Ed25519PublicKey.from_public_bytes(key).verify(signature, message)
    except (InvalidSignature, ValueError):
        return False
    return True


# --- files ----------------------------------------------------------------------------------


def canonical(obj: object) -> bytes:
    """Deterministic JSON bytes (sorted keys, no whitespace)."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def raw_public(key: Ed25519PublicKey) -> bytes:
    """The 32 raw bytes of an Ed25519 public key."""
    return key.public_bytes(Encoding.Raw, PublicFormat.Raw)


def load_public_pem(path: Path) -> bytes:
    """A raw Ed25519 public key from a PEM file.

    Raises:
        ConfigError: the file is missing or holds something else.
    """
    try:
        key = load_pem_public_key(path.read_bytes())
    except OSError as exc:
        raise ConfigError(f"cannot read public key {path}: {exc.strerror}") from None
    except ValueError as exc:
        raise ConfigError(f"{path} is not a PEM public key: {exc}") from None
    if not isinstance(key, Ed25519PublicKey):
        raise ConfigError(f"{path} does not hold an Ed25519 public key")
    return raw_public(key)


def write_public_pem(path: Path, key: Ed25519PublicKey) -> None:
    """Write ``key`` as a PEM SubjectPublicKeyInfo file."""
    path.write_bytes(key.public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo))


def write_private_pem(path: Path, key: Ed25519PrivateKey) -> None:
    """Write ``key`` unencrypted, mode 0600, refusing to overwrite."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()))


def load_private_pem(path: Path) -> Ed25519PrivateKey:
    """An Ed25519 private key from an unencrypted PEM file (never created here)."""
    try:
        key = load_pem_private_key(path.read_bytes(), password=None)
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from None
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{path} is not an unencrypted PEM private key: {exc}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigError(f"{path} does not hold an Ed25519 private key")
    return key


def cert_fingerprint(pem_or_der: bytes) -> str:
    """SHA-256 (hex) of a certificate's DER encoding (PEM input is converted)."""
    from cryptography import x509

    if pem_or_der.lstrip().startswith(b"-----BEGIN"):
        der = x509.load_pem_x509_certificate(pem_or_der).public_bytes(Encoding.DER)
    else:
        der = pem_or_der
    return hashlib.sha256(der).hexdigest()


@dataclass(frozen=True, slots=True)
class SimulatedFederation:
    """A federation made up for a simulation: every key on this machine."""

    roster: Roster
    signature: bytes
    keys: dict[str, Ed25519PrivateKey]

    def write(self, folder: Path) -> dict[str, Path]:
        """Write ``roster.json``, ``authority.pub.pem`` and ``<name>.pem`` for every member.

        Returns the paths by name, plus ``"roster"`` and ``"authority"``.
        """
        folder.mkdir(parents=True, exist_ok=True)
        paths = {"roster": folder / "roster.json", "authority": folder / "authority.pub.pem"}
        paths["roster"].write_text(self.roster.to_json(self.signature))
        paths["authority"].write_bytes(
            Ed25519PublicKey.from_public_bytes(self.roster.authority).public_bytes(
                Encoding.PEM, PublicFormat.SubjectPublicKeyInfo
            )
        )
        for name, key in self.keys.items():
            paths[name] = folder / f"{name}.pem"
            paths[name].unlink(missing_ok=True)
            write_private_pem(paths[name], key)
        return paths


def simulated_federation(
    names: Iterable[str], *, coordinator: str = "coordinator", keyholders: Iterable[str] = ()
) -> SimulatedFederation:
    """A roster for a simulation: fresh keys for every member, signed by a throwaway authority."""
    keys: dict[str, Ed25519PrivateKey] = {}
    members = []
    for name, role in [
        *((n, "owner") for n in names),
        (coordinator, "coordinator"),
        *((k, "keyholder") for k in keyholders),
    ]:
        keys[name] = Ed25519PrivateKey.generate()
        members.append(Member(name=name, role=role, key=raw_public(keys[name].public_key())))
    roster, signature = Roster.sign("simulation", members, Ed25519PrivateKey.generate())
    return SimulatedFederation(roster, signature, keys)


def simulated_roster(
    names: Iterable[str], *, coordinator: str = "coordinator", keyholders: Iterable[str] = ()
) -> tuple[Roster, dict[str, Ed25519PrivateKey]]:
    """:func:`simulated_federation`'s roster and keys."""
    fed = simulated_federation(names, coordinator=coordinator, keyholders=keyholders)
    return fed.roster, fed.keys


def pinned_peers(roster: Roster, index_names: Mapping[int, str]) -> dict[int, bytes]:
    """SecAgg index -> roster owner key for the cohort the coordinator names.

    Raises:
        PolicyRefused: a named peer is not an owner on the roster (an invented peer).
    """
    return {i: roster.member(name, "owner").key for i, name in index_names.items()}
