from __future__ import annotations

from pathlib import Path

import pytest

from fl_core.config import load_job, parse_job
from fl_core.errors import ConfigError

MINIMAL = """
[job]
name = "j"
[data]
dataset = "breast_cancer"
[model]
name = "logreg"
"""

EXAMPLES = sorted(Path(__file__).resolve().parents[2].glob("examples/*/job*.toml"))


def test_minimal_job_gets_defaults() -> None:
    job = parse_job(MINIMAL)
    assert job.job.rounds == 3
    assert job.strategy.name == "fedavg"
    assert job.aggregation.kind == "mean"
    assert len(job.sha256) == 64


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.parent.name + "/" + p.name)
def test_example_job_files_parse(path: Path) -> None:
    assert load_job(path).job.name


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ("[strategy]\nname = 'fedsgd'", "strategy.name = 'fedsgd' is not allowed; expected one of"),
        ("[train]\nlearning_rate = -1.0", "train.learning_rate = -1.0"),
        ("[train]\nepochs = '2'", "train.epochs = '2' has type str; expected int"),
        ("[train]\nlr = 0.1", "train.lr is not a known field; allowed fields"),
        ("[bogus]\nx = 1", r"\[bogus\] is not a known table"),
        ("[sampling]\nfraction = 1.5", "sampling.fraction = 1.5"),
        ("[model]\nname = 'cnn'", "not valid TOML"),
        ("[strategy]\nname = 'fedprox'", "strategy.proximal_mu"),
    ],
)
def test_bad_fields_are_named(extra: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_job(MINIMAL + extra)


def test_missing_required_table_and_field() -> None:
    with pytest.raises(ConfigError, match=r"\[model\] is required"):
        parse_job("[job]\nname='j'\n[data]\ndataset='x'\n")
    with pytest.raises(ConfigError, match="job.name is required"):
        parse_job("[job]\nrounds=2\n[data]\ndataset='x'\n[model]\nname='m'\n")


def test_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read job file"):
        load_job(tmp_path / "missing.toml")
