"""``bulwark federation``: the federation authority's roster of members.

The authority key stays with whoever runs the federation (offline is best). Each member sends its
identity public key (``bulwark public-key identity.pem``) and, for mutual TLS, its certificate;
the authority adds it and signs the roster again. Every party pins ``authority.pub.pem`` and
loads the roster with ``--federation roster.json --authority authority.pub.pem``.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from ..errors import FlCoreError
from ._common import fail

if TYPE_CHECKING:
    from ..federation import Roster

federation_app = typer.Typer(
    help="The federation's signed roster: who takes part, in which role, under which key.",
    no_args_is_help=True,
)

AUTHORITY_KEY = "authority.pem"
AUTHORITY_PUB = "authority.pub.pem"
ROSTER = "roster.json"


@federation_app.command("init")
def federation_init(
    out: Annotated[Path, typer.Option("--out", help="Folder for the authority key and roster.")],
    name: Annotated[str, typer.Option("--name", help="The federation's name.")] = "federation",
) -> None:
    """Create an authority key (mode 0600), its public key and an empty signed roster."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from ..federation import Roster, write_private_pem, write_public_pem

    out.mkdir(parents=True, exist_ok=True)
    if (out / AUTHORITY_KEY).exists() or (out / ROSTER).exists():
        raise fail(f"{out} already holds a federation; refusing to overwrite it")
    key = Ed25519PrivateKey.generate()
    try:
        roster, signature = Roster.sign(name, [], key)
    except FlCoreError as exc:
        raise fail(str(exc)) from None
    write_private_pem(out / AUTHORITY_KEY, key)
    write_public_pem(out / AUTHORITY_PUB, key.public_key())
    (out / ROSTER).write_text(roster.to_json(signature))
    typer.echo(f"federation {name!r}: authority key {out / AUTHORITY_KEY} (keep it offline)")
    typer.echo(f"every party pins {out / AUTHORITY_PUB}; the roster is {out / ROSTER}")


def _member_key(key: str) -> bytes:
    """A raw Ed25519 public key from 64 hex digits or a PEM file (public or identity key)."""
    from ..federation import load_private_pem, load_public_pem, raw_public

    text = key.strip().lower()
    if len(text) == 64 and all(c in "0123456789abcdef" for c in text):
        return bytes.fromhex(text)
    path = Path(key)
    if not path.exists():
        raise fail(f"--key {key!r} is neither 64 hex digits nor an existing PEM file")
    try:
        return load_public_pem(path)
    except FlCoreError:
        try:
            return raw_public(load_private_pem(path).public_key())
        except FlCoreError as exc:
            raise fail(f"--key {key}: {exc}") from None


def _write_signed(path: Path, roster: Roster, signature: bytes) -> None:
    """Replace the roster file atomically: a reader sees the old or the new roster, never half."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(roster.to_json(signature))
    tmp.replace(path)


def _verified(roster: Path, authority: Path) -> Roster:
    """The roster verified against the pinned authority key, or one line and exit 2."""
    from ..federation import Roster

    try:
        return Roster.load(roster, authority)
    except FlCoreError as exc:
        raise fail(str(exc)) from None


@federation_app.command("add")
def federation_add(
    name: Annotated[str, typer.Argument(help="The member's name (its --name / client id).")],
    role: Annotated[str, typer.Option("--role", help="owner, coordinator or keyholder.")],
    key: Annotated[
        str,
        typer.Option("--key", help="Its identity public key: 64 hex digits or a PEM file."),
    ],
    authority: Annotated[Path, typer.Option("--authority", help="The authority folder.")],
    cert: Annotated[
        Path | None,
        typer.Option("--cert", help="Its TLS certificate (PEM), bound to the name under mTLS."),
    ] = None,
    replace: Annotated[
        bool, typer.Option("--replace", help="Replace an existing entry of that name.")
    ] = False,
) -> None:
    """Add (or replace) a member and sign the roster again."""
    from ..federation import Member, Roster, cert_fingerprint, load_private_pem

    roster_path = authority / ROSTER
    try:
        signer = load_private_pem(authority / AUTHORITY_KEY)
        from ..federation import raw_public

        roster = Roster.load(roster_path, raw_public(signer.public_key()))
        fingerprint = ""
        if cert is not None:
            try:
                fingerprint = cert_fingerprint(cert.read_bytes())
            except OSError as exc:
                raise fail(f"--cert {cert}: {exc.strerror}") from None
            except ValueError as exc:
                raise fail(f"--cert {cert} is not a PEM certificate: {exc}") from None
        member = Member(name=name, role=role, key=_member_key(key), cert_sha256=fingerprint)
        others = [m for m in roster.members if m.name != name]
        if len(others) != len(roster.members) and not replace:
            raise fail(f"{name!r} is on the roster already; give --replace to change its entry")
        updated, signature = Roster.sign(roster.federation, [*others, member], signer)
    except FlCoreError as exc:
        raise fail(str(exc)) from None
    _write_signed(roster_path, updated, signature)
    typer.echo(f"{name} added as {role}; roster {updated.fingerprint()[:16]} signed")


@federation_app.command("remove")
def federation_remove(
    name: Annotated[str, typer.Argument(help="The member to remove.")],
    authority: Annotated[Path, typer.Option("--authority", help="The authority folder.")],
) -> None:
    """Remove a member and sign the roster again."""
    from ..federation import Roster, load_private_pem, raw_public

    roster_path = authority / ROSTER
    try:
        signer = load_private_pem(authority / AUTHORITY_KEY)
        roster = Roster.load(roster_path, raw_public(signer.public_key()))
        roster.member(name)
        updated, signature = Roster.sign(
            roster.federation, [m for m in roster.members if m.name != name], signer
        )
    except FlCoreError as exc:
        raise fail(str(exc)) from None
    _write_signed(roster_path, updated, signature)
    typer.echo(f"{name} removed; roster {updated.fingerprint()[:16]} signed")


@federation_app.command("show")
def federation_show(
    roster: Annotated[Path, typer.Argument(help="The roster file.")],
    authority: Annotated[
        Path, typer.Option("--authority", help="The pinned authority public key (PEM).")
    ],
) -> None:
    """Verify the roster against the pinned authority key and list its members."""
    verified = _verified(roster, authority)
    typer.echo(
        f"federation {verified.federation!r}: {len(verified.members)} members, "
        f"roster {verified.fingerprint()[:16]} verified"
    )
    for m in verified.members:
        cert = f"  cert {m.cert_sha256[:16]}" if m.cert_sha256 else ""
        typer.echo(f"  {m.name:<24} {m.role:<12} key {m.key.hex()[:16]}{cert}")


@federation_app.command("verify")
def federation_verify(
    roster: Annotated[Path, typer.Argument(help="The roster file.")],
    authority: Annotated[
        Path, typer.Option("--authority", help="The pinned authority public key (PEM).")
    ],
) -> None:
    """Exit 0 when the roster verifies against the pinned key; else one line and exit 2."""
    verified = _verified(roster, authority)
    typer.echo(f"roster ok: {verified.federation!r}, {verified.fingerprint()}")
