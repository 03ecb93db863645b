"""The ``bulwark`` command line: simulate, coordinator, client (and more as they land).

Errors that a user can act on (a wrong job field, a missing data set, an unreachable coordinator)
are printed as one line naming what is wrong, with exit status 2; never a traceback.
"""

from __future__ import annotations

import asyncio
import os
import sys
import warnings
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from .cli_common import channel_credentials, console, server_credentials
from .cli_common import fail as _fail
from .cli_common import load as _load
from .cli_common import setup_logging as _logging
from .cli_he import register as register_he_commands
from .coordinator.events import Event
from .errors import FlCoreError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Bulwark: federated learning where the data owner enforces what leaves its premises.",
)


class ProgressView:
    """Shows rounds, clients done in the current stage, loss and accuracy while a job runs."""

    def __init__(self, total_rounds: int, *, quiet: bool) -> None:
        self.quiet = quiet
        self.progress = Progress(
            TextColumn("[bold]round {task.completed:.0f}/{task.total:.0f}"),
            BarColumn(),
            TextColumn("{task.description}"),
            TimeElapsedColumn(),
            console=console,
            disable=quiet,
        )
        self.task = self.progress.add_task("waiting for clients", total=total_rounds)
        self.last = ""
        self.resumed_after = 0

    def __call__(self, event: Event) -> None:
        """Update the display for one coordinator event."""
        d = event.data
        if event.kind == "round_started":
            self.progress.update(
                self.task, description=f"round {event.round}: cohort {d['cohort']} {self.last}"
            )
        elif event.kind == "stage_progress":
            self.progress.update(
                self.task,
                description=f"round {event.round} {d['stage']}: {d['answered']}/{d['sent']} "
                f"clients {self.last}",
            )
        elif event.kind in ("round_completed", "resumed"):
            if event.kind == "resumed":
                self.resumed_after = event.round
            parts = []
            for key in ("loss", "accuracy"):
                value = d.get(key)
                if isinstance(value, float):
                    parts.append(f"{key} {value:.4f}")
            if parts:
                self.last = "| " + ", ".join(parts)
            self.progress.update(self.task, completed=event.round, description=self.last)
        elif event.kind == "round_aborted" and not self.quiet:
            console.print(f"[yellow]round {event.round} aborted:[/] {d.get('reason')}")


def _summary(rounds: list[dict[str, object]]) -> Table:
    table = Table(title="rounds")
    private = any("epsilon" in r or "owner_epsilon" in r for r in rounds)
    columns = ["round", "clients", "train loss", "loss", "accuracy", "MB moved", "seconds"]
    for col in columns + (["epsilon"] if private else []):
        table.add_column(col, justify="right")
    for r in rounds:
        moved = (int(r.get("bytes_down", 0)) + int(r.get("bytes_up", 0))) / 1e6  # type: ignore[call-overload]
        row = [
            str(r["round"]),
            str(r.get("num_clients", "")),
            _fmt(r.get("train_loss")),
            _fmt(r.get("loss")),
            _fmt(r.get("accuracy")),
            f"{moved:.2f}",
            _fmt(r.get("seconds"), 2),
        ]
        if private:
            owners = r.get("owner_epsilon")
            worst = max(owners.values()) if isinstance(owners, dict) and owners else None
            row.append(_fmt(r.get("epsilon", worst), 3))
        table.add_row(*row)
    return table


def _fmt(value: object, digits: int = 4) -> str:
    return f"{value:.{digits}f}" if isinstance(value, float) else ""


@app.command()
def simulate(
    job_file: Annotated[Path, typer.Argument(help="The job file (TOML).")],
    transport: Annotated[
        str, typer.Option(help="inmemory: one process; grpc: client processes over loopback.")
    ] = "inmemory",
    output: Annotated[
        Path | None, typer.Option(help="Folder for metrics.json, model.safetensors, state.db.")
    ] = None,
    owner_policy: Annotated[
        Path | None, typer.Option(help="A policy file every simulated owner applies.")
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress display.")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Run a job's coordinator and all its data owners on this machine."""
    from .simulation import simulate as run_simulation

    _logging(verbose, quiet)
    job = _load(job_file)
    view = ProgressView(job.job.rounds, quiet=quiet)
    try:
        with view.progress:
            result = run_simulation(
                job,
                transport=transport,
                output=output,
                events=view,
                job_path=job_file,
                owner_policy=owner_policy,
            )
    except FlCoreError as exc:
        raise _fail(str(exc)) from None
    if not quiet:
        console.print(_summary(result.rounds))
    for name, err in result.client_errors.items():
        console.print(f"[yellow]{name}:[/] {err}")
    if view.resumed_after and output is not None:
        typer.echo(
            f"resumed from {output / 'state.db'} after round {view.resumed_after}: those rounds "
            "were not run again (use another --output folder to start over)"
        )
    final = result.final
    line = f"job {job.job.name}: {result.done.status} in {result.seconds:.1f} s"
    if isinstance(final.get("accuracy"), float):
        line += f", accuracy {final['accuracy']:.4f}"
    if output is not None:
        line += f"; results in {output}"
    typer.echo(line)
    if result.done.status != "completed":
        raise _fail(f"job failed: {result.done.reason}")


@app.command()
def coordinator(
    job_file: Annotated[Path, typer.Argument(help="The job file (TOML).")],
    address: Annotated[str, typer.Option(help="host:port to listen on.")] = "127.0.0.1:50051",
    state: Annotated[Path, typer.Option(help="SQLite file with the job's state.")] = Path(
        "bulwark-state.db"
    ),
    output: Annotated[Path | None, typer.Option(help="Folder for results.")] = None,
    tls_cert: Annotated[Path | None, typer.Option(help="PEM certificate chain.")] = None,
    tls_key: Annotated[Path | None, typer.Option(help="PEM private key.")] = None,
    tls_client_ca: Annotated[
        Path | None, typer.Option(help="PEM CA that client certificates must chain to (mTLS).")
    ] = None,
    insecure: Annotated[
        bool, typer.Option("--insecure", help="Allow plaintext on a non-loopback address.")
    ] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Serve a job to data owners over gRPC; resumes from --state after a restart."""
    from .aggregators import create_aggregator
    from .coordinator.service import Coordinator
    from .coordinator.store import Store
    from .simulation import initial_weights, model_shape, write_outputs
    from .strategies import create_strategy
    from .transport.grpc_server import serve
    from .types import Layout

    _logging(verbose, quiet)
    job = _load(job_file)
    if job.job.kind == "stats":  # a statistics job has its own coordinator loop
        from .cli_he import stats_coordinator

        return stats_coordinator(
            job_file, address=address, state=state, output=output, tls_cert=tls_cert,
            tls_key=tls_key, insecure=insecure, quiet=quiet, verbose=verbose,
        )  # fmt: skip
    credentials = server_credentials(
        address, tls_cert=tls_cert, tls_key=tls_key, tls_client_ca=tls_client_ca,
        insecure=insecure,
    )  # fmt: skip
    view = ProgressView(job.job.rounds, quiet=quiet)
    try:
        input_shape, num_classes = model_shape(job)
        weights = initial_weights(job, input_shape=input_shape, num_classes=num_classes)
        store = Store(state)
        coord = Coordinator(
            job,
            store=store,
            initial_weights=Layout.of(weights).flatten(weights),
            strategy=create_strategy(job.strategy),
            aggregator=create_aggregator(job),
            events=view,
        )
    except FlCoreError as exc:
        raise _fail(str(exc)) from None

    async def main() -> None:
        handle = await serve(coord, address=address, limits=job.limits, credentials=credentials)
        console.print(f"coordinator for job {job.job.name} listening on port {handle.port}")
        try:
            with view.progress:
                done = await coord.run()
        finally:
            await handle.stop(grace=2.0)
        typer.echo(f"job {job.job.name}: {done.status} {done.reason}".rstrip())
        if output is not None:
            layout = Layout.of(weights)
            write_outputs(
                output,
                job=job,
                done=done,
                rounds=store.metrics(job.job.name),
                weights=layout.unflatten(coord.global_weights),
                seconds=0.0,
                transport="grpc",
            )
        if done.status != "completed":
            raise _fail(f"job failed: {done.reason}")

    try:
        asyncio.run(main())
    except FlCoreError as exc:
        raise _fail(str(exc)) from None


@app.command()
def client(
    coordinator: Annotated[str, typer.Option("--coordinator", help="host:port to dial.")],
    job_file: Annotated[Path, typer.Option("--job", help="The job file the owner agrees to.")],
    partition: Annotated[
        int | None, typer.Option(help="Use simulated share I of the job's data set.")
    ] = None,
    data: Annotated[
        Path | None,
        typer.Option(help=".npz file with x_train, y_train, x_test, y_test (no pickle)."),
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
        Path | None, typer.Option(help="The owner's privacy ledger (SQLite), for DP jobs.")
    ] = None,
    dataset: Annotated[
        str | None, typer.Option(help="The ledger's name for this data (default: the job's).")
    ] = None,
    threads: Annotated[int | None, typer.Option(help="torch threads.")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Take part in a job as a data owner: dial out to the coordinator, train, answer tasks."""
    from .client.runtime import Client
    from .identity import load_identity
    from .owner import load_owner_data, owner_trainer, prepare_ledger
    from .transport.grpc_client import GrpcClientTransport

    _logging(verbose, quiet)
    if threads:
        import torch

        torch.set_num_threads(threads)
    job = _load(job_file)
    if (partition is None) == (data is None):
        raise _fail("give exactly one of --partition and --data")
    try:
        from .client.policy import OwnerPolicy

        owner_policy = OwnerPolicy.from_toml(policy) if policy else OwnerPolicy()
        data_name = dataset or job.data.dataset
        if job.dp.mode != "none" and ledger is None:
            raise _fail(f"job {job.job.name} spends privacy budget: give --ledger FILE")
        if ledger is not None and owner_policy.budget_epsilon:
            prepare_ledger(ledger, job=job, dataset=data_name, policy=owner_policy)
        if ledger is not None and job.dp.mode != "none":
            from .client.ledger import PrivacyLedger

            with PrivacyLedger(ledger) as book:
                if book.cap(data_name) is None:
                    raise _fail(
                        f"the ledger {ledger} has no privacy cap for data set {data_name!r}: "
                        "set one with [policy] budget_epsilon in a --policy file"
                    )
        trainer = owner_trainer(job, load_owner_data(job, partition=partition, data=data))
        key = load_identity(identity)
        credentials = channel_credentials(coordinator, tls_ca, tls_cert=tls_cert, tls_key=tls_key)
        me = Client(
            name=name or f"client-{partition if partition is not None else os.getpid()}",
            job=job,
            trainer=trainer,
            identity_key=key,
            policy=owner_policy,
            ledger=ledger,
            dataset=data_name,
        )
    except (FlCoreError, OSError) as exc:
        raise _fail(str(exc)) from None

    async def main() -> None:
        transport = GrpcClientTransport(coordinator, limits=job.limits, credentials=credentials)
        try:
            done = await me.run(transport)
        finally:
            await transport.close()
        if not quiet:
            typer.echo(f"{me.name}: job {done.status} after {me.tasks_done} tasks")

    try:
        asyncio.run(main())
    except FlCoreError as exc:
        raise _fail(str(exc)) from None


register_he_commands(app)

budget_app = typer.Typer(help="The data owner's privacy budget.", no_args_is_help=True)
app.add_typer(budget_app, name="budget")


@budget_app.command("show")
def budget_show(
    ledger: Annotated[Path, typer.Option("--ledger", help="The owner's privacy ledger.")],
) -> None:
    """Print every release, mechanism and epsilon spent, per data set, and verify the chain."""
    from .client.ledger import PrivacyLedger, render_budget

    if not ledger.exists():
        raise _fail(f"no ledger at {ledger}")
    try:
        with PrivacyLedger(ledger) as book:
            rows = book.verify()
            typer.echo(render_budget(book.show()))
            typer.echo(f"audit chain: {rows} rows verified")
    except FlCoreError as exc:
        raise _fail(str(exc)) from None


def main() -> None:
    """Entry point of the ``bulwark`` console script."""
    # Opacus's per-example hooks trigger this torch warning on every backward pass; the filter
    # inside fl_core.dp.dpsgd is per call and not thread-safe, so the application sets it once.
    warnings.filterwarnings("ignore", message=".*Full backward hook is firing.*")
    try:
        app()
    except KeyboardInterrupt:
        console.print("interrupted")
        sys.exit(130)


if __name__ == "__main__":
    main()
