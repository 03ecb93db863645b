"""The [he] and [stats] sections of a job file, and owner policies for HE jobs."""

from __future__ import annotations

import re

import pytest
from support import job_text, parse
from support_he import stats_job, stats_job_text

from fl_core.client.policy import OwnerPolicy
from fl_core.config import NO_MODEL, parse_job
from fl_core.errors import ConfigError, PolicyRefused


def test_a_statistics_job_needs_no_model_and_runs_once() -> None:
    job = stats_job()
    assert job.job.kind == "stats" and job.job.rounds == 1
    assert job.model.name == NO_MODEL
    assert job.stats is not None
    spec = job.stats.spec()
    assert spec.max_owners == 8 and "target" in spec.columns
    assert job.he.min_contributors == 3 and job.he.ckks == "ckks_8192"


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ("seed = 5", "seed = 5\nrounds = 3", "job.rounds = 3 is not allowed; expected 1"),
        ("min_contributors = 3", "min_contributors = 1", "he.min_contributors = 1"),
        ("min_contributors = 3", "min_contributors = 3\nbfv = 'bfv_2048'", "he.bfv = 'bfv_2048'"),
        ("min_contributors = 3", "min_contributors = 3\nflood_bits = 10", "he.flood_bits = 10"),
        ("min_contributors = 3", "min_contributors = 3\nkeyholder_key = 'ab'", "he.keyholder_key"),
        ("max_owners = 8", "max_owners = 1", "stats: max_owners must be an integer in"),
        ("max_rows_per_owner = 1000", "max_rows_per_owner = 'many'", "stats: max_rows_per_owner"),
        ('out_of_range = "clip"', 'out_of_range = "drop"', "stats: statistics or out_of_range"),
        ("age = [0, 120]", "age = [120, 0]", "stats: clip.age must be finite numbers"),
        ("[stats.ols]", "[stats.ols]\nweights = 1", "stats: unknown key(s) in ols"),
    ],
)
def test_a_wrong_he_or_stats_field_is_named(old: str, new: str, message: str) -> None:
    text = stats_job_text()
    assert old in text
    with pytest.raises(ConfigError, match=re.escape(message)):
        parse_job(text.replace(old, new, 1))


def test_stats_and_kind_go_together() -> None:
    with pytest.raises(ConfigError, match="job.kind = 'census' is not allowed"):
        parse(job_text().replace("[job]\n", '[job]\nkind = "census"\n'))
    with pytest.raises(ConfigError, match=r"\[stats\] is required for job.kind = 'stats'"):
        parse_job('[job]\nname = "s"\nkind = "stats"\n[data]\ndataset = "diabetes"\n')
    with pytest.raises(ConfigError, match=r"\[stats\] is only allowed with job.kind = 'stats'"):
        parse_job(
            stats_job_text().replace('kind = "stats"', 'kind = "train"') + "[model]\nname='x'\n"
        )


def test_policies_for_he_jobs() -> None:
    job = stats_job(k=3)
    policy = OwnerPolicy(required_aggregation=("secagg", "he"))
    policy.check_job(job)  # a statistics job always encrypts
    policy.check_task(job, stage="he.contribute", round=1)
    for stage in ("fit", "evaluate", "he.decrypt", "secagg.advertise_keys"):
        with pytest.raises(PolicyRefused):
            policy.check_task(job, stage=stage, round=1)
    with pytest.raises(PolicyRefused, match="below the owner's minimum cohort of 4"):
        OwnerPolicy(min_cohort=4).check_job(job)
    with pytest.raises(PolicyRefused, match="owner requires one of \\['secagg'\\]"):
        OwnerPolicy(required_aggregation=("secagg",)).check_job(job)
    training = parse(job_text(extra="[aggregation]\nkind = 'he'\n"))
    OwnerPolicy(required_aggregation=("he",)).check_task(training, stage="he.contribute", round=1)
    with pytest.raises(PolicyRefused, match="update in the clear"):
        OwnerPolicy().check_task(training, stage="fit", round=1)


def test_trusted_key_holders_must_be_ed25519_keys_in_hex() -> None:
    OwnerPolicy(trusted_keyholders=("ab" * 32,))
    with pytest.raises(ConfigError, match="policy.trusted_keyholders: 'xyz'"):
        OwnerPolicy(trusted_keyholders=("xyz",))
