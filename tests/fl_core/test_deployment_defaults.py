"""A deployment with a roster assumes a malicious coordinator unless the job file says otherwise."""

from __future__ import annotations

from support import job_text, parse

import mpc
from fl_core.aggregators.secure_sum import round_parameters
from fl_core.config import with_deployment_defaults
from fl_core.errors import ConfigError

SECAGG = '[aggregation]\nkind = "secagg"\n[secagg]\nclip = 10.0\n'


def test_unset_adversary_becomes_malicious_with_the_same_hash() -> None:
    job = parse(job_text(clients=20, min_clients=20, extra=SECAGG))
    assert job.secagg.adversary == "semi_honest"
    deployed = with_deployment_defaults(job)
    assert deployed.secagg.adversary == "malicious"
    assert deployed.sha256 == job.sha256  # the file the owners agreed to is the same
    honest, _ = round_parameters(job.secagg, 20, modular=False)
    strict, _ = round_parameters(deployed.secagg, 20, modular=False)
    assert strict.threshold > honest.threshold  # fewer dropouts tolerated, lies bounded


def test_a_job_that_sets_the_adversary_keeps_it() -> None:
    job = parse(job_text(extra=SECAGG + 'adversary = "semi_honest"\n'))
    assert with_deployment_defaults(job).secagg.adversary == "semi_honest"


def test_malicious_takes_the_strictest_thresholds() -> None:
    for n in (5, 20, 100, 1000):
        a = mpc.find_parameters(
            num_clients=n, dropout_rate=0.1, corrupt_rate=0.05, adversary="malicious"
        )
        b = mpc.find_parameters(
            num_clients=n, dropout_rate=0.1, corrupt_rate=0.05, adversary="semi_malicious"
        )
        assert (a.threshold, a.degree) == (b.threshold, b.degree)
        assert a.semi_malicious


def test_an_unknown_adversary_is_named() -> None:
    import pytest

    with pytest.raises(ConfigError, match="secagg.adversary"):
        parse(job_text(extra=SECAGG + 'adversary = "evil"\n'))
