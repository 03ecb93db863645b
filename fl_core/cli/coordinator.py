"""``bulwark coordinator``: serve a job to data owners (and a key holder) over gRPC."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Annotated

import typer

from ..errors import FlCoreError
from ._common import (
    LogFormat,
    check_address,
    console,
    fail,
    identity_key,
    load,
    roster,
    server_credentials,
    setup_logging,
)
from ._progress import ProgressView


def coordinator(
    job_file: Annotated[Path, typer.Argument(help="The job file (TOML).")],
    address: Annotated[str, typer.Option(help="host:port to listen on.")] = "127.0.0.1:50051",
    state: Annotated[Path, typer.Option(help="SQLite file with the job's state.")] = Path(
        "bulwark-state.db"
    ),
    output: Annotated[Path | None, typer.Option(help="Folder for results.")] = None,
    audit: Annotated[
        Path | None,
        typer.Option(help="The coordinator's audit log (SQLite; default: STATE-audit.db)."),
    ] = None,
    tls_cert: Annotated[Path | None, typer.Option(help="PEM certificate chain.")] = None,
    tls_key: Annotated[Path | None, typer.Option(help="PEM private key.")] = None,
    tls_client_ca: Annotated[
        Path | None, typer.Option(help="PEM CA that client certificates must chain to (mTLS).")
    ] = None,
    insecure: Annotated[
        bool, typer.Option("--insecure", help="Allow plaintext on a non-loopback address.")
    ] = False,
    log_format: Annotated[
        LogFormat, typer.Option(help="Log lines as text or as one JSON object each.")
    ] = LogFormat.TEXT,
    metrics_port: Annotated[
        int | None,
        typer.Option(help="Serve Prometheus metrics on this port (127.0.0.1; 0: any free one)."),
    ] = None,
    federation: Annotated[
        Path | None,
        typer.Option(help="The federation's signed roster: only its members join."),
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
    """Serve a job to data owners over gRPC; resumes from --state after a restart."""
    from ..aggregators import create_aggregator
    from ..coordinator.events import Event
    from ..coordinator.service import Coordinator
    from ..coordinator.store import Store
    from ..simulation import initial_weights, model_shape, write_outputs
    from ..strategies import create_strategy
    from ..transport.base import JobDone
    from ..transport.grpc_server import serve
    from ..types import Layout

    setup_logging(verbose, quiet, log_format)
    check_address(address, "--address", listen=True)
    job = load(job_file)
    if federation is not None:  # a deployment with a roster: unset secagg.adversary is malicious
        from ..config import with_deployment_defaults

        job = with_deployment_defaults(job)
    if job.job.kind == "stats":  # a statistics job has its own coordinator loop
        from .stats import stats_coordinator

        return stats_coordinator(
            job_file, address=address, state=state, output=output, tls_cert=tls_cert,
            tls_key=tls_key, tls_client_ca=tls_client_ca, insecure=insecure,
            federation=federation, authority=authority, identity=identity, name=name,
            quiet=quiet, verbose=verbose,
        )  # fmt: skip
    credentials = server_credentials(
        address, tls_cert=tls_cert, tls_key=tls_key, tls_client_ca=tls_client_ca,
        insecure=insecure,
    )  # fmt: skip
    view = ProgressView(job.job.rounds, quiet=quiet)
    started = time.perf_counter()
    running = JobDone(status="running")

    def save(done: JobDone) -> None:
        if output is not None:
            write_outputs(
                output,
                job=job,
                done=done,
                rounds=store.metrics(job.job.name),
                weights=Layout.of(weights).unflatten(coord.global_weights),
                seconds=time.perf_counter() - started,
                transport="grpc",
            )

    exporter = None
    if metrics_port is not None:
        from ..coordinator.metrics import PrometheusMetrics

        exporter = PrometheusMetrics(job.job.name)
        try:
            port = exporter.serve(metrics_port)
        except OSError as exc:
            raise fail(f"--metrics-port {metrics_port}: {exc}") from None
        console.print(f"Prometheus metrics on http://127.0.0.1:{port}/metrics")

    def on_event(event: Event) -> None:
        view(event)
        if exporter is not None:
            exporter(event)
        if event.kind == "round_completed":  # metrics.json is current after every round
            save(running)

    try:
        input_shape, num_classes = model_shape(job)
        weights = initial_weights(job, input_shape=input_shape, num_classes=num_classes)
        store = Store(state)
        from ..audit import AuditLog

        log = AuditLog(
            audit or state.with_name(f"{state.stem}-audit.db"),
            party=name,
            role="coordinator",
        )
        coord = Coordinator(
            job,
            store=store,
            initial_weights=Layout.of(weights).flatten(weights),
            strategy=create_strategy(job.strategy),
            aggregator=create_aggregator(job),
            events=on_event,
            roster=roster(federation, authority),
            identity_key=identity_key(identity) if identity is not None else None,
            name=name,
            audit=log,
        )
    except FlCoreError as exc:
        raise fail(str(exc)) from None

    async def main() -> None:
        handle = await serve(coord, address=address, limits=job.limits, credentials=credentials)
        console.print(f"coordinator for job {job.job.name} listening on port {handle.port}")
        try:
            with view.progress:
                done = await coord.run()
        finally:
            await handle.stop(grace=2.0)
        typer.echo(f"job {job.job.name}: {done.status} {done.reason}".rstrip())
        save(done)
        if output is not None:
            from ..report import write_report

            log.close()  # every entry is committed; the report reads the file
            html, _ = write_report(output, audit_logs=[log.path], job=job)
            console.print(f"report: {html}")
        if done.status != "completed":
            raise fail(f"job failed: {done.reason}")

    try:
        asyncio.run(main())
    except FlCoreError as exc:
        raise fail(str(exc)) from None
    finally:
        log.close()
