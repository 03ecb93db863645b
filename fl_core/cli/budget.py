"""``bulwark budget``: the data owner's privacy budget."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..errors import FlCoreError
from ._common import fail

budget_app = typer.Typer(help="The data owner's privacy budget.", no_args_is_help=True)


@budget_app.command("show")
def budget_show(
    ledger: Annotated[Path, typer.Option("--ledger", help="The owner's privacy ledger.")],
) -> None:
    """Print every release, mechanism and epsilon spent, per data set, and verify the chain."""
    from ..client.ledger import PrivacyLedger, render_budget

    if not ledger.exists():
        raise fail(f"no ledger at {ledger}")
    try:
        with PrivacyLedger(ledger) as book:
            rows = book.verify()
            typer.echo(render_budget(book.show()))
            typer.echo(f"audit chain: {rows} rows verified")
    except FlCoreError as exc:
        raise fail(str(exc)) from None
