"""``bulwark public-key``: the hex public key of an identity file."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ._common import fail, identity_key


def public_key(
    identity: Annotated[Path, typer.Argument(help="Ed25519 identity key (PEM).")],
    create: Annotated[
        bool,
        typer.Option("--create", help="Create the key (mode 0600) if the file does not exist yet."),
    ] = False,
) -> None:
    """Print the hex public key of an identity file (for enrolment and trust lists).

    A missing file is an error unless ``--create`` is given: a mistyped path must not
    silently become a new identity.
    """
    from ..he_job import raw_public_key

    if not create and not identity.exists():
        raise fail(f"{identity}: no such identity file (give --create to make a new key)")
    try:
        typer.echo(raw_public_key(identity_key(identity)).hex())
    except OSError as exc:
        raise fail(f"{identity}: {exc.strerror}") from None
