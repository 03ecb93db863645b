"""The ``bulwark`` application: one typer app, each role's commands added explicitly."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import Annotated

import typer

from . import (
    audit,
    budget,
    certs,
    client,
    code,
    coordinator,
    data,
    federation,
    keyholder,
    keys,
    report,
    simulate,
    stats,
)


def _version(value: bool) -> None:
    if value:
        try:
            typer.echo(f"bulwark {version('bulwark')}")
        except PackageNotFoundError:  # running from a source tree that was never installed
            typer.echo("bulwark (not installed)")
        raise typer.Exit()


def build_app() -> typer.Typer:
    """The ``bulwark`` command-line application."""
    app = typer.Typer(
        add_completion=False,
        no_args_is_help=True,
        pretty_exceptions_enable=False,
        rich_markup_mode=None,
        help="Bulwark: federated learning where the data owner enforces what leaves its premises.",
    )

    @app.callback()
    def _root(
        show_version: Annotated[
            bool,
            typer.Option(
                "--version", callback=_version, is_eager=True, help="Print the version and exit."
            ),
        ] = False,
    ) -> None:
        """Bulwark: federated learning where the data owner enforces what leaves its premises."""

    app.command()(simulate.simulate)
    app.command()(coordinator.coordinator)
    app.command()(client.client)
    app.command()(keyholder.keyholder)
    app.command()(stats.stats)
    app.command("stats-coordinator")(stats.stats_coordinator)
    app.command("stats-owner")(stats.stats_owner)
    app.command("public-key")(keys.public_key)
    app.command("code-hash")(code.code_hash)
    app.command()(report.report)
    app.add_typer(budget.budget_app, name="budget")
    app.add_typer(certs.certs_app, name="certs")
    app.add_typer(federation.federation_app, name="federation")
    app.add_typer(audit.audit_app, name="audit")
    app.add_typer(data.data_app, name="data")
    return app
