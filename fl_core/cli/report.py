"""``bulwark report``: the privacy officer's report of a run (HTML and a JSON twin)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..errors import FlCoreError
from ._common import fail


def report(
    run_dir: Annotated[Path, typer.Argument(help="The run's output folder (metrics.json).")],
    audit: Annotated[
        list[Path] | None,
        typer.Option(help="A further audit log (repeatable); audit/*.db is always read."),
    ] = None,
    ledger: Annotated[
        list[Path] | None,
        typer.Option(help="A further privacy ledger (repeatable); ledgers/*.db is always read."),
    ] = None,
    job_file: Annotated[
        Path | None,
        typer.Option("--job", help="The job file, when RUN_DIR holds no state.db or job.toml."),
    ] = None,
    output: Annotated[
        Path | None, typer.Option(help="Folder for report.html and report.json (default: RUN_DIR).")
    ] = None,
) -> None:
    """Write report.html (self-contained) and report.json for a run folder."""
    from ..report import write_report
    from ._common import load

    job = load(job_file) if job_file is not None else None
    try:
        html, data = write_report(
            run_dir, audit_logs=audit or [], ledgers=ledger or [], output=output, job=job
        )
    except FlCoreError as exc:
        raise fail(str(exc)) from None
    typer.echo(f"report: {html} and {data}")
