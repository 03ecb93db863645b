"""``bulwark code-hash``: the ``[code]`` lines that pin an installed model package in a job."""

from __future__ import annotations

from typing import Annotated

import typer

from ..errors import ConfigError
from ._common import fail


def code_hash(
    distribution: Annotated[str, typer.Argument(help="The installed distribution's name.")],
) -> None:
    """Print the [code] table (name, version, SHA-256 of its files) that pins a distribution.

    Run it where the package is installed as the owners will install it; add ``model = ...``
    (and ``trainer = ...``) below the printed lines. Each owner's ``bulwark client`` recomputes
    the same values and refuses the job when they differ.
    """
    from ..app import code_identity

    try:
        identity = code_identity(distribution)
    except ConfigError as exc:
        raise fail(str(exc)) from None
    typer.echo(identity.toml(), nl=False)
