"""``bulwark`` commands for HE jobs: stats, stats-coordinator, stats-owner, keyholder, public-key.

* ``bulwark stats JOB`` simulates a statistics job on this machine (in memory, or over loopback
  gRPC with the key holder and every owner as its own process) and writes ``statistics.json``;
* ``bulwark stats-coordinator JOB`` serves a statistics job to real participants;
* ``bulwark stats-owner`` takes part as a data owner, from a simulated share or a table file;
* ``bulwark keyholder`` takes part as the key holder of a statistics job or an HE-aggregated
  training job, with the owners' identity keys from ``--enrolment``;
* ``bulwark public-key`` prints the hex public key of an identity file (for enrolment files and
  ``trusted_keyholders``).

Errors a user can act on are one line naming what is wrong, exit status 2, no traceback.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from .cli_common import channel_credentials as _channel_credentials
from .cli_common import console
from .cli_common import fail as _fail
from .cli_common import load as _load
from .cli_common import participate as _participate
from .cli_common import server_credentials as _server_credentials
from .cli_common import setup_logging as _logging
from .errors import FlCoreError
from .identity import load_identity


def _identity(path: Path | None) -> Any:
    try:
        return load_identity(path)
    except FlCoreError as exc:
        raise _fail(str(exc)) from None


def _summary(statistics: dict[str, Any]) -> Table:
    table = Table(title=f"statistics of {statistics['count']} rows")
    for col in ("column", "mean", "std", "quantiles"):
        table.add_column(col, justify="right")
    columns = list(statistics.get("mean", {})) or list(statistics.get("quantiles", {}))
    for name in columns:
        mean, std = statistics["mean"].get(name), statistics["std"].get(name)
        quantiles = statistics["quantiles"].get(name, {})
        table.add_row(
            name,
            "" if mean is None else f"{mean:.6g}",
            "" if std is None else f"{std:.6g}",
            " ".join(f"{float(v):.4g}" for v in quantiles.values() if v is not None),
        )
    return table


def stats(
    job_file: Annotated[Path, typer.Argument(help="The statistics job file (TOML).")],
    transport: Annotated[
        str, typer.Option(help="inmemory: one process; grpc: key holder and owners as processes.")
    ] = "inmemory",
    output: Annotated[
        Path | None, typer.Option(help="Folder for statistics.json and state.db.")
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Only the final line.")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Simulate a statistics job: coordinator, key holder and the data set's owners."""
    from .stats import simulate_stats

    _logging(verbose, quiet)
    job = _load(job_file)
    try:
        outcome = simulate_stats(job, transport=transport, output=output, job_path=job_file)
    except FlCoreError as exc:
        raise _fail(str(exc)) from None
    for name, err in outcome.participant_errors.items():
        console.print(f"[yellow]{name}:[/] {err}", soft_wrap=True)
    if outcome.done.status != "completed" or outcome.statistics is None:
        raise _fail(f"job {job.job.name} failed: {outcome.done.reason}")
    if not quiet:
        console.print(_summary(outcome.statistics))
    result = outcome.statistics
    line = (
        f"job {job.job.name}: completed in {outcome.seconds:.1f} s, "
        f"{len(result['contributors'])} contributors, {result['count']} rows"
    )
    if output is not None:
        line += f"; results in {output / 'statistics.json'}"
    typer.echo(line)


def stats_coordinator(
    job_file: Annotated[Path, typer.Argument(help="The statistics job file (TOML).")],
    address: Annotated[str, typer.Option(help="host:port to listen on.")] = "127.0.0.1:50051",
    state: Annotated[Path, typer.Option(help="SQLite file with the job's state.")] = Path(
        "bulwark-state.db"
    ),
    output: Annotated[Path | None, typer.Option(help="Folder for statistics.json.")] = None,
    tls_cert: Annotated[Path | None, typer.Option(help="PEM certificate chain.")] = None,
    tls_key: Annotated[Path | None, typer.Option(help="PEM private key.")] = None,
    insecure: Annotated[
        bool, typer.Option("--insecure", help="Allow plaintext on a non-loopback address.")
    ] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Serve a statistics job to a key holder and data owners over gRPC."""
    import time

    from .coordinator.stats_job import StatsJob
    from .coordinator.store import Store
    from .stats import StatsOutcome, stats_coordinator, write_statistics
    from .transport.grpc_server import serve

    _logging(verbose, quiet)
    job = _load(job_file)
    if job.job.kind != "stats":
        raise _fail(f"{job_file}: job.kind must be 'stats' (use `bulwark coordinator` to train)")
    credentials = _server_credentials(
        address, tls_cert=tls_cert, tls_key=tls_key, insecure=insecure
    )
    runner = StatsJob()
    try:
        store = Store(state)
        coordinator = stats_coordinator(job, store, runner)
    except FlCoreError as exc:
        raise _fail(str(exc)) from None

    async def main() -> None:
        handle = await serve(
            coordinator, address=address, limits=job.limits, credentials=credentials
        )
        console.print(f"statistics coordinator for job {job.job.name} on port {handle.port}")
        started = time.perf_counter()
        try:
            done = await coordinator.run()
        finally:
            await handle.stop(grace=2.0)
        metrics = store.metrics(job.job.name)
        if output is not None:
            outcome = StatsOutcome(
                done=done,
                statistics=runner.result,
                metrics=metrics[0] if metrics else {},
                seconds=time.perf_counter() - started,
                transport="grpc",
            )
            write_statistics(output, job=job, outcome=outcome)
        if done.status != "completed":
            raise _fail(f"job {job.job.name} failed: {done.reason}")
        typer.echo(f"job {job.job.name}: completed")

    try:
        asyncio.run(main())
    except FlCoreError as exc:
        raise _fail(str(exc)) from None
    finally:
        store.close()


def stats_owner(
    coordinator: Annotated[str, typer.Option("--coordinator", help="host:port to dial.")],
    job_file: Annotated[Path, typer.Option("--job", help="The job file the owner agrees to.")],
    partition: Annotated[
        int | None, typer.Option(help="Use simulated share I of the job's data set.")
    ] = None,
    data: Annotated[
        Path | None, typer.Option(help="The owner's table: .csv with a header row, or .npz.")
    ] = None,
    name: Annotated[str | None, typer.Option(help="Enrolled name (default client-I).")] = None,
    policy: Annotated[Path | None, typer.Option(help="Owner policy file (TOML).")] = None,
    identity: Annotated[
        Path | None, typer.Option(help="Ed25519 identity key (PEM); created if missing.")
    ] = None,
    tls_ca: Annotated[Path | None, typer.Option(help="PEM CA of the coordinator (TLS).")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Take part in a statistics job as a data owner: only encrypted statistics leave."""
    from .client.policy import OwnerPolicy
    from .stats import StatsOwner, dataset_tables, load_table

    _logging(verbose, quiet)
    job = _load(job_file)
    if (partition is None) == (data is None):
        raise _fail("give exactly one of --partition and --data")
    if name is None and partition is None:
        raise _fail("give --name (the name the key holder's enrolment lists)")
    credentials = _channel_credentials(coordinator, tls_ca)
    try:
        if partition is not None:
            tables = dataset_tables(job)
            if not 0 <= partition < len(tables):
                raise _fail(f"--partition {partition} is outside [0, {len(tables) - 1}]")
            table = tables[partition]
        else:
            assert data is not None  # noqa: S101 - narrowing; checked above
            table = load_table(data)
        me = StatsOwner(
            name=name or f"client-{partition}",
            job=job,
            table=table,
            identity_key=_identity(identity),
            policy=OwnerPolicy.from_toml(policy) if policy else OwnerPolicy(),
        )
    except (FlCoreError, OSError) as exc:
        raise _fail(str(exc)) from None
    line = _participate(me, coordinator, job, credentials)
    if not quiet:
        typer.echo(line)


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
    quiet: Annotated[bool, typer.Option("--quiet", "-q")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Hold the HE secret key of a job; decrypt only aggregates of at least k enrolled owners."""
    from .he_job import load_enrolment, raw_public_key
    from .keyholder import KeyholderParticipant

    _logging(verbose, quiet)
    job = _load(job_file)
    credentials = _channel_credentials(coordinator, tls_ca)
    try:
        key = _identity(identity)
        me = KeyholderParticipant(
            job=job,
            enrolment=load_enrolment(enrolment),
            name=name,
            identity_key=key,
            min_contributors=min_contributors,
        )
    except (FlCoreError, OSError) as exc:
        raise _fail(str(exc)) from None
    if not quiet:
        console.print(
            f"key holder {raw_public_key(key).hex()} (k = {me.min_contributors}), context "
            f"{me.public_context().fingerprint[:16]}..."
        )
    line = _participate(me, coordinator, job, credentials)
    if not quiet:
        typer.echo(f"{line}; {len(me.decryption_log)} decryption(s)")


def public_key(
    identity: Annotated[
        Path, typer.Argument(help="Ed25519 identity key (PEM); created if missing.")
    ],
) -> None:
    """Print the hex public key of an identity file (for enrolment and trust lists)."""
    from .he_job import raw_public_key

    try:
        typer.echo(raw_public_key(_identity(identity)).hex())
    except OSError as exc:
        raise _fail(f"{identity}: {exc.strerror}") from None


def register(app: typer.Typer) -> None:
    """Add the HE commands to the ``bulwark`` app."""
    app.command()(stats)
    app.command("stats-coordinator")(stats_coordinator)
    app.command("stats-owner")(stats_owner)
    app.command()(keyholder)
    app.command("public-key")(public_key)
