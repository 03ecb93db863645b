"""``bulwark data``: the data owner's consent records (withdrawals of records by id)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..errors import FlCoreError
from ._common import fail

data_app = typer.Typer(
    help="The data owner's records: withdrawals by record id.", no_args_is_help=True
)

MAX_IDS_FILE = 64 * 1024 * 1024
"""The largest ``--ids`` file read (bytes): ids, not data."""


def _read_ids(path: Path) -> list[str]:
    if not path.is_file():
        raise fail(f"--ids {path}: no such file")
    if path.stat().st_size > MAX_IDS_FILE:
        raise fail(f"--ids {path}: larger than {MAX_IDS_FILE} bytes")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError:
        raise fail(f"--ids {path}: not UTF-8 text (one record id a line)") from None
    ids = [line.strip() for line in lines if line.strip()]
    if not ids:
        raise fail(f"--ids {path}: no record ids (one a line)")
    return ids


def _dataset(book: object, given: str | None, ledger: Path) -> str:
    from ..client.ledger import PrivacyLedger

    assert isinstance(book, PrivacyLedger)  # noqa: S101 - narrowing for mypy
    if given:
        return given
    known = book.datasets()
    if len(known) != 1:
        raise fail(f"the ledger {ledger} knows data sets {known or 'none'}: give --dataset NAME")
    return known[0]


@data_app.command("withdraw")
def data_withdraw(
    ids: Annotated[Path, typer.Option("--ids", help="A text file: one record id a line.")],
    ledger: Annotated[Path, typer.Option("--ledger", help="The owner's privacy ledger.")],
    dataset: Annotated[
        str | None,
        typer.Option(help="The ledger's name for the data (default: its only data set)."),
    ] = None,
    audit: Annotated[
        Path | None,
        typer.Option(help="The owner's audit log: the withdrawal is recorded there too."),
    ] = None,
) -> None:
    """Withdraw records by id: every later task (training, statistics) leaves them out.

    The ledger keeps keyed digests of the ids (never the ids or the data) in its hash chain,
    with the rounds that read the data set before the withdrawal.
    """
    from ..audit import AuditLog, read_audit
    from ..client.ledger import PrivacyLedger

    if not ledger.exists():
        raise fail(f"no ledger at {ledger}")
    wanted = _read_ids(ids)
    try:
        with PrivacyLedger(ledger) as book:
            name = _dataset(book, dataset, ledger)
            done = book.withdraw(name, wanted)
        if audit is not None:
            info, _ = read_audit(audit)
            with AuditLog(audit, party=info.party, role=info.role) as log:
                log.append(
                    "withdrawal",
                    direction="local",
                    reason="records withdrawn by id (consent withdrawn or erasure)",
                    detail={
                        "dataset": name,
                        "requested": done.requested,
                        "new": done.new,
                        "rounds_used": [f"{j}:{r}" for j, r in done.rounds_used],
                        "ledger_row": done.id,
                    },
                )
    except FlCoreError as exc:
        raise fail(str(exc)) from None
    rounds = ", ".join(f"{j} round {r}" for j, r in done.rounds_used) or "none"
    typer.echo(
        f"withdrew {done.new} records of data set {name!r} ({done.requested} ids given, "
        f"{done.requested - done.new} already withdrawn); rounds that read the data set "
        f"before: {rounds}"
    )


@data_app.command("show")
def data_show(
    ledger: Annotated[Path, typer.Option("--ledger", help="The owner's privacy ledger.")],
) -> None:
    """List every withdrawal (when, how many, which rounds used the data before) and verify."""
    from ..client.consent import render_withdrawals
    from ..client.ledger import PrivacyLedger

    if not ledger.exists():
        raise fail(f"no ledger at {ledger}")
    try:
        with PrivacyLedger(ledger) as book:
            rows = book.verify()
            typer.echo(render_withdrawals(book.withdrawals()))
            typer.echo(f"audit chain: {rows} rows verified")
    except FlCoreError as exc:
        raise fail(str(exc)) from None
