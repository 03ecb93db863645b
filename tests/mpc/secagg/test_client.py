"""Tests for mpc.secagg.client: every check on a hostile or inconsistent coordinator."""

from __future__ import annotations

import dataclasses
from types import MappingProxyType
from typing import Any

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from mpc import (
    CoordinatorMisbehaviour,
    ParameterError,
    ProtocolAbort,
    RingVector,
    SecAggClient,
    SecAggParams,
    Stage,
)
from mpc.keys import identity_public_bytes
from tests.mpc.secagg.secagg_harness import Round, advance, make_round


def _full(n: int = 5, t: int = 3) -> SecAggParams:
    return SecAggParams(
        num_clients=n, threshold=t, degree=n - 1, dropout_rate=(n - t) / n + 1e-9, corrupt_rate=0.0
    )


def _round(params: SecAggParams | None = None, **kwargs: object) -> Round:
    return make_round(params or _full(), vector_length=6, **kwargs)  # type: ignore[arg-type]


def _refuses(
    client: SecAggClient, method: str, request: object, match: str, **kwargs: object
) -> None:
    with pytest.raises(CoordinatorMisbehaviour, match=match):
        getattr(client, method)(request, **kwargs)


# -- stage UNMASK: the requests that would expose an input


def test_unmask_request_listing_a_peer_as_both_survivor_and_dropped_is_refused() -> None:
    # Prepare: client 5 dropped after sharing keys, so client 1 holds shares of 5's key.
    rnd = _round()
    requests = advance(rnd, Stage.UNMASK, drop_stage={5: 2})
    honest = requests[1]
    assert 5 in honest.dropped
    hostile = dataclasses.replace(honest, survivors=(*honest.survivors, 5))

    # Execute / Assert
    _refuses(rnd.clients[1], "unmask", hostile, "both survivor and dropped")


def test_unmask_request_asking_both_shares_of_a_survivor_is_refused() -> None:
    rnd = _round()
    honest = advance(rnd, Stage.UNMASK)[1]
    hostile = dataclasses.replace(honest, dropped=(2,))
    _refuses(rnd.clients[1], "unmask", hostile, "both survivor and dropped")


def test_unmask_request_listing_a_peer_twice_is_refused() -> None:
    rnd = _round()
    honest = advance(rnd, Stage.UNMASK)[1]
    hostile = dataclasses.replace(honest, survivors=(*honest.survivors, honest.survivors[0]))
    _refuses(rnd.clients[1], "unmask", hostile, "twice")


def test_unmask_request_listing_this_client_as_dropped_is_refused() -> None:
    rnd = _round()
    honest = advance(rnd, Stage.UNMASK)[1]
    hostile = dataclasses.replace(
        honest, survivors=tuple(v for v in honest.survivors if v != 1), dropped=(1,)
    )
    _refuses(rnd.clients[1], "unmask", hostile, "this client is listed as dropped")


def test_unmask_request_listing_an_unknown_peer_is_refused() -> None:
    rnd = _round()
    honest = advance(rnd, Stage.UNMASK)[1]
    _refuses(rnd.clients[1], "unmask", dataclasses.replace(honest, dropped=(99,)), "unknown")


def test_unmask_request_listing_as_survivor_a_peer_that_dropped_at_masked_input_is_refused() -> (
    None
):
    rnd = _round()
    honest = advance(rnd, Stage.UNMASK, drop_stage={4: 2})[1]
    hostile = dataclasses.replace(honest, survivors=(*honest.survivors, 4), dropped=())
    _refuses(rnd.clients[1], "unmask", hostile, "survivor but dropped")


def test_unmask_request_listing_a_peer_that_never_shared_keys_is_refused() -> None:
    # Client 5 dropped at SHARE_KEYS: nobody holds its shares, it cannot be listed at all.
    rnd = _round()
    honest = advance(rnd, Stage.UNMASK, drop_stage={5: 1})[1]
    _refuses(
        rnd.clients[1],
        "unmask",
        dataclasses.replace(honest, dropped=(5,)),
        "dropped before sharing keys",
    )
    rnd2 = _round()
    honest2 = advance(rnd2, Stage.CONSISTENCY_CHECK, drop_stage={5: 1})[1]
    _refuses(
        rnd2.clients[1],
        "consistency_check",
        dataclasses.replace(honest2, cohort=(*honest2.cohort, 5)),
        "dropped out or never joined",
    )


def test_unmask_request_that_omits_a_share_owner_is_refused() -> None:
    rnd = _round()
    honest = advance(rnd, Stage.UNMASK)[1]
    hostile = dataclasses.replace(honest, survivors=honest.survivors[:-1])
    _refuses(rnd.clients[1], "unmask", hostile, "does not say whether peer")


def test_consistency_cohort_below_threshold_or_minimum_is_refused() -> None:
    # The cohort of masked inputs is checked (and signed) at the consistency check.
    rnd = _round()
    honest = advance(rnd, Stage.CONSISTENCY_CHECK)[1]
    _refuses(
        rnd.clients[1],
        "consistency_check",
        dataclasses.replace(honest, cohort=(1, 2)),
        "below the threshold 3",
    )
    rnd2 = _round(min_cohort=5)
    honest2 = advance(rnd2, Stage.CONSISTENCY_CHECK, drop_stage={5: 2})[1]
    with pytest.raises(ProtocolAbort, match="minimum 5") as aborted:
        rnd2.clients[1].consistency_check(honest2)
    assert not isinstance(aborted.value, CoordinatorMisbehaviour)


def test_a_second_unmask_request_is_refused_so_both_shares_can_never_leak() -> None:
    # Prepare: a coordinator that asks once for 5's seed share and then for its key share.
    rnd = _round()
    honest = advance(rnd, Stage.UNMASK)[1]
    rnd.clients[1].unmask(honest)
    second = dataclasses.replace(
        honest, survivors=tuple(v for v in honest.survivors if v != 5), dropped=(5,)
    )

    # Execute / Assert
    _refuses(rnd.clients[1], "unmask", second, "expected stage nothing")


def test_honest_unmask_reveals_one_kind_of_share_per_peer() -> None:
    rnd = _round()
    request = advance(rnd, Stage.UNMASK, drop_stage={4: 2})[1]
    response = rnd.clients[1].unmask(request)
    assert set(response.self_mask_shares) == {1, 2, 3, 5}
    assert set(response.key_shares) == {4}
    assert all(
        len(v) == 33 for v in (*response.self_mask_shares.values(), *response.key_shares.values())
    )


# -- stage SHARE_KEYS: signatures, identities, relayed keys


def _tamper(request: object, field: str, index: int, value: bytes) -> object:
    mapping = dict(getattr(request, field))
    mapping[index] = value
    return dataclasses.replace(request, **{field: MappingProxyType(mapping)})  # type: ignore[type-var]


def test_a_forged_advertisement_signature_is_refused() -> None:
    rnd = _round()
    request = advance(rnd, Stage.SHARE_KEYS)[1]
    bad = bytes(64)
    _refuses(
        rnd.clients[1], "share_keys", _tamper(request, "signatures", 2, bad), "signature of peer 2"
    )


def test_keys_substituted_by_the_coordinator_are_refused() -> None:
    # The coordinator swaps in its own masking key for peer 3 (it cannot sign it as peer 3).
    rnd = _round()
    request = advance(rnd, Stage.SHARE_KEYS)[1]
    hostile = _tamper(request, "masking_keys", 3, b"\x09" * 32)
    _refuses(rnd.clients[1], "share_keys", hostile, "signature of peer 3")


def test_an_identity_that_does_not_match_the_pinned_key_is_refused() -> None:
    # Prepare: client 1 pinned everyone's identity; the coordinator relays a different key for 2.
    keys = {i: Ed25519PrivateKey.generate() for i in range(1, 6)}
    rnd = _round(identity_keys=keys)
    pinned = {i: identity_public_bytes(k) for i, k in keys.items()}
    rnd.clients[1] = SecAggClient(index=1, identity_key=keys[1], pinned_identities=pinned)
    request = advance(rnd, Stage.SHARE_KEYS)[1]
    impostor = identity_public_bytes(Ed25519PrivateKey.generate())

    # Execute / Assert
    _refuses(rnd.clients[1], "share_keys", _tamper(request, "identities", 2, impostor), "pinned")


def test_with_a_minimum_cohort_every_member_must_be_authenticated() -> None:
    # Prepare: sparse graph, so client 1 does not use the keys of its non-neighbours; with a
    # minimum cohort it still verifies them, because they count towards the cohort.
    params = SecAggParams(num_clients=8, threshold=2, degree=2, dropout_rate=0.0, corrupt_rate=0.0)
    rnd = make_round(params, vector_length=4, min_cohort=8)
    request = advance(rnd, Stage.SHARE_KEYS)[1]
    stranger = next(v for v in range(2, 9) if v not in rnd.server.neighbours[1])

    # Execute / Assert
    _refuses(
        rnd.clients[1],
        "share_keys",
        _tamper(request, "signatures", stranger, bytes(64)),
        f"peer {stranger}",
    )


def test_keys_relayed_for_this_client_must_be_its_own() -> None:
    rnd = _round()
    request = advance(rnd, Stage.SHARE_KEYS)[1]
    _refuses(
        rnd.clients[1],
        "share_keys",
        _tamper(request, "encryption_keys", 1, b"\x07" * 32),
        "not the ones it advertised",
    )


def test_duplicate_public_keys_are_refused() -> None:
    rnd = _round()
    request = advance(rnd, Stage.SHARE_KEYS)[1]
    copied = _tamper(request, "masking_keys", 3, request.masking_keys[2])
    _refuses(rnd.clients[1], "share_keys", copied, "identical")


def test_share_keys_cohort_checks() -> None:
    rnd = _round()
    request = advance(rnd, Stage.SHARE_KEYS)[1]
    _refuses(
        rnd.clients[1],
        "share_keys",
        dataclasses.replace(request, cohort=(1, 2)),
        "below the threshold",
    )


# -- stage MASKED_INPUT: envelopes, model hash


def test_masked_input_refuses_another_model() -> None:
    rnd = _round()
    request = advance(rnd, Stage.MASKED_INPUT)[1]
    _refuses(
        rnd.clients[1],
        "masked_input",
        request,
        "model",
        vector=RingVector(np.zeros(6, np.uint32)),
        model_hash=b"\x01" * 32,
    )


def test_a_tampered_envelope_is_refused() -> None:
    rnd = _round()
    request = advance(rnd, Stage.MASKED_INPUT)[1]
    envelope = request.envelopes[2]
    hostile = _tamper(request, "envelopes", 2, envelope[:-1] + bytes([envelope[-1] ^ 1]))
    _refuses(
        rnd.clients[1],
        "masked_input",
        hostile,
        "does not authenticate",
        vector=RingVector(np.zeros(6, np.uint32)),
        model_hash=rnd.session.model_hash,
    )


def test_an_envelope_moved_to_another_recipient_is_refused() -> None:
    # The coordinator gives client 1 the envelope 2 sealed for client 3.
    rnd = _round()
    requests = advance(rnd, Stage.MASKED_INPUT)
    hostile = _tamper(requests[1], "envelopes", 2, requests[3].envelopes[2])
    _refuses(
        rnd.clients[1],
        "masked_input",
        hostile,
        "does not authenticate",
        vector=RingVector(np.zeros(6, np.uint32)),
        model_hash=rnd.session.model_hash,
    )


def test_envelopes_must_come_exactly_from_the_neighbours_in_the_cohort() -> None:
    rnd = _round()
    request = advance(rnd, Stage.MASKED_INPUT)[1]
    missing = dataclasses.replace(
        request, envelopes=MappingProxyType({k: v for k, v in request.envelopes.items() if k != 2})
    )
    _refuses(
        rnd.clients[1],
        "masked_input",
        missing,
        "no envelope from neighbour 2",
        vector=RingVector(np.zeros(6, np.uint32)),
        model_hash=rnd.session.model_hash,
    )


def test_a_wrong_vector_is_a_caller_error_and_changes_nothing() -> None:
    rnd = _round()
    request = advance(rnd, Stage.MASKED_INPUT)[1]
    with pytest.raises(ParameterError, match="dtype"):
        wrong: Any = np.zeros(6, np.int64)
        rnd.clients[1].masked_input(request, vector=wrong, model_hash=rnd.session.model_hash)
    response = rnd.clients[1].masked_input(
        request, vector=RingVector(np.zeros(6, np.uint32)), model_hash=rnd.session.model_hash
    )
    assert response.masked.dtype == np.uint32 and response.masked.any()


# -- stage ADVERTISE_KEYS and stage order


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"participants": (2, 3, 4, 5, 6)}, "not among the participants"),
        ({"participants": (1, 2, 3, 4, 4)}, "twice"),
        ({"neighbours": (2, 3, 4, 9)}, "not a participant"),
        ({"neighbours": (1, 2, 3, 4)}, "own neighbour"),
        ({"threshold": 1}, "threshold"),
        ({"threshold": 6}, "threshold"),
        ({"num_clients": 6}, "participants are listed"),
        ({"ring_bits": 16}, "ring_bits"),
        ({"vector_length": 0}, "vector_length"),
        ({"model_hash": b"short"}, "model_hash"),
    ],
)
def test_advertise_request_checks(change: dict[str, Any], match: str) -> None:
    rnd = _round()
    request = rnd.server.start([1, 2, 3, 4, 5])[1]
    _refuses(rnd.clients[1], "advertise_keys", dataclasses.replace(request, **change), match)


def test_a_cohort_below_the_owners_minimum_is_refused_at_once() -> None:
    rnd = _round(min_cohort=6)
    request = rnd.server.start([1, 2, 3, 4, 5])[1]
    with pytest.raises(ProtocolAbort, match="minimum 6"):
        rnd.clients[1].advertise_keys(request)


def test_stages_run_once_in_order_and_an_aborted_client_stays_aborted() -> None:
    # Prepare
    rnd = _round()
    requests = rnd.server.start([1, 2, 3, 4, 5])
    client = rnd.clients[1]

    # Execute / Assert
    client.advertise_keys(requests[1])
    _refuses(client, "advertise_keys", requests[1], "expected stage share_keys")
    with pytest.raises(ProtocolAbort, match="already aborted"):
        client.share_keys(requests[1])  # type: ignore[arg-type]


def test_a_request_from_another_session_is_refused() -> None:
    rnd = _round()
    request = advance(rnd, Stage.SHARE_KEYS)[1]
    _refuses(
        rnd.clients[1], "share_keys", dataclasses.replace(request, attempt=1), "another session"
    )


def test_secrets_never_appear_in_repr() -> None:
    rnd = _round()
    advance(rnd, Stage.MASKED_INPUT)
    state = rnd.clients[1]._state
    text = repr(rnd.clients[1]) + repr(state)
    assert state.seed.hex() not in text and state.seed
    assert "held" not in text and "seed" not in text


# -- malformed requests and the consistency check


def test_a_malformed_session_field_aborts_the_client_and_forgets_its_secrets() -> None:
    """Issue 9, item 8: a malformed unmask request ends the client's part with a clear error."""
    # Prepare
    rnd = _round()
    honest = advance(rnd, Stage.UNMASK)[1]

    # Execute: a request whose model hash is not 32 bytes.
    with pytest.raises(CoordinatorMisbehaviour, match="malformed request: model_hash"):
        rnd.clients[1].unmask(dataclasses.replace(honest, model_hash="not bytes"))

    # Assert: the client aborted; the honest request gets nothing out of it any more.
    with pytest.raises(ProtocolAbort, match="already aborted"):
        rnd.clients[1].unmask(honest)


def _signed_round(params: SecAggParams | None = None) -> tuple[Round, dict[int, Any]]:
    rnd = _round(params)
    return rnd, advance(rnd, Stage.UNMASK)


def test_unmask_for_another_cohort_than_the_signed_one_is_refused() -> None:
    rnd, requests = _signed_round()
    hostile = dataclasses.replace(
        requests[1], cohort=(1, 2, 3, 4), survivors=(1, 2, 3, 4), dropped=(5,)
    )
    _refuses(rnd.clients[1], "unmask", hostile, "differs from the one this client signed")


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (
            lambda s: {v: s[v] for v in (1, 2)},
            "2 valid consistency-check signatures .* quorum of 3",
        ),
        (lambda s: {**s, 2: bytes(64)}, "signature of 2 does not verify"),
        (lambda s: {**s, 2: s[3]}, "signature of 2 does not verify"),
        (lambda s: {**s, 9: s[3]}, "comes from 9, not from the cohort"),
        (lambda s: None, "signatures must map"),
    ],
)
def test_unmask_without_a_quorum_of_valid_signatures_on_the_cohort_is_refused(
    change: Any, match: str
) -> None:
    rnd, requests = _signed_round()
    signatures = dict(requests[1].signatures)
    hostile = dataclasses.replace(requests[1], signatures=change(signatures))
    _refuses(rnd.clients[1], "unmask", hostile, match)


def test_signatures_from_another_session_do_not_count() -> None:
    # Prepare: the same identities in two attempts; attempt 1's signatures relayed into attempt 2.
    keys = {i: Ed25519PrivateKey.generate() for i in range(1, 6)}
    first = _round(identity_keys=keys, attempt=1)
    second = _round(identity_keys=keys, attempt=2)
    old = advance(first, Stage.UNMASK)[1]
    new = advance(second, Stage.UNMASK)[1]
    hostile = dataclasses.replace(new, signatures=old.signatures)

    _refuses(second.clients[1], "unmask", hostile, "does not verify over this cohort")


def test_consistency_cohort_below_the_quorum_is_refused() -> None:
    # n = 5, t = 2: the quorum is 3 (a strict majority), above the threshold.
    params = _full(5, 2)
    assert params.consistency_threshold == 3
    rnd = _round(params)
    honest = advance(rnd, Stage.CONSISTENCY_CHECK)[1]
    _refuses(
        rnd.clients[1],
        "consistency_check",
        dataclasses.replace(honest, cohort=(1, 2)),
        "below the consistency quorum 3",
    )


def test_a_second_consistency_check_is_refused_so_a_client_signs_one_cohort() -> None:
    rnd = _round()
    honest = advance(rnd, Stage.CONSISTENCY_CHECK)[1]
    rnd.clients[1].consistency_check(honest)
    _refuses(
        rnd.clients[1],
        "consistency_check",
        dataclasses.replace(honest, cohort=(1, 2, 3, 4)),
        "expected stage unmask",
    )


@pytest.mark.parametrize("quorum", [2, 6])
def test_a_consistency_quorum_outside_majority_and_n_is_refused_at_set_up(quorum: int) -> None:
    rnd = _round()
    request = rnd.server.start([1, 2, 3, 4, 5])[1]
    _refuses(
        rnd.clients[1],
        "advertise_keys",
        dataclasses.replace(request, consistency_threshold=quorum),
        rf"consistency_threshold {quorum} is outside \[3, 5\]",
    )


def test_a_round_with_pinned_identities_completes() -> None:
    # Prepare: every client pins every peer's identity key (signatures verify under the pins).
    from tests.mpc.secagg.secagg_harness import run_round

    rnd = _round()
    pins = {i: identity_public_bytes(k) for i, k in rnd.identity_keys.items()}
    for i, key in rnd.identity_keys.items():
        rnd.clients[i] = SecAggClient(index=i, identity_key=key, pinned_identities=pins)
    inputs = {i: np.full(6, i, np.uint32) for i in range(1, 6)}

    # Execute
    result = run_round(rnd, inputs)

    # Assert
    np.testing.assert_array_equal(result.total, np.full(6, 15, np.uint32))
    assert not rnd.client_aborts


def test_the_last_guard_never_lets_both_shares_of_a_peer_out() -> None:
    from mpc.secagg._checks import check_one_kind_per_peer

    share = bytes(33)
    with pytest.raises(CoordinatorMisbehaviour, match="both shares of peer 2"):
        check_one_kind_per_peer({2: share}, {2: share}, cohort={1, 2})
    with pytest.raises(CoordinatorMisbehaviour, match="self-mask share of 3, outside"):
        check_one_kind_per_peer({3: share}, {}, cohort={1, 2})
    with pytest.raises(CoordinatorMisbehaviour, match="key share of 2, inside"):
        check_one_kind_per_peer({}, {2: share}, cohort={1, 2})
    check_one_kind_per_peer({1: share}, {3: share}, cohort={1, 2})
