"""``bulwark public-key``: the hex public key of an identity file."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ._common import fail, identity_key


def public_key(
    identity: Annotated[
        Path, typer.Argument(help="Ed25519 identity key (PEM); created if missing.")
    ],
) -> None:
    """Print the hex public key of an identity file (for enrolment and trust lists)."""
    from ..he_job import raw_public_key

    try:
        typer.echo(raw_public_key(identity_key(identity)).hex())
    except OSError as exc:
        raise fail(f"{identity}: {exc.strerror}") from None
