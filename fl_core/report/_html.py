"""Render the report's facts as one self-contained HTML page (inline CSS and SVG, no script).

Nothing is fetched: no stylesheet, font, image or script is linked, so the page renders the
same offline, and every value is escaped (a reason written by a hostile party cannot inject
markup).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from html import escape
from typing import Any

from ._svg import line_chart

CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 960px; color: #222;
       line-height: 1.4; padding: 0 1em; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; } h2 { margin-top: 1.6em; font-size: 1.25em;
     border-bottom: 1px solid #ccc; padding-bottom: 0.2em; }
table { border-collapse: collapse; width: 100%; margin: 0.6em 0; font-size: 0.92em; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.5em; text-align: left; vertical-align: top; }
th { background: #f2f2f2; } .ok { color: #17692a; font-weight: 600; }
.bad { color: #b00020; font-weight: 600; } .muted { color: #666; } code { font-size: 0.9em; }
.chart text { font-size: 11px; fill: #333; } .chart .chart-title { font-size: 13px;
  font-weight: 600; } .chart .grid { stroke: #e5e5e5; } .chart .axis { stroke: #555; }
.note { background: #fff8e1; border-left: 4px solid #f0b400; padding: 0.5em 0.8em; }
"""


def _cell(value: object) -> str:
    if value is None:
        return '<td class="muted">-</td>'
    if isinstance(value, bool):
        return f'<td class="{"ok" if value else "bad"}">{"yes" if value else "no"}</td>'
    if isinstance(value, float):
        return f"<td>{value:.4g}</td>"
    return f"<td>{escape(str(value))}</td>"


def _groups(digest: str) -> str | None:
    """A hex digest in groups of 16, so that it wraps in a table cell and reads aloud."""
    return " ".join(digest[i : i + 16] for i in range(0, len(digest), 16)) or None


def _table(headers: Sequence[str], rows: Iterable[Sequence[object]], empty: str) -> str:
    body = "".join("<tr>" + "".join(_cell(v) for v in row) + "</tr>" for row in rows)
    if not body:
        return f'<p class="muted">{escape(empty)}</p>'
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _released(released: dict[str, Any] | None) -> str:
    """A statistics job's release: how many rows, from whom, which statistics (no values)."""
    if released is None:
        return ""
    return "<h2 id='released'>Statistics released</h2>" + _table(
        ["rows", "contributors", "statistics"],
        [
            [
                released["count"],
                ", ".join(released["contributors"]),
                ", ".join(released["statistics"]),
            ]
        ],  # fmt: skip
        "",
    )


def render(facts: dict[str, Any]) -> str:
    """The report page for ``facts`` (as :func:`fl_core.report.build_report` returns them)."""
    job = facts["job"]
    eps = facts["epsilon"]
    owner_series = {
        name: [(p["round"], p["epsilon"]) for p in pts] for name, pts in eps["owners"].items()
    }
    if eps["job"]:
        owner_series["job guarantee"] = [(p["round"], p["epsilon"]) for p in eps["job"]]
    util = facts["utility"]
    accuracy = {
        "accuracy": [(u["round"], u["accuracy"]) for u in util if u["accuracy"] is not None]
    }
    loss = {
        "loss": [(u["round"], u["loss"]) for u in util if u["loss"] is not None],
        "train loss": [(u["round"], u["train_loss"]) for u in util if u["train_loss"] is not None],
    }
    audit_ok = all(a["verified"] for a in facts["audit"]) and bool(facts["audit"])
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>Bulwark report: {escape(job['name'])}</title><style>{CSS}</style></head><body>",
        f"<h1>Data protection report: job {escape(job['name'])}</h1>",
        f"<p class='muted'>Generated {escape(facts['report']['generated_at'])} from "
        f"<code>{escape(facts['report']['run_dir'])}</code>. Job file SHA-256 "
        f"<code id='manifest'>{escape(job['manifest_sha256'])}</code>.</p>",
        "<h2 id='purpose'>Purpose and outcome</h2>",
        _table(
            ["purpose", "kind", "data set", "model", "rounds", "status", "reason"],
            [
                [
                    job["purpose"] or "(none declared)",
                    job["kind"],
                    job["dataset"],
                    job["model"],
                    f"{job['rounds_completed']} of {job['rounds_planned']}",
                    job["status"],
                    job["reason"] or None,
                ]
            ],  # fmt: skip
            "",
        ),
        "<h2 id='parties'>Parties and roles</h2>",
        _table(
            ["party", "role", "what it does"],
            ([p["name"], p["role"], p["duty"]] for p in facts["parties"]),
            "no parties recorded",
        ),
        "<h2 id='protections'>Protections in force and the threat model</h2>",
        f"<p>{escape(facts['threat_model'])}</p>",
        _table(
            ["protection", "setting", "holds against"],
            ([p["name"], p["setting"], p["holds_against"]] for p in facts["protections"]),
            "",
        ),
        "<h2 id='epsilon'>Privacy budget spent</h2>",
        f"<p class='muted'>Per-owner epsilon of this job after each round, from the "
        f"{escape(eps['source'])}; the job guarantee is the coordinator's accounting of the "
        "aggregate (central and distributed DP).</p>",
        line_chart(owner_series, title="epsilon over rounds", x_label="round", y_label="epsilon"),
        _table(
            ["owner", "ledger verified", "data set", "cap", "spent (all jobs)", "error"],
            (
                [b["owner"], b["verified"], d["dataset"], d["cap"], d["spent"], b["error"] or None]
                for b in facts["ledgers"]
                for d in (b["datasets"] or [{"dataset": None, "cap": None, "spent": None}])
            ),
            "no privacy ledgers in this run (the job spends no privacy budget)",
        ),
        "<h2 id='refusals'>Refusals, with reasons</h2>",
        _table(
            ["party", "kind", "round", "stage", "peer", "reason", "log verified"],
            (
                [
                    r["party"],
                    r["kind"],
                    r["round"],
                    r["stage"],
                    r["peer"],
                    r["reason"],
                    r["log_verified"],
                ]
                for r in facts["refusals"]
            ),  # fmt: skip
            "no party refused anything in this run",
        ),
        "<h2 id='withdrawn'>Withdrawn records</h2>",
        f"<p class='note'>{escape(facts['withdrawn_records']['note'])}.</p>",
        _table(
            ["owner", "data set", "records withdrawn", "ids given", "when (UTC)", "rounds used"],
            (
                [
                    w["owner"],
                    w["dataset"],
                    w["withdrawn"],
                    w["requested"],
                    w["at"],
                    ", ".join(w["rounds_used"]) or None,
                ]
                for w in facts["withdrawn_records"]["withdrawals"]
            ),  # fmt: skip
            "no owner withdrew records",
        ),
        "<h2 id='deidentification'>De-identification before use</h2>",
        "<p class='muted'>What each owner did to its table before any task read it (from its "
        "audit log): identifier columns replaced by keyed pseudonyms (HMAC-SHA256, owner-held "
        "key), direct identifiers dropped, and the smallest equivalence class over the "
        "declared quasi-identifiers against the policy's k.</p>",
        _table(
            [
                "owner",
                "when (UTC)",
                "pseudonymized",
                "dropped",
                "quasi-identifiers",
                "smallest class",
                "policy k",
                "rows",
                "refused",
                "log verified",
            ],
            (
                [
                    d["owner"],
                    d["at"],
                    ", ".join(d["pseudonymized"]) or None,
                    ", ".join(d["dropped"]) or None,
                    ", ".join(d["quasi_identifiers"]) or None,
                    d["smallest_class"],
                    d["min_k"],
                    d["rows"],
                    d["reason"] if d["refused"] else False,
                    d["log_verified"],
                ]
                for d in facts["deidentification"]
            ),  # fmt: skip
            "no owner recorded a de-identification step in this run",
        ),
        _released(facts.get("statistics_released")),
        "<h2 id='utility'>Utility</h2>",
        line_chart(accuracy, title="accuracy over rounds", x_label="round", y_label="accuracy"),
        line_chart(loss, title="loss over rounds", x_label="round", y_label="loss"),
        "<h2 id='audit'>Audit chains</h2>",
        f"<p class='{'ok' if audit_ok else 'bad'}' id='audit-summary'>"
        f"{'Every audit chain verified.' if audit_ok else 'An audit chain FAILED verification.'}"
        "</p>",
        _table(
            ["party", "role", "verified", "entries", "head hash", "error"],
            (
                [
                    a["party"],
                    a["role"],
                    a["verified"],
                    a["entries"],
                    _groups(a.get("head", "")),
                    a["error"] or None,
                ]
                for a in facts["audit"]
            ),  # fmt: skip
            "no audit logs found",
        ),
        "<p class='muted'>Keep this report: the head hashes anchor each chain, so a later "
        "rewrite of a log is detected by <code>bulwark audit verify</code> against them.</p>",
        "<h2 id='obligations'>Measures and the obligations they serve</h2>",
        f"<p class='note'>{escape(facts['obligations']['disclaimer'])}</p>",
        _table(
            ["measure", "serves", "PIPL", "GDPR", "in force in this run"],
            (
                [o["measure"], o["serves"], o["pipl"], o["gdpr"], o["in_force"]]
                for o in facts["obligations"]["rows"]
            ),
            "",
        ),
        "</body></html>\n",
    ]
    return "".join(parts)
