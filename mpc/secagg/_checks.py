"""The client's checks of coordinator requests; each failure names what is wrong.

These functions hold the checks of REFERENCES.md 1.4 (test 3) and Google fcp's client tests: a
request may list a peer only once, never as both survivor and dropped, never this client as
dropped, never an unknown peer or one whose shares this client does not hold, and a cohort may
only shrink and never fall below the threshold or the data owner's minimum. Every failure raises
``CoordinatorMisbehaviour`` (a cohort below the owner's own minimum raises plain ``ProtocolAbort``:
the coordinator may be honest, the owner's policy refuses).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Set
from typing import NoReturn, cast

from mpc.errors import CoordinatorMisbehaviour, ParameterError, ProtocolAbort
from mpc.keys import consistency_payload, verify
from mpc.ring import check_ring_bits
from mpc.secagg.messages import AdvertiseKeysRequest, SessionInfo, Stage, UnmaskRequest
from mpc.shamir import MAX_HOLDER


def fail(stage: Stage, reason: str) -> NoReturn:
    """Abort this client's part of the round because of the coordinator's request."""
    raise CoordinatorMisbehaviour(stage, reason)


def distinct(stage: Stage, name: str, value: object) -> tuple[int, ...]:
    """Return ``value`` if it is a tuple of distinct ints, else abort naming the repeat."""
    if not isinstance(value, tuple) or not all(
        isinstance(v, int) and not isinstance(v, bool) for v in value
    ):
        fail(stage, f"{name} must be a tuple of ints")
    indices = cast(tuple[int, ...], value)
    seen: set[int] = set()
    for v in indices:
        if v in seen:
            fail(stage, f"{name} lists peer {v} twice")
        seen.add(v)
    return indices


def check_cohort(
    stage: Stage,
    value: object,
    *,
    previous: Collection[int],
    index: int,
    threshold: int,
    min_cohort: int,
) -> tuple[int, ...]:
    """Check that a cohort only shrinks, holds this client, and is large enough."""
    cohort = distinct(stage, "cohort", value)
    earlier = set(previous)
    for v in cohort:
        if v not in earlier:
            fail(stage, f"the cohort lists {v}, which had dropped out or never joined")
    if index not in cohort:
        fail(stage, "this client is missing from the cohort")
    if len(cohort) < threshold:
        fail(stage, f"the cohort of {len(cohort)} is below the threshold {threshold}")
    if len(cohort) < min_cohort:
        raise ProtocolAbort(
            stage, f"the cohort of {len(cohort)} is below this client's minimum {min_cohort}"
        )
    return cohort


def check_advertise(
    req: AdvertiseKeysRequest, *, index: int, min_cohort: int
) -> tuple[SessionInfo, tuple[int, ...], tuple[int, ...], bool]:
    """Check the round set-up; return (session, participants, neighbours, complete graph?)."""
    stage = Stage.ADVERTISE_KEYS
    try:
        session = req.session
        check_ring_bits(req.ring_bits)
    except ParameterError as exc:
        fail(stage, str(exc))
    participants = distinct(stage, "participants", req.participants)
    n, t, k = req.num_clients, req.threshold, req.degree
    if len(participants) != n:
        fail(stage, f"num_clients is {n} but {len(participants)} participants are listed")
    if any(not 1 <= p <= MAX_HOLDER for p in participants):
        fail(stage, f"participant indices must lie in [1, {MAX_HOLDER}]")
    if index not in participants:
        fail(stage, "this client is not among the participants")
    if not isinstance(req.vector_length, int) or req.vector_length < 1:
        fail(stage, f"vector_length must be >= 1, got {req.vector_length!r}")
    neighbours = distinct(stage, "neighbours", req.neighbours)
    if index in neighbours:
        fail(stage, "this client is listed as its own neighbour")
    unknown = set(neighbours) - set(participants)
    if unknown:
        fail(stage, f"neighbour {min(unknown)} is not a participant")
    full_graph = k == n - 1
    if full_graph and len(neighbours) != n - 1:
        fail(stage, "the complete graph must list every other participant as neighbour")
    if not full_graph and (k % 2 or not 2 <= k <= n - 2 or len(neighbours) != k):
        fail(stage, f"degree {k} is invalid or {len(neighbours)} neighbours are listed")
    holders = n if full_graph else k
    if not 2 <= t <= holders:
        fail(stage, f"threshold {t} is outside [2, {holders}] (holders of each secret)")
    q, low = req.consistency_threshold, max(t, n // 2 + 1)
    if isinstance(q, bool) or not isinstance(q, int) or not low <= q <= n:
        fail(
            stage,
            f"consistency_threshold {q!r} is outside [{low}, {n}] (a strict majority of the "
            "participants, and at least the threshold)",
        )
    if n < min_cohort:
        raise ProtocolAbort(stage, f"the cohort of {n} is below this client's minimum {min_cohort}")
    return session, participants, neighbours, full_graph


def check_unmask_lists(
    req: UnmaskRequest,
    *,
    index: int,
    cohort: tuple[int, ...],
    participants: Set[int],
    neighbours: Set[int],
    owners: Set[int],
) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Check the survivor and dropped lists of an unmask request; return them.

    The lists must be disjoint, repeat no peer, not list this client as dropped, name only peers
    whose shares this client holds, agree with the cohort of masked inputs, and account for every
    such peer.
    """
    stage = Stage.UNMASK
    survivors = distinct(stage, "survivors", req.survivors)
    dropped = distinct(stage, "dropped", req.dropped)
    both = set(survivors) & set(dropped)
    if both:
        fail(
            stage,
            f"peer {min(both)} is listed as both survivor and dropped; revealing both of its "
            "shares would expose its input",
        )
    if index in dropped:
        fail(stage, "this client is listed as dropped")
    members = set(cohort)
    for peer in survivors + dropped:
        if peer not in participants:
            fail(stage, f"peer {peer} is unknown")
        if peer not in owners:
            if peer in neighbours:
                fail(stage, f"peer {peer} dropped before sharing keys with this client")
            fail(stage, f"peer {peer} is not a neighbour of this client; it holds no share of it")
    for peer in survivors:
        if peer not in members:
            fail(stage, f"peer {peer} is listed as survivor but dropped before unmasking")
    for peer in dropped:
        if peer in members:
            fail(stage, f"peer {peer} is listed as dropped but the cohort has its input")
    unaccounted = set(owners) - set(survivors) - set(dropped)
    if unaccounted:
        fail(stage, f"the request does not say whether peer {min(unaccounted)} survived")
    return survivors, dropped


def check_one_kind_per_peer(
    self_mask_shares: Mapping[int, bytes], key_shares: Mapping[int, bytes], *, cohort: Set[int]
) -> None:
    """The last guard before shares leave: never both shares of a peer, each of the right kind.

    Seed shares go only to members of the signed cohort U3, key shares only to peers outside it,
    and no peer gets both (which would let the coordinator remove every mask of its input).
    """
    stage = Stage.UNMASK
    both = set(self_mask_shares) & set(key_shares)
    if both:
        fail(stage, f"both shares of peer {min(both)} would be revealed")
    outside = set(self_mask_shares) - set(cohort)
    if outside:
        fail(stage, f"a self-mask share of {min(outside)}, outside the signed cohort, was asked")
    inside = set(key_shares) & set(cohort)
    if inside:
        fail(stage, f"a key share of {min(inside)}, inside the signed cohort, was asked")


def check_consistency_signatures(
    signatures: object,
    *,
    cohort: tuple[int, ...],
    session_id: bytes,
    context: bytes,
    identities: Mapping[int, bytes],
    quorum: int,
) -> int:
    """Check the relayed consistency-check signatures over ``cohort``; return how many verified.

    Bonawitz et al. CCS 2017, section 4, round 4 (active variant): a client unmasks only after at
    least ``quorum`` members of U3 signed the same U3. Every relayed signature must come from a
    member of the cohort and verify under that member's identity key (pinned where the client
    pins its peers): an honest coordinator checks them before relaying, so any other is a lie.
    """
    stage = Stage.UNMASK
    if not isinstance(signatures, Mapping):
        fail(stage, "signatures must map signer indices to consistency-check signatures")
    members = set(cohort)
    valid = 0
    for signer in sorted(signatures, key=lambda v: (not isinstance(v, int), str(v))):
        if isinstance(signer, bool) or not isinstance(signer, int) or signer not in members:
            fail(stage, f"a consistency-check signature comes from {signer!r}, not from the cohort")
        identity, signature = identities.get(signer), signatures[signer]
        if identity is None:
            fail(stage, f"no identity key is known for signer {signer}")
        payload = consistency_payload(
            session_id=session_id, context=context, index=signer, cohort=cohort
        )
        if not isinstance(signature, bytes) or not verify(identity, signature, payload):
            fail(
                stage,
                f"the consistency-check signature of {signer} does not verify over this cohort",
            )
        valid += 1
    if valid < quorum:
        fail(
            stage,
            f"only {valid} valid consistency-check signatures over the cohort of masked inputs, "
            f"below the quorum of {quorum}; the coordinator may be telling clients different "
            "stories about who survived",
        )
    return valid
