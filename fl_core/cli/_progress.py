"""The progress display and the per-round summary table of a running job."""

from __future__ import annotations

from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from ..coordinator.events import Event
from ._common import console, warn


class ProgressView:
    """Shows rounds, clients done in the current stage, loss and accuracy while a job runs."""

    def __init__(self, total_rounds: int, *, quiet: bool) -> None:
        self.quiet = quiet
        self.progress = Progress(
            TextColumn("[bold]round {task.completed:.0f}/{task.total:.0f}"),
            BarColumn(),
            TextColumn("{task.description}", markup=False),
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
            warn(f"round {event.round} aborted", str(d.get("reason")))


def summary(rounds: list[dict[str, object]]) -> Table:
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
