"""``bulwark audit``: verify and export a party's hash-chained audit log."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from ..errors import AuditTampered, FlCoreError
from ._common import console, fail

audit_app = typer.Typer(help="A party's hash-chained audit log.", no_args_is_help=True)


@audit_app.command("verify")
def audit_verify(
    log: Annotated[Path, typer.Argument(help="The audit log (SQLite).")],
) -> None:
    """Check the hash chain; a broken one names the first bad entry (one line, exit 1)."""
    from ..audit import verify_audit

    try:
        head = verify_audit(log)
    except AuditTampered as exc:
        console.print(f"FAILED: {exc}", soft_wrap=True, markup=False, highlight=False)
        raise typer.Exit(code=1) from None
    except FlCoreError as exc:
        raise fail(str(exc)) from None
    typer.echo(f"{log}: {head.entries} entries verified, head {head.hash}")


@audit_app.command("export")
def audit_export(
    log: Annotated[Path, typer.Argument(help="The audit log (SQLite).")],
    output: Annotated[
        Path | None, typer.Option(help="Write JSON Lines here (default: standard output).")
    ] = None,
) -> None:
    """Write every entry as JSON Lines, oldest first (run ``audit verify`` to check them)."""
    from ..audit import export_audit

    try:
        lines = list(export_audit(log))
    except FlCoreError as exc:
        raise fail(str(exc)) from None
    text = "".join(line + "\n" for line in lines)
    if output is None:
        sys.stdout.write(text)
    else:
        output.write_text(text)
