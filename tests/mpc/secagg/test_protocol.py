"""End-to-end SecAgg / SecAgg+ rounds in process: exact sums under dropouts, aborts, freshness."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from hypothesis import event, given
from scipy import stats
from strategies import RoundPlan, round_plans

from mpc import (
    CoordinatorMisbehaviour,
    InvalidMessage,
    ProtocolAbort,
    RingVector,
    SecAggParams,
    SecAggServer,
    Stage,
    dequantize_sum,
    find_parameters,
    quantize,
)
from tests.mpc.secagg.secagg_harness import (
    STAGES,
    expected_outcome,
    make_round,
    plain_sum,
    run_round,
)


def _params(plan: RoundPlan) -> SecAggParams:
    return SecAggParams(
        num_clients=plan.num_clients,
        threshold=plan.threshold,
        degree=plan.degree,
        dropout_rate=plan.dropout_rate,
        corrupt_rate=0.0,
        ring_bits=plan.ring_bits,
    )


def _quantized_inputs(plan: RoundPlan, *, bits: int) -> dict[int, np.ndarray]:
    rng = np.random.default_rng(plan.seed)
    return {
        i: quantize(
            rng.normal(0.0, 1.0, plan.vector_length).astype(np.float32),
            clip=2.0,
            bits=bits,
            ring_bits=plan.ring_bits,
            rng=rng,
        )
        for i in range(1, plan.num_clients + 1)
    }


@given(plan=round_plans())
def test_unmasked_sum_is_exact_or_round_aborts_as_the_oracle_says(plan: RoundPlan) -> None:
    # Prepare
    params = _params(plan)
    rnd = make_round(params, vector_length=plan.vector_length, seed=plan.seed)
    inputs = _quantized_inputs(plan, bits=16)

    # Execute
    try:
        result = run_round(rnd, inputs, plan.drop_stage)
        outcome: Stage | None = None
    except ProtocolAbort as exc:
        outcome = Stage(exc.stage)
    expected = expected_outcome(params, rnd.server.neighbours, plan.drop_stage)

    # Assert
    event(f"aborted at {outcome}" if outcome else "summed")
    assert outcome == expected.abort_stage
    if outcome is None:
        assert result.survivors == expected.members
        assert dict(result.dropped) == expected.dropped
        expected_total = plain_sum(inputs, result.survivors, plan.ring_bits)
        np.testing.assert_array_equal(result.total, expected_total)


@given(plan=round_plans(max_drops=0))
def test_without_dropouts_every_client_is_summed(plan: RoundPlan) -> None:
    # Prepare
    rnd = make_round(_params(plan), vector_length=plan.vector_length, seed=plan.seed)
    rng = np.random.default_rng(plan.seed)
    dtype = np.uint32 if plan.ring_bits == 32 else np.uint64
    inputs = {
        i: rng.integers(0, np.iinfo(dtype).max, plan.vector_length, dtype=dtype, endpoint=True)
        for i in range(1, plan.num_clients + 1)
    }

    # Execute
    result = run_round(rnd, inputs)

    # Assert: arbitrary ring elements, so the sum wraps around and must still be exact.
    assert result.survivors == tuple(range(1, plan.num_clients + 1))
    np.testing.assert_array_equal(result.total, plain_sum(inputs, result.survivors, plan.ring_bits))
    assert all(result.dropped[s] == () for s in Stage)


@pytest.mark.parametrize("drop_position", [0, 1, 2, 3, 4])
def test_full_graph_tolerates_exactly_n_minus_t_dropouts_at_each_stage(drop_position: int) -> None:
    # Prepare: n = 7, t = 4; dropping 3 is tolerated, dropping 4 is not.
    params = SecAggParams(
        num_clients=7, threshold=4, degree=6, dropout_rate=3 / 7 + 1e-9, corrupt_rate=0.0
    )
    inputs = {i: np.full(5, i, dtype=np.uint32) for i in range(1, 8)}

    # Execute
    ok = run_round(
        make_round(params, vector_length=5), inputs, dict.fromkeys((1, 2, 3), drop_position)
    )
    with pytest.raises(ProtocolAbort) as aborted:
        run_round(
            make_round(params, vector_length=5), inputs, dict.fromkeys((1, 2, 3, 4), drop_position)
        )

    # Assert
    expected_members = tuple(range(4, 8)) if drop_position <= 2 else tuple(range(1, 8))
    assert ok.survivors == expected_members
    np.testing.assert_array_equal(ok.total, plain_sum(inputs, expected_members, 32))
    assert aborted.value.stage == STAGES[drop_position]


def test_quantized_round_dequantizes_within_the_error_bound() -> None:
    # Prepare: SecAgg+ parameters from the finder, 30% dropouts after sharing keys.
    params = find_parameters(num_clients=20, dropout_rate=0.3, corrupt_rate=0.05)
    rng = np.random.default_rng(7)
    updates = {i: rng.normal(0, 0.5, 50).astype(np.float32) for i in range(1, 21)}
    inputs = {i: quantize(u, clip=1.0, bits=16, ring_bits=32, rng=rng) for i, u in updates.items()}
    drop = dict.fromkeys(range(1, 7), 2)

    # Execute
    result = run_round(make_round(params, vector_length=50, seed=3), inputs, drop)
    estimate = dequantize_sum(
        result.total, num_clients=result.num_summed, clip=1.0, bits=16, ring_bits=32
    )

    # Assert
    assert result.survivors == tuple(range(7, 21))
    truth = np.sum([np.clip(updates[i], -1, 1) for i in result.survivors], axis=0, dtype=np.float64)
    step = 2.0 / (2**16 - 1)
    assert np.max(np.abs(estimate - truth)) <= result.num_summed * step


def test_a_retried_round_uses_fresh_masks_and_still_sums_exactly() -> None:
    # Prepare
    params = SecAggParams(num_clients=4, threshold=4, degree=3, dropout_rate=0.0, corrupt_rate=0.0)
    inputs = {i: np.arange(16, dtype=np.uint32) * i for i in range(1, 5)}
    first = make_round(params, vector_length=16, attempt=0)
    second = make_round(params, vector_length=16, attempt=1, identity_keys=first.identity_keys)

    # Execute
    r1 = run_round(first, inputs)
    r2 = run_round(second, inputs)

    # Assert
    np.testing.assert_array_equal(r1.total, r2.total)
    for i in range(1, 5):
        y1 = first.responses[Stage.MASKED_INPUT][i].masked
        y2 = second.responses[Stage.MASKED_INPUT][i].masked
        assert not np.array_equal(y1, y2)
        assert not np.array_equal(y1, inputs[i])


def test_a_client_that_trained_on_another_model_refuses_to_mask() -> None:
    # Prepare
    params = SecAggParams(num_clients=3, threshold=3, degree=2, dropout_rate=0.0, corrupt_rate=0.0)
    rnd = make_round(params, vector_length=4)
    adverts = rnd.server.start([1, 2, 3])
    shares = rnd.server.advertise_keys(
        {i: rnd.clients[i].advertise_keys(r) for i, r in adverts.items()}
    )
    requests = rnd.server.share_keys({i: rnd.clients[i].share_keys(r) for i, r in shares.items()})

    # Execute / Assert
    with pytest.raises(CoordinatorMisbehaviour, match="model"):
        rnd.clients[1].masked_input(
            requests[1], vector=RingVector(np.zeros(4, np.uint32)), model_hash=bytes(32)
        )


class _RelayingServer(SecAggServer):
    """A coordinator that relays advertisements without verifying them."""

    def _check_advertisement(self, index: int, response: object) -> None:
        return None


def test_clients_sent_different_model_hashes_cannot_complete_the_round() -> None:
    # Prepare: the coordinator sends client 3 another model hash (model inconsistency attack).
    params = SecAggParams(num_clients=3, threshold=2, degree=2, dropout_rate=0.34, corrupt_rate=0.0)
    rnd = make_round(params, vector_length=4, server_cls=_RelayingServer)
    requests = rnd.server.start([1, 2, 3])
    requests[3] = dataclasses.replace(requests[3], model_hash=bytes(32))
    adverts = {i: rnd.clients[i].advertise_keys(r) for i, r in requests.items()}

    # Execute
    share_requests = rnd.server.advertise_keys(adverts)
    outcomes = {}
    for i in (1, 2, 3):
        with pytest.raises(CoordinatorMisbehaviour) as refused:
            rnd.clients[i].share_keys(share_requests[i])
        outcomes[i] = refused.value.reason

    # Assert: honest clients reject 3's signature (it binds another model); 3 rejects the session.
    assert "signature of peer 3" in outcomes[1]
    assert "signature of peer 3" in outcomes[2]
    assert "another session" in outcomes[3]


def test_an_honest_coordinator_rejects_an_advertisement_bound_to_another_model() -> None:
    # Prepare
    params = SecAggParams(num_clients=3, threshold=3, degree=2, dropout_rate=0.0, corrupt_rate=0.0)
    rnd = make_round(params, vector_length=4)
    requests = rnd.server.start([1, 2, 3])
    request = dataclasses.replace(requests[3], model_hash=bytes(32))

    # Execute
    advert = rnd.clients[3].advertise_keys(request)

    # Assert
    with pytest.raises(InvalidMessage, match="signature"):
        rnd.server.check(Stage.ADVERTISE_KEYS, 3, advert)


def test_a_clients_masked_vector_is_uniform_over_the_ring() -> None:
    # Prepare: a constant input; what the coordinator receives must look uniform on Z_2^32.
    params = SecAggParams(num_clients=3, threshold=3, degree=2, dropout_rate=0.0, corrupt_rate=0.0)
    rnd = make_round(params, vector_length=1 << 16)
    inputs = {i: np.full(1 << 16, 7, dtype=np.uint32) for i in range(1, 4)}

    # Execute
    run_round(rnd, inputs)
    masked = rnd.responses[Stage.MASKED_INPUT][1].masked

    # Assert: chi-square over the top and bottom byte (256 bins each).
    top = np.bincount((masked >> np.uint32(24)).astype(np.int64), minlength=256)
    bottom = np.bincount((masked & np.uint32(0xFF)).astype(np.int64), minlength=256)
    assert stats.chisquare(top).pvalue > 1e-6
    assert stats.chisquare(bottom).pvalue > 1e-6
