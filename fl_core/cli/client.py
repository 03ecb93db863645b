"""``bulwark client``: take part in a training job as a data owner."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from ..errors import FlCoreError
from ._common import (
    LogFormat,
    channel_credentials,
    check_address,
    check_timeout,
    fail,
    identity_key,
    load,
    participate,
    roster,
    setup_logging,
)


def client(
    coordinator: Annotated[str, typer.Option("--coordinator", help="host:port to dial.")],
    job_file: Annotated[Path, typer.Option("--job", help="The job file the owner agrees to.")],
    partition: Annotated[
        int | None, typer.Option(help="Use simulated share I of the job's data set.")
    ] = None,
    data: Annotated[
        Path | None,
        typer.Option(
            help="The owner's table: .csv, .parquet or .npz read by the job's [schema] (or "
            "--schema); without a schema an .npz with x_train, y_train, x_test, y_test."
        ),
    ] = None,
    schema: Annotated[
        Path | None,
        typer.Option(help="A TOML file with a [schema] table, for a job that declares none."),
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
    ledger: Annotated[
        Path | None,
        typer.Option(
            help="The owner's privacy ledger (SQLite): needed for DP jobs; with it, withdrawn "
            "records (bulwark data withdraw) are left out and each round's use is recorded."
        ),
    ] = None,
    dataset: Annotated[
        str | None, typer.Option(help="The ledger's name for this data (default: the job's).")
    ] = None,
    audit: Annotated[
        Path | None,
        typer.Option(
            help="The owner's audit log (SQLite; default: audit-NAME.db beside --ledger)."
        ),
    ] = None,
    pseudonym_key: Annotated[
        Path | None,
        typer.Option(
            help="The owner's key for policy.pseudonymize_columns (hex; created 0600 if missing)."
        ),
    ] = None,
    coordinator_name: Annotated[
        str,
        typer.Option(help="The coordinator's roster name (checked against the policy's list)."),
    ] = "",
    threads: Annotated[int | None, typer.Option(help="torch threads.")] = None,
    connect_timeout: Annotated[
        float,
        typer.Option(help="Give up when the coordinator stays unreachable this many seconds."),
    ] = 30.0,
    log_format: Annotated[
        LogFormat, typer.Option(help="Log lines as text or as one JSON object each.")
    ] = LogFormat.TEXT,
    metrics_port: Annotated[
        int | None,
        typer.Option(
            help="Serve Prometheus metrics (tasks, refusals, releases, bytes) on this port "
            "(127.0.0.1; 0: any free one)."
        ),
    ] = None,
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
    """Take part in a job as a data owner: dial out to the coordinator, train, answer tasks."""
    from ..client.runtime import Client, ClientOptions
    from ..owner import load_deidentified, owner_trainer, prepare_ledger

    setup_logging(verbose, quiet, log_format)
    check_address(coordinator, "--coordinator")
    check_timeout(connect_timeout)
    if threads:
        import torch

        torch.set_num_threads(threads)
    job = load(job_file)
    if federation is not None:  # a deployment with a roster: unset secagg.adversary is malicious
        from ..config import with_deployment_defaults

        job = with_deployment_defaults(job)
    if (partition is None) == (data is None):
        raise fail("give exactly one of --partition and --data")
    try:
        from ..client.policy import OwnerPolicy

        owner_policy = OwnerPolicy.from_toml(policy) if policy else OwnerPolicy()
        data_name = dataset or job.data.dataset
        if job.dp.mode != "none" and ledger is None:
            raise fail(f"job {job.job.name} spends privacy budget: give --ledger FILE")
        if ledger is not None and owner_policy.budget_epsilon:
            prepare_ledger(ledger, job=job, dataset=data_name, policy=owner_policy)
        if ledger is not None and job.dp.mode != "none":
            from ..client.ledger import PrivacyLedger

            with PrivacyLedger(ledger) as book:
                if book.cap(data_name) is None:
                    raise fail(
                        f"the ledger {ledger} has no privacy cap for data set {data_name!r}: "
                        "set one with [policy] budget_epsilon in a --policy file"
                    )
        from ..app import verify_code
        from ..config import load_schema

        if job.code is not None:  # the job's own code: checked before anything is imported
            verify_code(job.code)
        declared = load_schema(schema) if schema is not None else None
        me_name = name or f"client-{partition if partition is not None else os.getpid()}"
        if audit is None and ledger is not None:
            audit = ledger.parent / f"audit-{me_name}.db"
        from ..audit import AuditLog

        log = AuditLog(audit, party=me_name, role="owner") if audit is not None else None
        withdrawn = None
        if ledger is not None:
            from ..client.consent import withdrawn_mask

            withdrawn = withdrawn_mask(ledger, data_name)
        owned = load_deidentified(
            job,
            partition=partition,
            data=data,
            schema=declared,
            withdrawn=withdrawn,
            policy=owner_policy,
            key_file=pseudonym_key,
            audit=log,
        )
        share = owned.data
        trainer = owner_trainer(job, share)
        key = identity_key(identity)
        credentials = channel_credentials(coordinator, tls_ca, tls_cert=tls_cert, tls_key=tls_key)
        exporter = None
        if metrics_port is not None:
            from ..client.metrics import OwnerMetrics

            exporter = OwnerMetrics(me_name, job.job.name)
            try:
                port = exporter.serve(metrics_port)
            except OSError as exc:
                raise fail(f"--metrics-port {metrics_port}: {exc}") from None
            typer.echo(f"Prometheus metrics on http://127.0.0.1:{port}/metrics", err=True)
        me = Client(
            name=me_name,
            job=job,
            trainer=trainer,
            identity_key=key,
            policy=owner_policy,
            ledger=ledger,
            dataset=data_name,
            options=ClientOptions(give_up_after_s=connect_timeout),
            roster=roster(federation, authority),
            audit=log,
            tls=credentials is not None,
            coordinator=coordinator_name,
            observer=exporter,
        )
        if ledger is not None:
            from ..client.consent import DataUse

            me.data_use = DataUse(
                ledger=ledger,
                dataset=data_name,
                ids=owned.raw_ids,
                rows=share.num_train + share.num_test,
            )
    except (FlCoreError, OSError) as exc:
        raise fail(str(exc)) from None

    try:
        line = participate(me, coordinator, job, credentials, connect_timeout=connect_timeout)
    finally:
        if log is not None:
            log.close()
    if not quiet:
        typer.echo(line)
