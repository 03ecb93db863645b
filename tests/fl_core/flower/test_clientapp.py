"""client_app_trainer: a legacy Flower ClientApp (client_fn and mods) as a Bulwark Trainer."""

from __future__ import annotations

import numpy as np
import pytest
from flwr.clientapp import ClientApp
from support import job_text
from support_flower import LinearNumPyClient, numpy_client_app

from fl_core.client.policy import OwnerPolicy
from fl_core.config import parse_job
from fl_core.errors import ConfigError, PolicyRefused
from fl_core.flower import OwnerMod, client_app_trainer
from fl_core.types import FitConfig


def test_the_apps_answers_are_the_clients_own() -> None:
    trainer = client_app_trainer(
        numpy_client_app(), node_config={"partition-id": 3}, names=["w", "b"]
    )
    start = trainer.initial_weights()
    result = trainer.fit(start, FitConfig(round=1, learning_rate=0.05))
    direct, n, _ = LinearNumPyClient(3).fit([start["w"], start["b"]], {"learning-rate": 0.05})
    np.testing.assert_array_equal(result.weights["w"], direct[0])
    assert result.num_examples == n and result.metrics["loss"] > 0
    assert trainer.evaluate(result.weights).num_examples == n


def test_the_apps_mods_run_and_a_refusal_is_a_policy_refusal() -> None:
    mod = OwnerMod(job=parse_job(job_text(rounds=1)), policy=OwnerPolicy(allow_evaluation=False))
    app = numpy_client_app(mods=[mod])
    trainer = client_app_trainer(app, node_config={"partition-id": 0})
    weights = trainer.initial_weights()
    trainer.fit(weights, FitConfig(round=1))  # the mod counts it: the job has one round
    with pytest.raises(PolicyRefused, match="fit number 2: the job agreed to 1 rounds"):
        trainer.fit(weights, FitConfig(round=2))
    with pytest.raises(PolicyRefused, match="does not take part in evaluation"):
        trainer.evaluate(weights)


def test_an_app_that_fails_is_a_config_error() -> None:
    def broken(context):  # type: ignore[no-untyped-def]
        raise RuntimeError("no data here")

    with pytest.raises(ConfigError, match="get_parameters with an error"):
        client_app_trainer(ClientApp(client_fn=broken))
