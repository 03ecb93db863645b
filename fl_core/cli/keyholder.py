"""``bulwark keyholder``: hold the HE secret key of a job (statistics or HE-aggregated training)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..errors import FlCoreError
from ._common import (
    channel_credentials,
    console,
    fail,
    identity_key,
    load,
    participate,
    roster,
    setup_logging,
)


def keyholder(
    coordinator: Annotated[str, typer.Option("--coordinator", help="host:port to dial.")],
    job_file: Annotated[Path, typer.Option("--job", help="The job file the key holder serves.")],
    enrolment: Annotated[
        Path,
        typer.Option(help='The owners\' identity keys: TOML lines owner-name = "hex public key".'),
    ],
    identity: Annotated[
        Path | None, typer.Option(help="Ed25519 identity key (PEM); created if missing.")
    ] = None,
    name: Annotated[str, typer.Option(help="The name it joins under.")] = "keyholder",
    min_contributors: Annotated[
        int | None, typer.Option(help="A k above the job's he.min_contributors.")
    ] = None,
    tls_ca: Annotated[Path | None, typer.Option(help="PEM CA of the coordinator (TLS).")] = None,
    federation: Annotated[
        Path | None,
        typer.Option(help="The federation's signed roster (JSON); needs --authority."),
    ] = None,
    authority: Annotated[
        Path | None,
        typer.Option(help="The pinned federation authority public key (PEM)."),
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Hold the HE secret key of a job; decrypt only aggregates of at least k enrolled owners."""
    from ..he_job import load_enrolment, raw_public_key
    from ..keyholder import KeyholderParticipant

    setup_logging(verbose, quiet)
    job = load(job_file)
    credentials = channel_credentials(coordinator, tls_ca)
    try:
        key = identity_key(identity)
        me = KeyholderParticipant(
            job=job,
            enrolment=load_enrolment(enrolment),
            name=name,
            identity_key=key,
            min_contributors=min_contributors,
            roster=roster(federation, authority),
        )
    except (FlCoreError, OSError) as exc:
        raise fail(str(exc)) from None
    if not quiet:
        console.print(
            f"key holder {raw_public_key(key).hex()} (k = {me.min_contributors}), context "
            f"{me.public_context().fingerprint[:16]}..."
        )
    line = participate(me, coordinator, job, credentials)
    if not quiet:
        typer.echo(f"{line}; {len(me.decryption_log)} decryption(s)")
