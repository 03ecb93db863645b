"""OwnerMod on Flower messages: the owner's numbers, not the server's, and the ledger first."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import flwr.compat.common.recorddict_compat as compat
import numpy as np
import pytest
from flwr.app import Context, Message, MessageType, RecordDict
from flwr.client.mod import fixedclipping_mod
from flwr.common import EvaluateIns, FitIns, ndarrays_to_parameters, parameters_to_ndarrays
from flwr.common.constant import ErrorCode
from flwr.supercore.task_identity import TaskIdentity
from support import job_text
from support_flower import LinearNumPyClient, numpy_client_app

from fl_core.client.ledger import PrivacyLedger
from fl_core.client.policy import OwnerPolicy
from fl_core.config import parse_job
from fl_core.dp.central import add_central_noise
from fl_core.dp.clipping import clip_update
from fl_core.dp.noise import csprng
from fl_core.errors import ConfigError, PolicyRefused
from fl_core.flower import OwnerMod

CLIP = 0.1
DP = f"""
[dp]
mode = "central"
noise_multiplier = 0.8
clip = {CLIP}
"""
SEED = bytes(range(16))
START = [np.full(4, 0.1, np.float32), np.zeros(1, np.float32)]


@pytest.fixture(autouse=True)
def task_identity(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Flower builds messages under a process-wide task identity; set one for these tests."""
    for name, value in (("_run_id", 1), ("_node_id", 0), ("_task_id", 1)):
        monkeypatch.setattr(TaskIdentity, name, value)
    yield


def _job(extra: str = DP, rounds: int = 2):
    return parse_job(job_text(rounds=rounds, extra=extra))


def _ledger(tmp_path: Path, *, epsilon: float = 1e3) -> Path:
    path = tmp_path / "ledger.db"
    with PrivacyLedger(path) as ledger:
        ledger.set_cap("synthetic", epsilon=epsilon, delta=1e-5)
    return path


def _context() -> Context:
    return Context(
        run_id=1, node_id=7, node_config={"partition-id": 2}, state=RecordDict(), run_config={}
    )


def _fit_message(config: dict[str, Any] | None = None, params: list[np.ndarray] = START) -> Message:
    ins = FitIns(ndarrays_to_parameters(params), dict(config or {}))
    content = compat.fitins_to_recorddict(ins, True)
    return Message(content, dst_node_id=7, message_type=MessageType.TRAIN)


def _released(reply: Message) -> tuple[np.ndarray, int, dict[str, Any]]:
    res = compat.recorddict_to_fitres(reply.content, True)
    flat = np.concatenate([a.reshape(-1) for a in parameters_to_ndarrays(res.parameters)])
    return flat, res.num_examples, dict(res.metrics)


def _true_update() -> np.ndarray:
    new, _, _ = LinearNumPyClient(2).fit([a.copy() for a in START], {})
    return np.concatenate([a.reshape(-1) for a in new]) - np.concatenate(START)


def test_a_server_chosen_clipping_norm_is_ignored(tmp_path: Path) -> None:
    # Prepare: the server claims the norm Flower's DP wrapper would send, 1e6
    claim = {"clipping_norm": 1e6, "server-round": 1}
    flat_start = np.concatenate(START)
    # Execute (Flower's own mod): the update leaves unclipped, the attack works there
    flower, _, _ = _released(fixedclipping_mod(_fit_message(claim), _context(), numpy_client_app()))
    mod = OwnerMod(job=_job(), ledger=_ledger(tmp_path), rng=lambda: csprng(seed=SEED))
    ours, weight, metrics = _released(mod(_fit_message(claim), _context(), numpy_client_app()))
    # Assert: Flower's release is the raw update; ours is clipped to the owner's C and noised
    np.testing.assert_allclose(flower - flat_start, _true_update(), rtol=0, atol=1e-6)
    assert np.linalg.norm(flower - flat_start) > 5 * CLIP
    clipped, norm = clip_update(_true_update().astype(np.float32), clip=CLIP)
    noise_std = mod.plan.noise_multiplier * CLIP if mod.plan else 0.0
    assert noise_std == pytest.approx(0.08)
    expected = flat_start + add_central_noise(
        clipped, clip=CLIP, noise_multiplier=0.8, rng=csprng(seed=SEED)
    )
    np.testing.assert_allclose(ours, expected, rtol=0, atol=1e-6)
    assert weight == 1  # the example count is not released
    assert metrics["update_norm"] == pytest.approx(norm) and metrics["epsilon"] > 0


def test_the_ledger_is_charged_before_the_release_and_refuses_over_the_cap(
    tmp_path: Path,
) -> None:
    # Prepare: a cap that one round of z = 0.8 fits in and two do not
    job = _job()
    mod = OwnerMod(job=job, ledger=_ledger(tmp_path, epsilon=6.0))
    ctx = _context()
    # Execute
    first = mod(_fit_message(), ctx, numpy_client_app())
    second = mod(_fit_message(), ctx, numpy_client_app())
    # Assert
    assert not first.has_error()
    assert second.has_error() and second.error.code == ErrorCode.MOD_FAILED_PRECONDITION
    assert "BudgetExceeded" in second.error.reason and "above the cap 6" in second.error.reason
    with PrivacyLedger(tmp_path / "ledger.db") as ledger:
        entries = ledger.entries("synthetic")
    assert [(e.job, e.round, e.mechanism) for e in entries] == [
        (job.job.name, 1, "dp-fedavg-central")
    ]
    assert _released(first)[2]["epsilon"] == pytest.approx(entries[0].epsilon_total)


def test_the_owner_counts_its_releases_whatever_round_the_server_claims(tmp_path: Path) -> None:
    mod = OwnerMod(job=_job(extra="", rounds=2))
    ctx = _context()
    replies = [mod(_fit_message({"server-round": 1}), ctx, numpy_client_app()) for _ in range(3)]
    assert [r.has_error() for r in replies] == [False, False, True]
    assert "fit number 3: the job agreed to 2 rounds" in replies[2].error.reason


def test_without_dp_the_app_reply_passes_unchanged() -> None:
    mod = OwnerMod(job=_job(extra=""))
    plain = numpy_client_app()(_fit_message(), _context())
    through = mod(_fit_message(), _context(), numpy_client_app())
    np.testing.assert_array_equal(_released(through)[0], _released(plain)[0])
    assert _released(through)[1] == LinearNumPyClient(2).examples


def test_policy_refuses_the_job_and_evaluation() -> None:
    with pytest.raises(PolicyRefused, match="purpose"):
        OwnerMod(job=_job(extra=""), policy=OwnerPolicy(allowed_purposes=("cancer-research",)))
    mod = OwnerMod(job=_job(extra=""), policy=OwnerPolicy(allow_evaluation=False))
    ins = EvaluateIns(ndarrays_to_parameters(START), {})
    msg = Message(
        compat.evaluateins_to_recorddict(ins, True),
        dst_node_id=7,
        message_type=MessageType.EVALUATE,
    )
    reply = mod(msg, _context(), numpy_client_app())
    assert reply.has_error() and "does not take part in evaluation" in reply.error.reason


def test_an_update_in_the_clear_is_refused_when_the_owner_agreed_to_secagg() -> None:
    job = _job(extra='[aggregation]\nkind = "secagg"\n[secagg]\nclip = 10.0\nmax_weight = 1000\n')
    reply = OwnerMod(job=job)(_fit_message(), _context(), numpy_client_app())
    assert reply.has_error() and "update in the clear" in reply.error.reason


def test_bad_server_parameters_are_refused_with_a_reason(tmp_path: Path) -> None:
    mod = OwnerMod(job=_job(), ledger=_ledger(tmp_path))
    bad = [np.full(4, np.nan, np.float32), np.zeros(1, np.float32)]
    reply = mod(_fit_message(params=bad), _context(), numpy_client_app())
    assert reply.has_error() and "the server's parameters: array 0 has NaN" in reply.error.reason


def test_unsupported_settings_are_refused_at_construction() -> None:
    with pytest.raises(ConfigError, match="needs a ledger"):
        OwnerMod(job=_job())
    distributed = DP.replace('"central"', '"distributed"').replace("noise_multiplier", "epsilon")
    extra = distributed + '[aggregation]\nkind = "secagg"\n[secagg]\nclip = 10.0\n'
    with pytest.raises(ConfigError, match="not supported by the Flower mod"):
        OwnerMod(job=_job(extra=extra))


def test_a_train_message_that_is_no_fit_instruction_is_refused(tmp_path: Path) -> None:
    from flwr.app import ConfigRecord

    content = RecordDict({"secaggplus": ConfigRecord({"stage": "setup"})})  # SecAgg+'s first stage
    msg = Message(content, dst_node_id=7, message_type=MessageType.TRAIN)
    reply = OwnerMod(job=_job(), ledger=_ledger(tmp_path))(msg, _context(), numpy_client_app())
    assert reply.has_error() and "fit message cannot be read" in reply.error.reason


def test_the_mod_pickles_without_its_ledger_connections(tmp_path: Path) -> None:
    import pickle

    mod = OwnerMod(job=_job(), ledger=_ledger(tmp_path))
    assert not mod(_fit_message(), _context(), numpy_client_app()).has_error()  # opens the ledger
    copy = pickle.loads(pickle.dumps(mod))
    assert copy.plan == mod.plan
    assert not copy(_fit_message(), _context(), numpy_client_app()).has_error()
