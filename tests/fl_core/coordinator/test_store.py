from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np
import pytest

from fl_core.coordinator.store import Store
from fl_core.errors import ConfigError, StoreError

W0 = np.arange(5, dtype=np.float32)


def test_new_job_starts_at_round_zero(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.db")
    point = store.open_job("j", config="cfg", initial_weights=W0)
    assert point.completed_round == 0
    np.testing.assert_array_equal(point.weights, W0)


def test_commit_then_reopen_resumes_after_last_round(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    store = Store(path)
    store.open_job("j", config="cfg", initial_weights=W0)
    store.start_attempt("j", 1, 1, ["a", "b"])
    store.commit_round(
        "j", 1, 1, weights=W0 + 1, strategy_state={"m": np.ones(5)}, metrics={"round": 1}
    )
    store.start_attempt("j", 2, 1, ["a", "b"])  # the coordinator "dies" here
    store.close()

    again = Store(path)
    point = again.open_job("j", config="cfg", initial_weights=W0)
    assert point.completed_round == 1
    np.testing.assert_array_equal(point.weights, W0 + 1)
    np.testing.assert_array_equal(point.strategy_state["m"], np.ones(5))
    assert [a["status"] for a in again.attempts("j")] == ["completed", "interrupted"]
    assert again.next_attempt("j", 2) == 2
    assert again.metrics("j") == [{"round": 1}]


def test_a_round_completes_only_once(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.db")
    store.open_job("j", config="cfg", initial_weights=W0)
    store.start_attempt("j", 1, 1, [])
    store.commit_round("j", 1, 1, weights=W0, strategy_state={}, metrics={})
    with pytest.raises(StoreError, match="already completed"):
        store.commit_round("j", 1, 1, weights=W0, strategy_state={}, metrics={})
    assert len(store.metrics("j")) == 1


def test_a_different_job_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    Store(path).open_job("j", config="cfg", initial_weights=W0)
    with pytest.raises(ConfigError, match="different job file"):
        Store(path).open_job("j", config="other", initial_weights=W0)


def test_corrupted_checkpoint_is_detected(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    Store(path).open_job("j", config="cfg", initial_weights=W0)
    db = sqlite3.connect(path)
    db.execute("UPDATE checkpoints SET sha256 = 'x'")
    db.commit()
    db.close()
    with pytest.raises(StoreError, match="checksum"):
        Store(path).resume_point("j")


def test_events_are_logged_in_order(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.db")
    store.open_job("j", config="cfg", initial_weights=W0)
    store.log_event("j", kind="rejected", round=1, client="a", detail="NaN")
    store.log_event("j", kind="refusal", round=1, client="b", detail="budget")
    assert [e["kind"] for e in store.events("j")] == ["rejected", "refusal"]
    assert store.events("j", "refusal")[0]["client"] == "b"
