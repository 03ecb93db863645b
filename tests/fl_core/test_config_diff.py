"""Job files are compared field by field: comments and formatting are no difference."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fl_core.config import describe_differences, job_differences
from fl_core.coordinator.store import Store
from fl_core.errors import ConfigError

JOB = '[job]\nname = "j"\nrounds = 3\n[train]\nlearning_rate = 0.1\n'


def test_comments_order_and_quoting_are_not_differences() -> None:
    reformatted = (
        "# hospital copy\n[train]\nlearning_rate=0.1   # agreed\n[job]\nrounds = 3\nname = 'j'\n"
    )

    assert job_differences(JOB, reformatted) == []
    assert describe_differences(JOB, reformatted) == "they differ only in comments or formatting"


def test_each_differing_field_is_named_with_both_values() -> None:
    other = JOB.replace("rounds = 3", "rounds = 30") + "[sampling]\nmin_clients = 4\n"

    assert job_differences(JOB, other) == ["job.rounds", "sampling.min_clients"]
    assert describe_differences(JOB, other) == (
        "they differ in job.rounds (3 -> 30), sampling.min_clients (unset -> 4)"
    )


def test_a_state_file_of_another_job_names_the_field(tmp_path: Path) -> None:
    weights = np.zeros(3, dtype=np.float32)
    store = Store(tmp_path / "s.db")
    store.open_job("j", config=JOB, initial_weights=weights)

    with pytest.raises(ConfigError, match=r"train\.learning_rate \(0\.1 -> 0\.2\)"):
        store.open_job("j", config=JOB.replace("0.1", "0.2"), initial_weights=weights)
    store.close()
