"""`simulate` starts a key holder for HE-aggregated training: same model as plain FedAvg."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fl_core.config import load_job, parse_job
from fl_core.simulation import simulate

ROOT = Path(__file__).resolve().parents[2]


def test_simulated_he_training_matches_plain_fedavg(tmp_path: Path) -> None:
    he_text = (ROOT / "examples" / "he_training" / "job.toml").read_text()
    he_job = parse_job(he_text.replace("rounds = 10", "rounds = 2"))
    plain_text = (ROOT / "examples" / "breast_cancer" / "job.toml").read_text()
    plain_job = parse_job(plain_text.replace("rounds = 10", "rounds = 2"))
    assert load_job(ROOT / "examples" / "he_training" / "job.toml").aggregation.kind == "he"

    encrypted = simulate(he_job, output=tmp_path / "he")
    plain = simulate(plain_job, output=tmp_path / "plain")

    assert encrypted.done.status == "completed", encrypted.done.reason
    assert [r["num_clients"] for r in encrypted.rounds] == [5, 5]
    assert all(float(str(r["he_tolerance"])) < 1e-6 for r in encrypted.rounds)
    for name, value in plain.weights.items():
        np.testing.assert_allclose(encrypted.weights[name], value, rtol=0, atol=1e-6)
    assert encrypted.rounds[-1]["accuracy"] == plain.rounds[-1]["accuracy"]
    assert (tmp_path / "he" / "model.safetensors").exists()
