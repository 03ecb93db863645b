"""Tests for mpc.secagg.server: response validation, aborts, and what the coordinator can learn."""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from strategies import RoundPlan, round_plans

from mpc import (
    Adversary,
    InvalidMessage,
    ParameterError,
    ProtocolAbort,
    SecAggParams,
    SecAggServer,
    SessionInfo,
    Stage,
)
from mpc.secagg.messages import (
    MaskedInputResponse,
    ShareKeysResponse,
    UnmaskResponse,
)
from mpc.shamir import FIELD_PRIME
from tests.mpc.secagg.secagg_harness import MODEL_HASH, advance, make_round, run_round
from tests.mpc.secagg.test_split_view import VICTIM, split_view_attack


def _full(n: int = 5, t: int = 3) -> SecAggParams:
    return SecAggParams(
        num_clients=n, threshold=t, degree=n - 1, dropout_rate=(n - t) / n + 1e-9, corrupt_rate=0.0
    )


# -- check(): one response at a time


def test_check_rejects_responses_for_another_stage_sender_or_type() -> None:
    rnd = make_round(_full(), vector_length=4)
    requests = rnd.server.start([1, 2, 3, 4, 5])
    advert = rnd.clients[1].advertise_keys(requests[1])
    with pytest.raises(InvalidMessage, match="round is at advertise_keys"):
        rnd.server.check(Stage.SHARE_KEYS, 1, advert)
    with pytest.raises(InvalidMessage, match="not asked"):
        rnd.server.check(Stage.ADVERTISE_KEYS, 9, advert)
    with pytest.raises(InvalidMessage, match="not AdvertiseKeysResponse"):
        rnd.server.check(
            Stage.ADVERTISE_KEYS,
            1,
            ShareKeysResponse(
                envelopes={}, seed_commitments={}, key_commitments={}, seed_commitment=b""
            ),
        )


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"encryption_key": bytes(31)}, "32 bytes"),
        ({"masking_key": "x" * 32}, "32 bytes"),
        ({"signature": bytes(64)}, "signature"),
        ({"signature": None}, "signature"),
    ],
)
def test_check_rejects_bad_advertisements(change: dict[str, Any], match: str) -> None:
    rnd = make_round(_full(), vector_length=4)
    advert = rnd.clients[1].advertise_keys(rnd.server.start([1, 2, 3, 4, 5])[1])
    with pytest.raises(InvalidMessage, match=match):
        rnd.server.check(Stage.ADVERTISE_KEYS, 1, dataclasses.replace(advert, **change))
    with pytest.raises(InvalidMessage, match="same key twice"):
        rnd.server.check(
            Stage.ADVERTISE_KEYS, 1, dataclasses.replace(advert, masking_key=advert.encryption_key)
        )


def test_check_rejects_envelopes_for_unknown_recipients_or_of_the_wrong_size() -> None:
    rnd = make_round(_full(), vector_length=4)
    requests = advance(rnd, Stage.SHARE_KEYS)
    response = rnd.clients[1].share_keys(requests[1])
    envelopes = dict(response.envelopes)
    rnd.server.check(Stage.SHARE_KEYS, 1, response)
    with pytest.raises(InvalidMessage, match="do not match its holders \\(9\\)"):
        rnd.server.check(
            Stage.SHARE_KEYS,
            1,
            dataclasses.replace(response, envelopes={**envelopes, 9: envelopes[2]}),
        )
    with pytest.raises(InvalidMessage, match="do not match its holders \\(2\\)"):
        rnd.server.check(
            Stage.SHARE_KEYS,
            1,
            dataclasses.replace(response, envelopes={k: v for k, v in envelopes.items() if k != 2}),
        )
    with pytest.raises(InvalidMessage, match="bytes"):
        rnd.server.check(
            Stage.SHARE_KEYS, 1, dataclasses.replace(response, envelopes={**envelopes, 2: b"short"})
        )


@pytest.mark.parametrize(
    ("masked", "match"),
    [
        (np.zeros(4, np.int64), "dtype"),
        (np.zeros(4, np.uint64), "dtype"),
        (np.zeros(5, np.uint32), "length 5, expected 4"),
        (np.zeros((4, 1), np.uint32), "one-dimensional"),
        ([0, 0, 0, 0], "numpy array"),
    ],
)
def test_check_rejects_masked_vectors_of_the_wrong_dtype_or_length(
    masked: object, match: str
) -> None:
    rnd = make_round(_full(), vector_length=4)
    advance(rnd, Stage.MASKED_INPUT)
    with pytest.raises(InvalidMessage, match=match):
        rnd.server.check(Stage.MASKED_INPUT, 1, MaskedInputResponse(masked=masked))  # type: ignore[arg-type]


def test_check_rejects_shares_for_owners_that_were_not_requested_or_out_of_the_field() -> None:
    rnd = make_round(_full(), vector_length=4)
    requests = advance(rnd, Stage.UNMASK, drop_stage={5: 2})
    good = rnd.clients[1].unmask(requests[1])
    rnd.server.check(Stage.UNMASK, 1, good)
    seeds, keys = dict(good.self_mask_shares), dict(good.key_shares)
    with pytest.raises(InvalidMessage, match="self-mask shares for other owners"):
        rnd.server.check(
            Stage.UNMASK, 1, UnmaskResponse(self_mask_shares={**seeds, 5: keys[5]}, key_shares=keys)
        )
    with pytest.raises(InvalidMessage, match="key shares for other owners"):
        rnd.server.check(Stage.UNMASK, 1, UnmaskResponse(self_mask_shares=seeds, key_shares={}))
    with pytest.raises(InvalidMessage, match="below the field prime"):
        rnd.server.check(
            Stage.UNMASK,
            1,
            UnmaskResponse(self_mask_shares=seeds, key_shares={5: FIELD_PRIME.to_bytes(33, "big")}),
        )


# -- set-up errors


def test_start_checks_participants_and_runs_once() -> None:
    rnd = make_round(_full(), vector_length=4)
    with pytest.raises(ParameterError, match="5 distinct"):
        rnd.server.start([1, 2, 3, 4])
    server = SecAggServer(
        _full(), SessionInfo("j", 1, 0, MODEL_HASH), vector_length=4, identities={1: bytes(32)}
    )
    with pytest.raises(ParameterError, match="no identity"):
        server.start([1, 2, 3, 4, 5])
    rnd.server.start([1, 2, 3, 4, 5])
    with pytest.raises(ParameterError, match="already started"):
        rnd.server.start([1, 2, 3, 4, 5])
    with pytest.raises(ParameterError, match="not share_keys"):
        rnd.server.share_keys({})


def test_constructor_checks_its_arguments() -> None:
    session = SessionInfo("j", 1, 0, MODEL_HASH)
    with pytest.raises(ParameterError, match="vector_length"):
        SecAggServer(_full(), session, vector_length=0, identities={})
    with pytest.raises(ParameterError, match="identities\\[3\\]"):
        SecAggServer(_full(), session, vector_length=1, identities={3: b"x"})


# -- aborts (fcp's StateAbortsIfTooManyClientsAbort / ProceedsWithMinimum)


@pytest.mark.parametrize("stage", list(Stage))
def test_the_round_proceeds_with_exactly_t_and_aborts_below(stage: Stage) -> None:
    # Prepare: n = 5, t = 3.
    position = list(Stage).index(stage)
    inputs = {i: np.full(4, i, np.uint32) for i in range(1, 6)}

    # Execute
    result = run_round(make_round(_full(), vector_length=4), inputs, {4: position, 5: position})
    rnd = make_round(_full(), vector_length=4)
    with pytest.raises(ProtocolAbort) as aborted:
        run_round(rnd, inputs, {3: position, 4: position, 5: position})

    # Assert
    assert result.dropped[stage] == (4, 5)
    assert aborted.value.stage == stage and "below the threshold 3" in aborted.value.reason
    with pytest.raises(ProtocolAbort, match="already aborted"):
        getattr(rnd.server, stage.value)({})


def test_a_sparse_round_aborts_when_one_clients_holders_are_too_few() -> None:
    # Prepare: k = 2, t = 2; both neighbours of client 1 drop after sharing keys, so client 1's
    # seed can never be rebuilt although many clients remain.
    params = SecAggParams(num_clients=8, threshold=2, degree=2, dropout_rate=0.0, corrupt_rate=0.0)
    rnd = make_round(params, vector_length=4)
    rnd.server.start(list(range(1, 9)))
    neighbours = rnd.server.neighbours[1]
    rnd = make_round(params, vector_length=4)

    # Execute / Assert
    held_by_too_few = r"client \d+'s secrets are held by only [01] "
    with pytest.raises(ProtocolAbort, match=held_by_too_few) as aborted:
        run_round(
            rnd, {i: np.zeros(4, np.uint32) for i in range(1, 9)}, dict.fromkeys(neighbours, 2)
        )
    assert aborted.value.stage == Stage.MASKED_INPUT


def _altered(value: bytes) -> bytes:
    return (int.from_bytes(value, "big") ^ 1).to_bytes(33, "big")


@pytest.mark.parametrize("kind", ["key_shares", "self_mask_shares"])
def test_an_altered_share_is_rejected_naming_its_holder(kind: str) -> None:
    """Issue 9, item 8: one altered (well-formed) share no longer gives a silently wrong sum."""
    # Prepare: clients 4 and 5 dropped after sharing keys; client 1 alters a share it reveals.
    rnd = make_round(_full(), vector_length=4)
    requests = advance(rnd, Stage.UNMASK, drop_stage={4: 2, 5: 2})
    responses = {i: rnd.clients[i].unmask(requests[i]) for i in (1, 2, 3)}
    shares = dict(getattr(responses[1], kind))
    owner = 4 if kind == "key_shares" else 2
    shares[owner] = _altered(shares[owner])
    hostile = dataclasses.replace(responses[1], **{kind: MappingProxyType(shares)})

    # Execute / Assert: the response is refused as it arrives, naming the holder and the owner.
    with pytest.raises(InvalidMessage, match=f"client 1's share of client {owner}'s .* altered"):
        rnd.server.check(Stage.UNMASK, 1, hostile)
    with pytest.raises(InvalidMessage, match="client 1's share"):
        rnd.server.unmask({**responses, 1: hostile})


def test_a_round_completes_exactly_without_the_holder_of_an_altered_share() -> None:
    """The stage driver drops a rejected response; with t honest holders left the sum is exact."""
    # Prepare: n = 5, t = 3, nobody drops; client 1 alters its share of client 2's seed.
    rnd = make_round(_full(), vector_length=4)
    inputs = {i: np.full(4, i, np.uint32) for i in range(1, 6)}
    requests = advance(rnd, Stage.UNMASK, inputs)
    responses = {i: rnd.clients[i].unmask(requests[i]) for i in range(1, 6)}
    shares = dict(responses[1].self_mask_shares)
    shares[2] = _altered(shares[2])
    hostile = dataclasses.replace(responses[1], self_mask_shares=MappingProxyType(shares))

    # Execute: what the driver does: check each response, keep those that pass.
    kept = {}
    for i, response in {**responses, 1: hostile}.items():
        try:
            rnd.server.check(Stage.UNMASK, i, response)
        except InvalidMessage:
            continue
        kept[i] = response
    result = rnd.server.unmask(kept)

    # Assert
    assert set(kept) == {2, 3, 4, 5}
    np.testing.assert_array_equal(result.total, np.full(4, 15, np.uint32))


def test_a_dealer_whose_shares_are_not_on_one_polynomial_is_named(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A dealer that commits to inconsistent seed shares is caught by its seed commitment."""
    import mpc.secagg.client as client_module
    from mpc.shamir import Share, split_among

    calls = {"n": 0}

    def inconsistent(secret: bytes, *, threshold: int, holders: Any) -> tuple[Share, ...]:
        shares = split_among(secret, threshold=threshold, holders=holders)
        calls["n"] += 1
        if calls["n"] == 3:  # client 2's seed (clients share in index order, seed then key)
            first = shares[0]
            shares = (Share(first.x, (first.y + 1) % FIELD_PRIME), *shares[1:])
        return shares

    monkeypatch.setattr(client_module, "split_among", inconsistent)
    rnd = make_round(_full(), vector_length=4)

    # Execute / Assert
    with pytest.raises(ProtocolAbort, match="client 2 dealt inconsistent shares"):
        run_round(rnd, {i: np.zeros(4, np.uint32) for i in range(1, 6)})


# -- what the coordinator holds


class _RecordingServer(SecAggServer):
    """An instrumented coordinator: records every share it is ever given."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.seed_shares: Counter[int] = Counter()
        self.key_shares: Counter[int] = Counter()

    def unmask(self, responses: Mapping[int, UnmaskResponse]) -> Any:
        for response in responses.values():
            self.seed_shares.update(list(response.self_mask_shares))
            self.key_shares.update(list(response.key_shares))
        return super().unmask(responses)


@given(plan=round_plans())
def test_the_coordinator_never_holds_t_shares_of_both_secrets_of_a_client(plan: RoundPlan) -> None:
    # Prepare
    params = SecAggParams(
        num_clients=plan.num_clients,
        threshold=plan.threshold,
        degree=plan.degree,
        dropout_rate=plan.dropout_rate,
        corrupt_rate=0.0,
        ring_bits=plan.ring_bits,
    )
    rnd = make_round(params, vector_length=3, seed=plan.seed, server_cls=_RecordingServer)
    dtype = np.uint32 if plan.ring_bits == 32 else np.uint64
    inputs = {i: np.ones(3, dtype) for i in range(1, plan.num_clients + 1)}

    # Execute
    try:
        run_round(rnd, inputs, plan.drop_stage)
    except ProtocolAbort:
        pass

    # Assert: the envelopes it routed are sealed, so these are all the shares it ever saw.
    server = rnd.server
    assert isinstance(server, _RecordingServer)
    for owner in range(1, plan.num_clients + 1):
        both = (
            server.seed_shares[owner] >= params.threshold
            and server.key_shares[owner] >= params.threshold
        )
        assert not both
        assert server.seed_shares[owner] == 0 or server.key_shares[owner] == 0


@pytest.mark.parametrize("told_survived", range(0, 10))
def test_a_coordinator_lying_about_a_dropout_never_gets_t_shares_of_both_kinds(
    told_survived: int,
) -> None:
    # Prepare: semi-malicious parameters (t = 6 of n = 10 > (n + gamma n) / 2). The coordinator
    # tells holders 1..told_survived and the victim that the victim survived, the others that it
    # dropped, each group with its own cohort at the consistency check (REFERENCES.md 1.1).
    params = SecAggParams(
        num_clients=10,
        threshold=6,
        degree=9,
        dropout_rate=0.4,
        corrupt_rate=0.0,
        adversary=Adversary.SEMI_MALICIOUS,
    )
    rnd = make_round(params, vector_length=2)
    alive = {VICTIM, *range(2, told_survived + 2)} & set(range(1, 11))
    inputs = {i: np.full(2, i, np.uint32) for i in range(1, 11)}

    # Execute
    recovered, aborts = split_view_attack(rnd, inputs, alive=alive, dead=set(range(1, 11)) - alive)

    # Assert: a group that answered saw a quorum of signatures on its own cohort; the other
    # group cannot have, so it refused.
    assert recovered is None
    assert aborts.keys() >= alive or aborts.keys() >= set(range(1, 11)) - alive


# -- the consistency check and share commitments


def test_check_rejects_a_consistency_signature_that_does_not_verify_over_the_cohort() -> None:
    rnd = make_round(_full(), vector_length=4)
    requests = advance(rnd, Stage.CONSISTENCY_CHECK)
    good = rnd.clients[1].consistency_check(requests[1])
    rnd.server.check(Stage.CONSISTENCY_CHECK, 1, good)
    with pytest.raises(InvalidMessage, match="client 1's consistency-check signature"):
        rnd.server.check(Stage.CONSISTENCY_CHECK, 1, dataclasses.replace(good, signature=b"x"))
    # A signature over another cohort (client 2 was told a smaller one) is refused too.
    lied = rnd.clients[2].consistency_check(dataclasses.replace(requests[2], cohort=(1, 2, 3, 4)))
    with pytest.raises(InvalidMessage, match="client 2's consistency-check signature"):
        rnd.server.check(Stage.CONSISTENCY_CHECK, 2, lied)


def test_the_round_aborts_when_fewer_than_the_quorum_sign() -> None:
    # n = 5, t = 2, quorum 3: two signers are enough holders but not enough signatures.
    params = _full(5, 2)
    inputs = {i: np.zeros(3, np.uint32) for i in range(1, 6)}
    with pytest.raises(ProtocolAbort, match="below its quorum 3") as aborted:
        run_round(make_round(params, vector_length=3), inputs, dict.fromkeys((3, 4, 5), 3))
    assert aborted.value.stage == Stage.CONSISTENCY_CHECK


def test_the_unmask_request_relays_a_quorum_of_the_signers_signatures() -> None:
    # n = 5, t = 3: quorum 3; client 5 sent its input but not its signature.
    rnd = make_round(_full(), vector_length=4)
    requests = advance(rnd, Stage.UNMASK, drop_stage={5: 3})
    assert set(requests) == {1, 2, 3, 4}
    assert all(set(r.signatures) == {1, 2, 3} for r in requests.values())
    assert all(r.cohort == (1, 2, 3, 4, 5) for r in requests.values())


@pytest.mark.parametrize(
    ("field", "change", "match"),
    [
        ("seed_commitments", lambda c: {k: v for k, v in c.items() if k != 2}, "holders \\(2\\)"),
        ("key_commitments", lambda c: {**c, 9: bytes(32)}, "holders \\(9\\)"),
        ("seed_commitments", lambda c: {**c, 2: b"short"}, "not 32 bytes"),
        ("seed_commitment", lambda c: b"", "seed commitment is not 32 bytes"),
    ],
)
def test_check_rejects_missing_or_malformed_share_commitments(
    field: str, change: Any, match: str
) -> None:
    rnd = make_round(_full(), vector_length=4)
    requests = advance(rnd, Stage.SHARE_KEYS)
    response = rnd.clients[1].share_keys(requests[1])
    hostile = dataclasses.replace(response, **{field: change(getattr(response, field))})
    with pytest.raises(InvalidMessage, match=match):
        rnd.server.check(Stage.SHARE_KEYS, 1, hostile)
