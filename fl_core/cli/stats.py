"""``bulwark stats``, ``stats-coordinator`` and ``stats-owner``: statistics jobs under HE.

* ``bulwark stats JOB`` simulates a statistics job on this machine (in memory, or over loopback
  gRPC with the key holder and every owner as its own process) and writes ``statistics.json``;
* ``bulwark stats-coordinator JOB`` serves a statistics job to real participants;
* ``bulwark stats-owner`` takes part as a data owner, from a simulated share or a table file.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from ..errors import FlCoreError
from ._common import (
    Transport,
    channel_credentials,
    check_address,
    check_timeout,
    console,
    fail,
    identity_key,
    load,
    participate,
    roster,
    server_credentials,
    setup_logging,
    warn,
)


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
        Transport,
        typer.Option(help="inmemory: one process; grpc: key holder and owners as processes."),
    ] = Transport.INMEMORY,
    output: Annotated[
        Path | None, typer.Option(help="Folder for statistics.json and state.db.")
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Only the final line.")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Simulate a statistics job: coordinator, key holder and the data set's owners."""
    from ..stats import simulate_stats

    setup_logging(verbose, quiet)
    job = load(job_file)
    try:
        outcome = simulate_stats(job, transport=transport.value, output=output, job_path=job_file)
    except FlCoreError as exc:
        raise fail(str(exc)) from None
    for name, err in outcome.participant_errors.items():
        warn(name, err)
    if output is not None:
        from ..report import write_report

        try:
            html, _ = write_report(output, job=job)
        except FlCoreError as exc:
            warn("report", str(exc))
        else:
            if not quiet:
                console.print(f"report: {html}")
    if outcome.done.status != "completed" or outcome.statistics is None:
        raise fail(f"job {job.job.name} failed: {outcome.done.reason}")
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
    tls_client_ca: Annotated[
        Path | None, typer.Option(help="PEM CA that client certificates must chain to (mTLS).")
    ] = None,
    insecure: Annotated[
        bool, typer.Option("--insecure", help="Allow plaintext on a non-loopback address.")
    ] = False,
    federation: Annotated[
        Path | None,
        typer.Option(help="The federation's signed roster (JSON); needs --authority."),
    ] = None,
    authority: Annotated[
        Path | None,
        typer.Option(help="The pinned federation authority public key (PEM)."),
    ] = None,
    identity: Annotated[
        Path | None,
        typer.Option(help="The coordinator's Ed25519 key (PEM); it signs join challenges."),
    ] = None,
    name: Annotated[str, typer.Option(help="The coordinator's roster name.")] = "coordinator",
    quiet: Annotated[bool, typer.Option("--quiet", "-q")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Serve a statistics job to a key holder and data owners over gRPC."""
    import time

    from ..coordinator.stats_job import StatsJob
    from ..coordinator.store import Store
    from ..stats import StatsOutcome, stats_coordinator, write_statistics
    from ..transport.grpc_server import serve

    setup_logging(verbose, quiet)
    job = load(job_file)
    if job.job.kind != "stats":
        raise fail(f"{job_file}: job.kind must be 'stats' (use `bulwark coordinator` to train)")
    credentials = server_credentials(
        address,
        tls_cert=tls_cert,
        tls_key=tls_key,
        tls_client_ca=tls_client_ca,
        insecure=insecure,
    )
    runner = StatsJob()
    try:
        store = Store(state)
        coordinator = stats_coordinator(
            job,
            store,
            runner,
            roster=roster(federation, authority),
            identity_key=identity_key(identity) if identity is not None else None,
            name=name,
        )
    except FlCoreError as exc:
        raise fail(str(exc)) from None

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
            raise fail(f"job {job.job.name} failed: {done.reason}")
        typer.echo(f"job {job.job.name}: completed")

    try:
        asyncio.run(main())
    except FlCoreError as exc:
        raise fail(str(exc)) from None
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
    tls_cert: Annotated[
        Path | None, typer.Option(help="PEM client certificate (mutual TLS).")
    ] = None,
    tls_key: Annotated[Path | None, typer.Option(help="PEM key of --tls-cert.")] = None,
    connect_timeout: Annotated[
        float,
        typer.Option(help="Give up when the coordinator stays unreachable this many seconds."),
    ] = 30.0,
    federation: Annotated[
        Path | None,
        typer.Option(help="The federation's signed roster (JSON); needs --authority."),
    ] = None,
    authority: Annotated[
        Path | None,
        typer.Option(help="The pinned federation authority public key (PEM)."),
    ] = None,
    audit: Annotated[Path | None, typer.Option(help="The owner's audit log (SQLite).")] = None,
    ledger: Annotated[
        Path | None,
        typer.Option(
            help="The owner's privacy ledger: withdrawn records (bulwark data withdraw) are left "
            "out and the job's use of the data is recorded."
        ),
    ] = None,
    dataset: Annotated[
        str | None, typer.Option(help="The ledger's name for this data (default: the job's).")
    ] = None,
    pseudonym_key: Annotated[
        Path | None,
        typer.Option(
            help="The owner's key for policy.pseudonymize_columns (hex; created 0600 if missing)."
        ),
    ] = None,
    id_column: Annotated[
        str | None,
        typer.Option(help="The --data table's column of record ids (whole numbers; not used)."),
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Take part in a statistics job as a data owner: only encrypted statistics leave."""
    from ..client.consent import DataUse, withdrawn_mask
    from ..client.policy import OwnerPolicy
    from ..stats import (
        StatsOwner,
        dataset_share_ids,
        dataset_tables,
        deidentify_table,
        load_table,
        table_without,
    )

    setup_logging(verbose, quiet)
    job = load(job_file)
    if (partition is None) == (data is None):
        raise fail("give exactly one of --partition and --data")
    if name is None and partition is None:
        raise fail("give --name (the name the key holder's enrolment lists)")
    check_address(coordinator, "--coordinator")
    check_timeout(connect_timeout)
    credentials = channel_credentials(coordinator, tls_ca, tls_cert=tls_cert, tls_key=tls_key)
    if ledger is not None and data is not None and not id_column:
        raise fail("--ledger with --data needs --id-column (withdrawals name records by id)")
    data_name = dataset or job.data.dataset
    try:
        withdrawn = withdrawn_mask(ledger, data_name) if ledger is not None else None
        ids: tuple[str, ...] = ()
        if partition is not None:
            tables = dataset_tables(job, withdrawn=withdrawn)
            if not 0 <= partition < len(tables):
                raise fail(f"--partition {partition} is outside [0, {len(tables) - 1}]")
            table = tables[partition]
            if ledger is not None:  # the share's ids, to notice a later withdrawal
                ids = dataset_share_ids(job, withdrawn=withdrawn)[partition]
        else:
            assert data is not None  # noqa: S101 - narrowing; checked above
            table = load_table(data)
            if id_column:
                table, ids = table_without(table, id_column=id_column, withdrawn=withdrawn)
        from ..audit import AuditLog
        from ..client.deidentify import load_pseudonym_key

        me_name = name or f"client-{partition}"
        log = AuditLog(audit, party=me_name, role="owner") if audit is not None else None
        owner_policy = OwnerPolicy.from_toml(policy) if policy else OwnerPolicy()
        if owner_policy.pseudonymize_columns and pseudonym_key is None:
            raise fail("policy.pseudonymize_columns needs --pseudonym-key FILE")
        key = load_pseudonym_key(pseudonym_key) if pseudonym_key is not None else b""
        table = deidentify_table(table, job=job, policy=owner_policy, key=key, audit=log)
        me = StatsOwner(
            name=me_name,
            job=job,
            table=table,
            identity_key=identity_key(identity),
            policy=owner_policy,
            roster=roster(federation, authority),
            audit=log,
            tls=credentials is not None,
        )
        if ledger is not None:
            rows = len(next(iter(table.values()))) if table else 0
            me.data_use = DataUse(ledger=ledger, dataset=data_name, ids=ids, rows=rows)
    except (FlCoreError, OSError) as exc:
        raise fail(str(exc)) from None
    try:
        line = participate(me, coordinator, job, credentials, connect_timeout=connect_timeout)
    finally:
        if log is not None:
            log.close()
    if not quiet:
        typer.echo(line)
