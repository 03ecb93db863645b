from __future__ import annotations

from pathlib import Path

import pytest
from support import job_text, parse

from fl_core.client.policy import OwnerPolicy
from fl_core.errors import ConfigError, PolicyRefused


def test_purpose_and_aggregation_are_checked_at_join() -> None:
    job = parse(job_text())
    OwnerPolicy().check_job(job)
    with pytest.raises(PolicyRefused, match="purpose ''"):
        OwnerPolicy(allowed_purposes=("research",)).check_job(job)
    with pytest.raises(PolicyRefused, match="aggregates with 'mean'; the owner requires"):
        OwnerPolicy(required_aggregation=("secagg",)).check_job(job)
    with pytest.raises(PolicyRefused, match="at most 2"):
        OwnerPolicy(max_rounds=2).check_job(job)


def test_a_plain_update_is_refused_in_a_secure_job() -> None:
    job = parse(job_text(extra="[aggregation]\nkind = 'secagg'\n"))
    policy = OwnerPolicy(required_aggregation=("secagg",))
    policy.check_task(job, stage="secagg.advertise_keys", round=1)
    with pytest.raises(PolicyRefused, match="update in the clear"):
        policy.check_task(job, stage="fit", round=1)
    with pytest.raises(PolicyRefused, match="not part of this job"):
        policy.check_task(job, stage="he.contribute", round=1)
    with pytest.raises(PolicyRefused, match="evaluation"):
        OwnerPolicy(allow_evaluation=False).check_task(job, stage="evaluate", round=1)


def test_policy_file(tmp_path: Path) -> None:
    path = tmp_path / "policy.toml"
    path.write_text('[policy]\nrequired_aggregation = ["secagg"]\nmin_cohort = 5\n')
    policy = OwnerPolicy.from_toml(path)
    assert policy.required_aggregation == ("secagg",) and policy.min_cohort == 5
    path.write_text("[policy]\nmin_cohrot = 5\n")
    with pytest.raises(ConfigError, match="policy.min_cohrot is not a known field"):
        OwnerPolicy.from_toml(path)
    path.write_text('[policy]\nrequired_aggregation = ["magic"]\n')
    with pytest.raises(ConfigError, match="required_aggregation"):
        OwnerPolicy.from_toml(path)
