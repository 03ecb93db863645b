"""The data owner's proof: one self-contained HTML report of a run, and its JSON twin.

``bulwark report RUN_DIR`` (and ``bulwark simulate`` / ``bulwark coordinator`` at the end of a
job) writes ``report.html`` and ``report.json`` into the run folder: purpose, parties and roles,
protections and the threat model they hold against, per-owner epsilon over rounds, refusals with
reasons, utility over rounds, every audit chain's verification, and a table mapping each
measure to PIPL and GDPR articles (a mapping, not legal advice).

| module | purpose |
| --- | --- |
| `_collect.py` | read metrics, the pinned job, audit logs and ledgers; verify; the facts |
| `_obligations.py` | the measure -> PIPL / GDPR article mapping |
| `_svg.py` | inline SVG line charts |
| `_html.py` | the page |
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..config import JobConfig
from ._collect import collect
from ._html import render

__all__ = ["build_report", "write_report"]


def build_report(
    run_dir: Path,
    *,
    audit_logs: Sequence[Path] = (),
    ledgers: Sequence[Path] = (),
    job: JobConfig | None = None,
) -> tuple[str, dict[str, Any]]:
    """The report of the run in ``run_dir``: ``(html, facts)``.

    Args:
        run_dir: the run's output folder (``metrics.json``; ``state.db``, ``audit/``,
            ``ledgers/`` when present).
        audit_logs: further audit logs (e.g. a coordinator's, kept beside its state file).
        ledgers: further privacy ledgers.
        job: the job, when the folder does not hold it.

    Raises:
        ConfigError: no ``metrics.json``, or the job cannot be found.
    """
    facts = collect(run_dir, audit_logs=audit_logs, ledgers=ledgers, job=job)
    return render(facts), facts


def write_report(
    run_dir: Path,
    *,
    audit_logs: Sequence[Path] = (),
    ledgers: Sequence[Path] = (),
    job: JobConfig | None = None,
    output: Path | None = None,
) -> tuple[Path, Path]:
    """Write ``report.html`` and ``report.json`` (into ``output``, default ``run_dir``).

    Returns:
        The paths of the HTML and the JSON file.

    Raises:
        ConfigError: as :func:`build_report`.
    """
    page, facts = build_report(run_dir, audit_logs=audit_logs, ledgers=ledgers, job=job)
    folder = output or run_dir
    folder.mkdir(parents=True, exist_ok=True)
    html_path, json_path = folder / "report.html", folder / "report.json"
    html_path.write_text(page, encoding="utf-8")
    json_path.write_text(json.dumps(facts, indent=2, allow_nan=False) + "\n", encoding="utf-8")
    return html_path, json_path
