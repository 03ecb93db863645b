"""Withdrawn records: kept as keyed digests in the ledger's chain, left out of later tasks."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from support import job_text

from fl_core.client.consent import DataUse, render_withdrawals, withdrawn_mask
from fl_core.client.ledger import PrivacyLedger
from fl_core.config import parse_job
from fl_core.data import ClientData
from fl_core.errors import ConfigError, LedgerTampered, PolicyRefused
from fl_core.owner import load_owner_data
from fl_core.simulation import client_shares, job_dataset


def test_a_withdrawal_is_chained_and_stores_no_id(tmp_path: Path) -> None:
    # Prepare
    path = tmp_path / "ledger.db"
    with PrivacyLedger(path) as book:
        book.record_use(job="j", round=1, dataset="d", rows=10)
        book.record_use(job="j", round=2, dataset="d", rows=10)
        book.record_use(job="j", round=1, dataset="other", rows=3)

        # Execute
        first = book.withdraw("d", ["patient-17", "patient-18"])
        again = book.withdraw("d", ["patient-17", "patient-99"])

        # Assert
        assert (first.requested, first.new, first.rounds_used) == (2, 2, (("j", 1), ("j", 2)))
        assert (again.requested, again.new) == (2, 1)
        assert len(book.withdrawn("d")) == 3 and not book.withdrawn("other")
        assert [w.id for w in book.withdrawals("d")] == [first.id, again.id]
        assert book.verify() > 0
    stored = b"".join(p.read_bytes() for p in tmp_path.glob("ledger.db*"))
    assert b"patient-17" not in stored and b"patient-99" not in stored
    assert "j:1, j:2" in render_withdrawals([first])


def test_an_edited_withdrawal_fails_closed(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    with PrivacyLedger(path) as book:
        book.withdraw("d", ["a", "b"])
    db = sqlite3.connect(path)
    db.execute("UPDATE audit SET payload = replace(payload, '\"new\":2', '\"new\":0')")
    db.commit()
    db.close()
    with pytest.raises(LedgerTampered, match="hash chain"):
        withdrawn_mask(path, "d")


def test_bad_ids_are_named(tmp_path: Path) -> None:
    with PrivacyLedger(tmp_path / "l.db") as book:
        with pytest.raises(ConfigError, match="at least one record id"):
            book.withdraw("d", [])
        with pytest.raises(ConfigError, match="a record id"):
            book.withdraw("d", ["ok", ""])


@given(
    # Record ids are text lines: no control characters (numpy str_ drops trailing NULs).
    ids=st.lists(
        st.text(st.characters(blacklist_categories=("Cc", "Cs")), min_size=1, max_size=12),
        min_size=1,
        max_size=30,
        unique=True,
    ),
    data=st.data(),
)
def test_the_mask_marks_exactly_the_withdrawn_ids(
    tmp_path_factory: pytest.TempPathFactory, ids: list[str], data: st.DataObject
) -> None:
    gone = data.draw(st.lists(st.sampled_from(ids), unique=True))
    path = tmp_path_factory.mktemp("l") / "l.db"
    if gone:
        with PrivacyLedger(path) as book:
            book.withdraw("d", gone)
    mask = withdrawn_mask(path, "d")
    marked = np.zeros(len(ids), dtype=bool) if mask is None else mask(np.array(ids, dtype=np.str_))
    assert [i for i, m in zip(ids, marked, strict=True) if m] == [i for i in ids if i in gone]


def _job():  # type: ignore[no-untyped-def]
    return parse_job(job_text(rounds=1).replace('"synthetic"', '"breast_cancer"'))


def test_a_canary_never_reaches_a_later_share_and_others_stay(tmp_path: Path) -> None:
    # Prepare: the canary is a training row of owner 0's share
    job = _job()
    full = client_shares(job, job_dataset(job))
    assert full[0].ids_train is not None
    canary = str(full[0].ids_train[3])
    with PrivacyLedger(tmp_path / "l.db") as book:
        book.withdraw(job.data.dataset, [canary])

    # Execute
    share = load_owner_data(
        job, partition=0, data=None, withdrawn=withdrawn_mask(tmp_path / "l.db", job.data.dataset)
    )

    # Assert: exactly the canary is gone, from every split; the others' shares are unchanged
    assert canary not in share.record_ids()
    assert share.num_train == full[0].num_train - 1 and share.num_test == full[0].num_test
    assert set(share.record_ids()) == set(full[0].record_ids()) - {canary}
    rest = client_shares(job, job_dataset(job), withdrawn=lambda ids: ids == canary)[1]
    assert rest.record_ids() == full[1].record_ids()


def test_data_without_ids_cannot_be_filtered() -> None:
    share = ClientData(
        x_train=np.zeros((2, 1), np.float32), y_train=np.zeros(2, np.int64),
        x_test=np.zeros((1, 1), np.float32), y_test=np.zeros(1, np.int64),
    )  # fmt: skip
    with pytest.raises(ConfigError, match="no record ids"):
        share.without(lambda ids: np.zeros(len(ids), dtype=bool))


def test_a_withdrawal_after_loading_refuses_the_next_task(tmp_path: Path) -> None:
    path = tmp_path / "l.db"
    use = DataUse(ledger=path, dataset="d", ids=("a", "b", "c"), rows=3)
    use.check()
    use.record(job="j", round=1)
    use.record(job="j", round=1)  # once per round
    with PrivacyLedger(path) as book:
        assert [u["rows"] for u in book.uses("d")] == [3]
        book.withdraw("d", ["b"])
    with pytest.raises(PolicyRefused, match="1 records of data set 'd' were withdrawn after"):
        use.check()
