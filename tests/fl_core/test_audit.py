"""The audit log: appends, what it refuses to record, and every kind of tampering detected."""

from __future__ import annotations

import json
import re
import shutil
import sqlite3
import threading
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fl_core.audit import (
    GENESIS,
    AuditHead,
    AuditLog,
    canonical,
    entry_hash,
    export_audit,
    job_protections,
    read_audit,
    verify_audit,
)
from fl_core.errors import AuditTampered, ConfigError

ENTRIES = 8


def _write(path: Path, n: int = ENTRIES) -> None:
    with AuditLog(path, party="client-0", role="owner") as log:
        for i in range(1, n + 1):
            log.append(
                "release" if i % 2 else "refusal",
                direction="sent" if i % 2 else "refused",
                peer="coordinator",
                job="job-a",
                manifest="ab" * 32,
                round=i,
                stage="fit",
                protections=("aggregation:secagg", "dp:central"),
                epsilon=0.1 * i,
                reason="" if i % 2 else f"reason {i}",
                detail={"bytes": 100 * i, "contributors": ["client-1", "client-2"]},
            )


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("audit") / "template.db"
    _write(path)
    return path


def _copy(template: Path, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / "log.db"
    shutil.copyfile(template, target)
    return target


def _rows(path: Path) -> list[tuple[int, str, str, str]]:
    with sqlite3.connect(path) as db:
        return list(db.execute("SELECT seq, body, prev_hash, hash FROM audit ORDER BY seq"))


def _rewrite(path: Path, rows: list[tuple[int, str, str, str]]) -> None:
    db = sqlite3.connect(path)
    with db:
        db.execute("DELETE FROM audit")
        db.executemany("INSERT INTO audit(seq, body, prev_hash, hash) VALUES(?,?,?,?)", rows)
    db.close()


# --- appends -------------------------------------------------------------------------------------


def test_a_fresh_log_verifies_and_exports_its_entries(tmp_path: Path) -> None:
    # Prepare
    path = tmp_path / "a.db"
    _write(path, 3)
    # Execute
    head = verify_audit(path)
    lines = [json.loads(line) for line in export_audit(path)]
    # Assert
    assert head.entries == 3
    assert head.hash == lines[-1]["hash"]
    assert [e["seq"] for e in lines] == [1, 2, 3]
    assert lines[0]["prev_hash"] == GENESIS and lines[1]["prev_hash"] == lines[0]["hash"]
    assert lines[1]["reason"] == "reason 2" and lines[2]["epsilon"] == pytest.approx(0.3)
    assert lines[0]["protections"] == ["aggregation:secagg", "dp:central"]
    assert lines[0]["party"] == "client-0" and lines[0]["role"] == "owner"


def test_reopening_appends_to_the_same_chain(tmp_path: Path) -> None:
    path = tmp_path / "a.db"
    _write(path, 2)
    with AuditLog(path, party="client-0", role="owner") as log:
        entry = log.append("job_done", direction="local")
    assert entry.seq == 3
    assert verify_audit(path).entries == 3


def test_threads_appending_at_once_keep_one_chain(tmp_path: Path) -> None:
    path = tmp_path / "a.db"
    with AuditLog(path, party="coordinator", role="coordinator") as log:
        threads = [
            threading.Thread(target=lambda: [log.append("x", direction="local") for _ in range(5)])
            for _ in range(4)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert verify_audit(path).entries == 20


def test_a_log_of_another_party_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "a.db"
    _write(path, 1)
    with pytest.raises(ConfigError, match="audit log of owner 'client-0'"):
        AuditLog(path, party="client-1", role="owner")


@pytest.mark.parametrize(
    "value",
    [b"\x00" * 32, np.zeros(3, np.float32), {"nested": 1}, "x" * 5000, float("nan")],
    ids=["bytes", "array", "dict", "long-text", "nan"],
)
def test_data_keys_and_updates_cannot_be_recorded(tmp_path: Path, value: object) -> None:
    with AuditLog(tmp_path / "a.db", party="p", role="owner") as log:
        with pytest.raises(ConfigError, match="audit entry"):
            log.append("release", direction="sent", detail={"update": value})
        assert log.head() == AuditHead(0, GENESIS)  # nothing was written


def test_bad_direction_and_round_are_named(tmp_path: Path) -> None:
    with AuditLog(tmp_path / "a.db", party="p", role="owner") as log:
        with pytest.raises(ConfigError, match="direction"):
            log.append("x", direction="sideways")
        with pytest.raises(ConfigError, match="round"):
            log.append("x", direction="local", round=-1)


def test_a_file_that_is_not_a_log_is_named(tmp_path: Path) -> None:
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"not sqlite at all" * 100)
    with pytest.raises(ConfigError, match="not an audit log"):
        verify_audit(junk)
    with pytest.raises(ConfigError, match="no audit log"):
        verify_audit(tmp_path / "missing.db")


def test_protection_labels() -> None:
    assert job_protections(
        aggregation="secagg", dp_mode="distributed", secagg_adversary="malicious", tls=True
    ) == ("aggregation:secagg", "secagg:malicious", "dp:distributed", "tls")
    assert job_protections(aggregation="mean", dp_mode="none", tls=False) == (
        "aggregation:mean",
        "no-tls",
    )


# --- tampering: each kind, named ------------------------------------------------------------------


def test_an_edited_entry_is_named(template: Path, tmp_path: Path) -> None:
    path = _copy(template, tmp_path)
    rows = _rows(path)
    seq, body, prev, digest = rows[3]
    rows[3] = (seq, body.replace('"epsilon":0.4', '"epsilon":0.0'), prev, digest)
    _rewrite(path, rows)
    with pytest.raises(AuditTampered, match="entry 4 does not match its hash: edited"):
        verify_audit(path)


def test_a_deleted_entry_is_named(template: Path, tmp_path: Path) -> None:
    path = _copy(template, tmp_path)
    rows = _rows(path)
    del rows[2]
    _rewrite(path, rows)
    with pytest.raises(AuditTampered, match="entry 3 is missing"):
        verify_audit(path)


def test_a_deleted_then_renumbered_entry_is_named(template: Path, tmp_path: Path) -> None:
    path = _copy(template, tmp_path)
    rows = _rows(path)
    del rows[2]
    _rewrite(path, [(i + 1, b, p, h) for i, (_, b, p, h) in enumerate(rows)])
    with pytest.raises(AuditTampered, match="entry 3 holds the content of entry 4"):
        verify_audit(path)


def test_an_inserted_entry_with_a_correct_hash_is_caught_after_it(
    template: Path, tmp_path: Path
) -> None:
    # The forger even computes the inserted entry's hash; the entry after it no longer fits.
    path = _copy(template, tmp_path)
    rows = _rows(path)
    body = json.loads(rows[1][1])
    body.update(seq=3, kind="consent", reason="forged")
    forged_body = canonical(body)
    forged = (3, forged_body, rows[1][3], entry_hash(rows[1][3], forged_body))
    shifted = [(s + 1, b, p, h) for s, b, p, h in rows[2:]]
    _rewrite(path, [*rows[:2], forged, *shifted])
    with pytest.raises(AuditTampered, match="entry 4 holds the content of entry 3"):
        verify_audit(path)


def test_reordered_entries_are_named(template: Path, tmp_path: Path) -> None:
    path = _copy(template, tmp_path)
    rows = _rows(path)
    a, b = rows[4], rows[5]
    rows[4], rows[5] = (5, b[1], b[2], b[3]), (6, a[1], a[2], a[3])
    _rewrite(path, rows)
    with pytest.raises(AuditTampered, match="entry 5 holds the content of entry 6"):
        verify_audit(path)


def test_entries_cut_off_the_end_are_caught_by_the_anchor(template: Path, tmp_path: Path) -> None:
    path = _copy(template, tmp_path)
    anchor = verify_audit(path)
    rows = _rows(path)
    _rewrite(path, rows[:-2])
    assert verify_audit(path).entries == ENTRIES - 2  # a valid shorter chain on its own
    with pytest.raises(AuditTampered, match=f"entry {ENTRIES - 1} is missing"):
        verify_audit(path, anchor=anchor)


def test_a_recomputed_chain_is_caught_by_the_anchor(template: Path, tmp_path: Path) -> None:
    path = _copy(template, tmp_path)
    anchor = verify_audit(path)
    rows, prev, out = _rows(path), GENESIS, []
    for seq, body, _, _ in rows:
        body = body.replace('"epsilon":0.1', '"epsilon":0.0') if seq == 1 else body
        digest = entry_hash(prev, body)
        out.append((seq, body, prev, digest))
        prev = digest
    _rewrite(path, out)
    assert verify_audit(path).entries == ENTRIES
    with pytest.raises(AuditTampered, match=f"entry {ENTRIES} is not the entry recorded"):
        verify_audit(path, anchor=anchor)


# --- property: any single edit, deletion, insertion or swap is detected ------------------------

EDITS = st.sampled_from(["edit", "delete", "delete_renumber", "insert", "swap"])


@given(
    kind=EDITS, where=st.integers(0, ENTRIES - 1), other=st.integers(1, ENTRIES - 1), data=st.data()
)
def test_any_tampering_is_detected_at_or_right_after_it(
    template: Path,
    tmp_path_factory: pytest.TempPathFactory,
    kind: str,
    where: int,
    other: int,
    data: st.DataObject,
) -> None:
    # Prepare: one random change to an honest log (positions are 0-based, entries 1-based)
    path = _copy(template, tmp_path_factory.mktemp("prop"))
    rows = _rows(path)
    first = where + 1
    if kind == "edit":
        seq, body, prev, digest = rows[where]
        field = data.draw(st.sampled_from(["peer", "reason", "kind", "job"]))
        raw = json.loads(body)
        raw[field] = str(raw[field]) + "!"
        rows[where] = (seq, canonical(raw), prev, digest)
        allowed = {first}
    elif kind == "delete":
        if where == ENTRIES - 1:
            where -= 1  # cutting the last entry off is the anchor's job (tested above)
        del rows[where]
        first, allowed = where + 1, {where + 1}
    elif kind == "delete_renumber":
        where = min(where, ENTRIES - 2)
        del rows[where]
        rows = [(i + 1, b, p, h) for i, (_, b, p, h) in enumerate(rows)]
        allowed = {where + 1}
    elif kind == "insert":
        raw = json.loads(rows[where][1])
        raw.update(seq=first, reason="forged")
        body = canonical(raw)
        prev = rows[where - 1][3] if where else GENESIS
        valid_hash = data.draw(st.booleans())
        digest = entry_hash(prev, body) if valid_hash else "f" * 64
        shifted = [(s + 1, b, p, h) for s, b, p, h in rows[where:]]
        rows = [*rows[:where], (first, body, prev, digest), *shifted]
        allowed = {first + 1} if valid_hash else {first}
    else:  # swap two different entries' contents in place
        j = (where + other) % ENTRIES
        i, j = sorted((where, j))
        a, b = rows[i], rows[j]
        rows[i], rows[j] = (a[0], b[1], b[2], b[3]), (b[0], a[1], a[2], a[3])
        allowed = {i + 1}
    _rewrite(path, rows)
    # Execute
    with pytest.raises(AuditTampered) as caught:
        verify_audit(path)
    # Assert: the message names the first entry out of place
    named = re.search(r"entry (\d+)", str(caught.value))
    assert named is not None and int(named.group(1)) in allowed, (kind, str(caught.value))


def test_read_audit_reports_the_party(template: Path) -> None:
    info, entries = read_audit(template)
    assert (info.party, info.role) == ("client-0", "owner")
    assert len(entries) == ENTRIES and entries[0].detail["contributors"] == ["client-1", "client-2"]
