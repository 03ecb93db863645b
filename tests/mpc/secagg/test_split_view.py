"""The split-view attack of a malicious coordinator (issue 9, items 1-2), through the public API.

The coordinator holds every client's masked input y_1 = x_1 + PRG(b_1) + pairwise masks. It tells
one group of clients "client 1 survived" (they reveal shares of b_1) and the other group "client 1
dropped" (they reveal shares of s_1^SK). With t shares of each it rebuilds both secrets, removes
every mask from y_1 and reads x_1. Before the consistency check (Bonawitz et al. CCS 2017, round 3
of the active variant) every client of both groups answered and the victim's input came out
exactly; now a client reveals shares only after verifying a quorum of signatures over the same
cohort, which two disjoint views cannot both gather.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mpc import (
    CoordinatorMisbehaviour,
    ProtocolAbort,
    RingVector,
    SecAggParams,
    Share,
    Stage,
    combine,
)
from mpc.keys import Purpose, agree, derive_key, load_x25519_public
from mpc.masks import apply_masks
from mpc.prg import MaskExpander
from mpc.secagg.messages import UnmaskRequest
from tests.mpc.secagg.secagg_harness import Round, advance, make_round

VICTIM = 1
_CONSISTENCY = getattr(Stage, "CONSISTENCY_CHECK", None)


def _inputs(rnd: Round, seed: int) -> dict[int, npt.NDArray[Any]]:
    rng = np.random.default_rng(seed)
    dtype = np.uint32 if rnd.params.ring_bits == 32 else np.uint64
    return {i: rng.integers(0, 1 << 20, size=rnd.vector_length).astype(dtype) for i in rnd.clients}


def _told(cohort: tuple[int, ...], holder: int, rnd: Round, signed: Any) -> Any:
    """The unmask request a lying coordinator sends ``holder`` for the view ``cohort``."""
    full = rnd.params.is_full_graph
    owners = set(rnd.server.neighbours[holder]) | ({holder} if full else set())
    survivors = tuple(sorted(owners & set(cohort)))
    dropped = tuple(sorted(owners - set(cohort)))
    header = {
        "job_id": rnd.session.job_id,
        "round": rnd.session.round,
        "attempt": rnd.session.attempt,
        "model_hash": rnd.session.model_hash,
    }
    fields: dict[str, Any] = {"cohort": cohort, "survivors": survivors, "dropped": dropped}
    if "signatures" in UnmaskRequest.__dataclass_fields__:
        fields["signatures"] = signed
    return UnmaskRequest(**header, **fields)


def split_view_attack(
    rnd: Round, inputs: Mapping[int, npt.NDArray[Any]], *, alive: set[int], dead: set[int]
) -> tuple[npt.NDArray[Any] | None, dict[int, ProtocolAbort]]:
    """Run the round honestly up to the masked inputs, then lie; return (x_victim or None, aborts).

    ``alive`` are told the victim survived, ``dead`` that it dropped. Where a consistency stage
    exists the coordinator sends each group its own cohort, collects the signatures, and relays
    to each group every signature it has (the best it can do).
    """
    everyone = tuple(sorted(rnd.clients))
    without = tuple(v for v in everyone if v != VICTIM)
    view = {h: everyone for h in alive} | {h: without for h in dead}
    requests = advance(rnd, Stage.MASKED_INPUT, inputs)
    masked = {
        i: rnd.clients[i].masked_input(
            request, vector=RingVector(inputs[i]), model_hash=rnd.session.model_hash
        )
        for i, request in requests.items()
    }
    honest_next = rnd.server.masked_input(masked)
    aborts: dict[int, ProtocolAbort] = {}
    signatures: dict[tuple[int, ...], dict[int, bytes]] = {everyone: {}, without: {}}
    if _CONSISTENCY is not None:
        for h in sorted(view):
            lie = type(honest_next[h])(
                **{
                    f: getattr(honest_next[h], f)
                    for f in honest_next[h].__dataclass_fields__
                    if f != "cohort"
                },
                cohort=view[h],
            )
            try:
                signatures[view[h]][h] = rnd.clients[h].consistency_check(lie).signature
            except ProtocolAbort as exc:
                aborts[h] = exc
    seed_shares: list[Share] = []
    key_shares: list[Share] = []
    for h in sorted(view):
        if h in aborts:
            continue
        try:
            answer = rnd.clients[h].unmask(_told(view[h], h, rnd, signatures[view[h]]))
        except ProtocolAbort as exc:
            aborts[h] = exc
            continue
        if VICTIM in answer.self_mask_shares:
            seed_shares.append(Share.from_value_bytes(h, answer.self_mask_shares[VICTIM]))
        if VICTIM in answer.key_shares:
            key_shares.append(Share.from_value_bytes(h, answer.key_shares[VICTIM]))
    t = rnd.params.threshold
    if len(seed_shares) < t or len(key_shares) < t:
        return None, aborts
    return _unmask_victim(rnd, masked[VICTIM].masked, seed_shares, key_shares), aborts


def _unmask_victim(
    rnd: Round, y: npt.NDArray[Any], seed_shares: list[Share], key_shares: list[Share]
) -> npt.NDArray[Any]:
    """What the coordinator computes once it holds both secrets of the victim."""
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

    t = rnd.params.threshold
    state = rnd.server._state  # the attacker is the coordinator: its own context and session id
    seed = combine(seed_shares, threshold=t)
    secret = X25519PrivateKey.from_private_bytes(combine(key_shares, threshold=t))

    def derive(material: bytes, purpose: Purpose, parties: tuple[int, ...]) -> bytes:
        return derive_key(
            material,
            purpose=purpose,
            session_id=state.session_id,
            context=state.context,
            parties=parties,
        )

    adverts = rnd.responses[Stage.ADVERTISE_KEYS]
    pairwise = {
        v: derive(
            agree(secret, load_x25519_public(adverts[v].masking_key)),
            Purpose.PAIRWISE_MASK,
            (min(VICTIM, v), max(VICTIM, v)),
        )
        for v in rnd.server.neighbours[VICTIM]
    }
    masks = apply_masks(
        RingVector(np.zeros_like(y)),
        index=VICTIM,
        self_key=derive(seed, Purpose.SELF_MASK, (VICTIM,)),
        pairwise_keys=pairwise,
        expander=MaskExpander(length=rnd.vector_length, ring_bits=rnd.params.ring_bits),
    )
    return np.asarray(y - masks)


def _semi_honest_full() -> SecAggParams:
    # n = 8, t = 4 (dropout rate 0.5): valid semi-honest parameters of the complete graph.
    return SecAggParams(num_clients=8, threshold=4, degree=7, dropout_rate=0.5, corrupt_rate=0.05)


def test_split_view_with_honest_semi_honest_parameters_recovers_nothing() -> None:
    """Issue 9, item 2: on main the victim's input came out exactly; now both groups refuse."""
    # Prepare
    rnd = make_round(_semi_honest_full(), vector_length=6, seed=1)
    inputs = _inputs(rnd, seed=2)

    # Execute: clients 1-4 hear "1 survived", clients 5-8 hear "1 dropped".
    recovered, aborts = split_view_attack(rnd, inputs, alive={1, 2, 3, 4}, dead={5, 6, 7, 8})

    # Assert
    assert recovered is None, f"recovered {recovered!r}; the input was {inputs[VICTIM]!r}"
    assert set(aborts) == set(range(1, 9))
    assert all(isinstance(e, CoordinatorMisbehaviour) for e in aborts.values())
    assert all("signatures" in e.reason for e in aborts.values()), aborts


def test_split_view_against_secagg_plus_recovers_nothing() -> None:
    """SecAgg+ (k = 6, t = 3 of n = 10): the victim's six neighbours split three and three."""
    params = SecAggParams(num_clients=10, threshold=3, degree=6, dropout_rate=0.0, corrupt_rate=0.0)
    rnd = make_round(params, vector_length=5, seed=4)
    inputs = _inputs(rnd, seed=5)
    rnd.server.start(list(rnd.clients))  # draw the graph to split the victim's neighbours
    neighbours = sorted(rnd.server.neighbours[VICTIM])
    rnd = make_round(params, vector_length=5, seed=4)  # same seed: same graph, fresh state
    alive = {VICTIM, *neighbours[:3]}
    dead = set(rnd.clients) - alive

    recovered, aborts = split_view_attack(rnd, inputs, alive=alive, dead=dead)

    assert recovered is None, f"recovered {recovered!r}; the input was {inputs[VICTIM]!r}"
    assert aborts


@settings(max_examples=20, deadline=None)
@given(n=st.integers(4, 9), data=st.data())
def test_no_split_of_the_cohort_recovers_an_input(n: int, data: st.DataObject) -> None:
    """Property: for any graph, threshold and split into two stories, no input comes out."""
    sparse_degrees = list(range(2, n - 1, 2))
    if sparse_degrees and data.draw(st.booleans(), label="sparse"):
        k = data.draw(st.sampled_from(sparse_degrees), label="degree")
        t = data.draw(st.integers(2, k), label="threshold")
        params = SecAggParams(
            num_clients=n, threshold=t, degree=k, dropout_rate=0.0, corrupt_rate=0.0
        )
    else:
        t = data.draw(st.integers(2, n), label="threshold")
        params = SecAggParams(
            num_clients=n,
            threshold=t,
            degree=n - 1,
            dropout_rate=(n - t) / n + 1e-9,
            corrupt_rate=0.0,
        )
    # Split the victim's share holders so that, where t allows, each story reaches t of them
    # (the splits that broke main); the other clients go to either side at random.
    probe = make_round(params, vector_length=3, seed=n)
    probe.server.start(list(probe.clients))
    holders = sorted(probe.server.neighbours[VICTIM])
    own = 1 if params.is_full_graph else 0
    low, high = max(0, t - own), len(holders) - t
    count = data.draw(st.integers(low, high) if low <= high else st.integers(0, len(holders)))
    others = [v for v in range(2, n + 1) if v not in holders]
    extra = data.draw(st.lists(st.sampled_from(others), unique=True) if others else st.just([]))
    alive = {VICTIM, *holders[:count], *extra}
    dead = set(range(1, n + 1)) - alive
    rnd = make_round(params, vector_length=3, seed=n)  # same seed: the same graph
    inputs = _inputs(rnd, seed=t)

    recovered, _ = split_view_attack(rnd, inputs, alive=alive, dead=dead)

    assert recovered is None, f"recovered {recovered!r}; the input was {inputs[VICTIM]!r}"


def test_the_attack_helper_is_sound_when_only_one_group_answers() -> None:
    """Control: telling everyone the same (true) story unmasks nobody's input individually."""
    rnd = make_round(_semi_honest_full(), vector_length=6, seed=1)
    inputs = _inputs(rnd, seed=2)

    recovered, aborts = split_view_attack(rnd, inputs, alive=set(range(1, 9)), dead=set())

    assert recovered is None and not aborts


@pytest.fixture(autouse=True)
def _no_numpy_warnings() -> Any:
    with np.errstate(over="ignore"):
        yield
