"""``bulwark certs init`` and ``bulwark certs issue``: a federation's TLS certificates.

A three-hospital mutual-TLS deployment needs one CA and four certificates::

    bulwark certs init --out ca --ca-name "Example federation CA"
    bulwark certs issue --ca ca --name coordinator --san 127.0.0.1 --san localhost --out certs
    bulwark certs issue --ca ca --name hospital-0 --out certs      # and hospital-1, hospital-2

The coordinator serves ``certs/coordinator.pem`` with ``--tls-client-ca ca/ca.pem``; each
hospital dials with ``--tls-ca ca/ca.pem --tls-cert certs/hospital-0.pem --tls-key ...``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..errors import ConfigError
from ._common import fail

certs_app = typer.Typer(
    no_args_is_help=True,
    rich_markup_mode=None,
    help="Make a federation CA and the TLS certificates it issues (no openssl needed).",
)


@certs_app.command("init")
def init(
    out: Annotated[Path, typer.Option("--out", help="Folder for ca.pem and ca.key (0600).")],
    ca_name: Annotated[str, typer.Option("--ca-name", help="The CA's common name.")],
    days: Annotated[int, typer.Option(help="Validity of the CA certificate in days.")] = 3650,
) -> None:
    """Create a federation CA: a self-signed ECDSA P-256 certificate and its key."""
    from ..certs import CA_KEY, create_ca

    try:
        cert = create_ca(out, name=ca_name, days=days)
    except ConfigError as exc:
        raise fail(str(exc)) from None
    typer.echo(f"CA {ca_name!r}: certificate {cert}, key {out / CA_KEY} (keep the key offline)")


@certs_app.command("issue")
def issue(
    ca: Annotated[Path, typer.Option("--ca", help="The CA folder (from `bulwark certs init`).")],
    name: Annotated[str, typer.Option("--name", help="The party's name (common name, file stem).")],
    out: Annotated[Path, typer.Option("--out", help="Folder for NAME.pem and NAME.key (0600).")],
    san: Annotated[
        list[str] | None,
        typer.Option(
            "--san", help="A host it is valid for (IP or DNS name); repeat. Default: --name."
        ),
    ] = None,
    days: Annotated[int, typer.Option(help="Validity in days.")] = 365,
) -> None:
    """Issue a certificate (TLS server and client) for one party of the federation."""
    from ..certs import issue_certificate

    try:
        files = issue_certificate(ca, name=name, out=out, sans=tuple(san or ()), days=days)
    except ConfigError as exc:
        raise fail(str(exc)) from None
    typer.echo(f"{name}: certificate {files.cert}, key {files.key}")
