"""``bulwark simulate``: a job's coordinator and all its data owners on this machine."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..errors import FlCoreError
from ._common import Backend, Transport, console, fail, load, setup_logging, warn
from ._progress import ProgressView, summary


def simulate(
    job_file: Annotated[Path, typer.Argument(help="The job file (TOML).")],
    transport: Annotated[
        Transport, typer.Option(help="inmemory: one process; grpc: client processes over loopback.")
    ] = Transport.INMEMORY,
    output: Annotated[
        Path | None, typer.Option(help="Folder for metrics.json, model.safetensors, state.db.")
    ] = None,
    owner_policy: Annotated[
        Path | None, typer.Option(help="A policy file every simulated owner applies.")
    ] = None,
    backend: Annotated[
        Backend,
        typer.Option(help="local: --transport decides; ray: every owner a Ray task over gRPC."),
    ] = Backend.LOCAL,
    ray_address: Annotated[
        str | None, typer.Option(help="The Ray cluster (default: a local instance for the run).")
    ] = None,
    ray_num_cpus: Annotated[float, typer.Option(help="CPUs per owner's Ray task.")] = 1.0,
    ray_num_gpus: Annotated[float, typer.Option(help="GPUs per owner's Ray task.")] = 0.0,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress display.")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Run a job's coordinator and all its data owners on this machine."""
    from ..ray_backend import RayResources
    from ..simulation import simulate as run_simulation

    setup_logging(verbose, quiet)
    job = load(job_file)
    if backend is not Backend.RAY and (ray_address is not None):
        raise fail("--ray-address needs --backend ray")
    try:
        resources = RayResources(num_cpus=ray_num_cpus, num_gpus=ray_num_gpus)
    except FlCoreError as exc:
        raise fail(str(exc)) from None
    view = ProgressView(job.job.rounds, quiet=quiet)
    try:
        with view.progress:
            result = run_simulation(
                job,
                transport=transport.value,
                output=output,
                events=view,
                job_path=job_file,
                owner_policy=owner_policy,
                backend=backend.value,
                ray_address=ray_address,
                ray_resources=resources,
            )
    except FlCoreError as exc:
        raise fail(str(exc)) from None
    if not quiet:
        console.print(summary(result.rounds))
    for name, err in result.client_errors.items():
        warn(name, err)
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
        raise fail(f"job failed: {result.done.reason}")
