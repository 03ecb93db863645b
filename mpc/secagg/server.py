r"""The coordinator's side of SecAgg / SecAgg+: routes shares, sums, reconstructs and unmasks.

Threat model: the coordinator holds no secret of any client. It sees public keys, sealed
envelopes it cannot open, commitments (SHA-256) to the shares inside them, masked vectors, the
clients' signatures over the cohort of masked inputs, and in the last stage exactly one kind of
share per client: shares of the self-mask seed b_u of clients whose input is in the sum, or
shares of the masking key s_v^SK of clients that dropped after sharing keys. From them it learns
the sum over the survivors and who dropped when (Bonawitz et al. CCS 2017, section 4 and theorem
6.3; Bell et al. CCS 2020 for the neighbour graph).

Protocol steps (one method per stage; each takes the responses that arrived, a participant missing
from the mapping has dropped at that stage, and returns the next stage's requests):

0. ``start``: draw the neighbour graph; send parameters, participants and neighbours (U0).
1. ``advertise_keys``: U1 = clients that advertised signed keys; relay all of them to U1.
2. ``share_keys``: U2 = clients that sent envelopes; route each envelope to its recipient in U2.
3. ``masked_input``: U3 = clients that sent masked vectors; sum them mod 2^bits; send U3 to every
   client of U3 for signing (consistency check, Bonawitz et al. section 4, round 3).
4. ``consistency_check``: U4 = clients whose signature over (session, U3) verifies; at least the
   consistency quorum q of them (``SecAggParams.consistency_threshold``); relay q of U4's
   signatures (the smallest indices) and ask each client of U4 for its shares: of b_v for its
   share owners in U3, of s_v^SK for owners in U2 \\ U3.
5. ``unmask``: U5 = responders, each share checked against the commitment its dealer sent with
   the envelopes (an altered share rejects its holder's response, naming it); for each owner,
   interpolate t shares (Lagrange coefficients once per set of holders); check each rebuilt
   s_v^SK against v's advertised key and each rebuilt b_u against u's seed commitment; subtract
   the self masks of U3 and, for each dropped v and each neighbour w in U3, w's pairwise mask.

Each stage raises ``ProtocolAbort(stage, reason)`` as soon as the round cannot finish: fewer than
t clients remain, or some client's secret would be held by fewer than t survivors. Nothing more
is then requested, so an aborted round reveals nothing beyond what was already sent.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, NoReturn

import numpy as np
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from mpc.errors import InvalidMessage, InvalidShareError, ParameterError, ProtocolAbort
from mpc.keys import (
    PUBLIC_KEY_BYTES,
    Purpose,
    agree,
    compute_session_id,
    derive_key,
    load_x25519_public,
    public_bytes,
    seed_commitment,
)
from mpc.masks import remove_masks
from mpc.prg import MaskExpander
from mpc.ring import RingVector, add_into, zeros
from mpc.secagg._validate import (
    Commitments,
    check_advertisement,
    check_consistency,
    check_envelopes,
    check_masked,
    check_share_commitments,
    check_unmask_shares,
)
from mpc.secagg.graph import build_graph
from mpc.secagg.messages import (
    RESPONSE_TYPES,
    AdvertiseKeysRequest,
    AdvertiseKeysResponse,
    ConsistencyCheckRequest,
    ConsistencyCheckResponse,
    MaskedInputRequest,
    MaskedInputResponse,
    SessionInfo,
    ShareKeysRequest,
    ShareKeysResponse,
    Stage,
    UnmaskRequest,
    UnmaskResponse,
    session_context,
)
from mpc.secagg.params import SecAggParams
from mpc.shamir import MAX_HOLDER, combine_with, lagrange_at_zero


@dataclass(frozen=True, slots=True, kw_only=True, eq=False)
class SecAggResult:
    """The outcome of a completed round.

    Attributes:
        total: the sum of the survivors' inputs in the ring (uint32 or uint64).
        survivors: the clients whose inputs are in ``total`` (U3), increasing.
        dropped: for each stage, the clients that dropped at it (did not answer its request).
    """

    total: RingVector
    survivors: tuple[int, ...]
    dropped: Mapping[Stage, tuple[int, ...]]

    @property
    def num_summed(self) -> int:
        """How many inputs the total contains."""
        return len(self.survivors)


@dataclass(slots=True, kw_only=True)
class _ServerState:
    """Per-round state of the coordinator: who is alive at each stage and what it received."""

    stage: Stage | None = None
    aborted: ProtocolAbort | None = None
    participants: tuple[int, ...] = ()
    graph: dict[int, tuple[int, ...]] = field(default_factory=dict)
    context: bytes = b""
    session_id: bytes = b""
    asked: frozenset[int] = frozenset()
    cohorts: dict[Stage, tuple[int, ...]] = field(default_factory=dict)
    dropped: dict[Stage, tuple[int, ...]] = field(default_factory=dict)
    adverts: dict[int, AdvertiseKeysResponse] = field(default_factory=dict)
    recipients: dict[int, frozenset[int]] = field(default_factory=dict)
    requested: dict[int, tuple[frozenset[int], frozenset[int]]] = field(default_factory=dict)
    commitments: dict[int, Commitments] = field(default_factory=dict)
    needed: tuple[int, ...] = ()
    total: Any = None


class SecAggServer:
    """Coordinator state machine for one attempt of one secure-aggregation round.

    Args:
        params: the round's validated parameters.
        session: job, round, attempt and the hash of the global model sent this round.
        vector_length: number of ring elements per input.
        identities: participant index -> raw 32-byte Ed25519 identity public key.
        rng: generator for the neighbour graph (tests); None uses the OS CSPRNG.
    """

    __slots__ = ("_identities", "_length", "_params", "_rng", "_session", "_state")

    def __init__(
        self,
        params: SecAggParams,
        session: SessionInfo,
        *,
        vector_length: int,
        identities: Mapping[int, bytes],
        rng: np.random.Generator | None = None,
    ) -> None:
        if not isinstance(params, SecAggParams):
            raise ParameterError("params must be SecAggParams")
        if not isinstance(session, SessionInfo):
            raise ParameterError("session must be a SessionInfo")
        if isinstance(vector_length, bool) or not isinstance(vector_length, int):
            raise ParameterError(f"vector_length must be an int >= 1, got {vector_length!r}")
        if vector_length < 1:
            raise ParameterError(f"vector_length must be >= 1, got {vector_length}")
        for index, key in identities.items():
            if not isinstance(key, bytes) or len(key) != PUBLIC_KEY_BYTES:
                raise ParameterError(f"identities[{index}] must be a 32-byte Ed25519 public key")
        self._params = params
        self._session = session
        self._length = vector_length
        self._identities = MappingProxyType(dict(identities))
        self._rng = rng
        self._state = _ServerState()

    def __repr__(self) -> str:
        return f"SecAggServer(stage={self._state.stage}, session={self._session!r})"

    @property
    def params(self) -> SecAggParams:
        """The round's parameters."""
        return self._params

    @property
    def neighbours(self) -> Mapping[int, tuple[int, ...]]:
        """The neighbour graph drawn by :meth:`start` (read-only)."""
        return MappingProxyType(self._state.graph)

    def start(self, participants: tuple[int, ...] | list[int]) -> dict[int, AdvertiseKeysRequest]:
        """Draw the neighbour graph and return one ADVERTISE_KEYS request per participant.

        Raises:
            ParameterError: if the participants do not match ``num_clients``, repeat, are out of
                range, lack an identity, or the round already started.
        """
        st, p = self._state, self._params
        if st.stage is not None:
            raise ParameterError("this round already started; use a new SecAggServer per attempt")
        nodes = tuple(sorted(participants))
        if len(set(nodes)) != len(nodes) or len(nodes) != p.num_clients:
            raise ParameterError(f"participants must be {p.num_clients} distinct indices")
        for index in nodes:
            if (
                isinstance(index, bool)
                or not isinstance(index, int)
                or not 1 <= index <= MAX_HOLDER
            ):
                raise ParameterError(f"participant {index!r} is not an int in [1, {MAX_HOLDER}]")
            if index not in self._identities:
                raise ParameterError(f"participant {index} has no identity public key")
        st.participants = nodes
        st.graph = build_graph(nodes, degree=p.degree, rng=self._rng)
        st.context = session_context(
            self._session,
            num_clients=p.num_clients,
            threshold=p.threshold,
            degree=p.degree,
            ring_bits=p.ring_bits,
            vector_length=self._length,
            participants=nodes,
            consistency_threshold=p.consistency_threshold,
        )
        st.stage, st.asked = Stage.ADVERTISE_KEYS, frozenset(nodes)
        header = self._header()
        return {
            u: AdvertiseKeysRequest(
                **header,
                num_clients=p.num_clients,
                threshold=p.threshold,
                degree=p.degree,
                ring_bits=p.ring_bits,
                vector_length=self._length,
                participants=nodes,
                neighbours=st.graph[u],
                consistency_threshold=p.consistency_threshold,
            )
            for u in nodes
        }

    # -- validation of single responses ---------------------------------------------------------

    def check(self, stage: Stage, index: int, response: object) -> None:
        """Validate one response as it arrives, so the transport can reject it and go on.

        Raises:
            InvalidMessage: naming what is wrong (stage, sender, type, sizes, dtype, length,
                recipients, share sets, signature).
        """
        st = self._state
        if st.stage is None or stage != st.stage:
            raise InvalidMessage(f"a {stage} response arrived but the round is at {st.stage}")
        if index not in st.asked:
            raise InvalidMessage(f"client {index} was not asked for a {stage} response")
        expected = RESPONSE_TYPES[stage]
        if not isinstance(response, expected):
            raise InvalidMessage(
                f"client {index} sent {type(response).__name__}, not {expected.__name__}"
            )
        if isinstance(response, AdvertiseKeysResponse):
            self._check_advertisement(index, response)
        elif isinstance(response, ShareKeysResponse):
            check_envelopes(index, response, recipients=st.recipients[index])
            full = self._params.is_full_graph
            holders = st.recipients[index] | ({index} if full else frozenset())
            check_share_commitments(index, response, holders=holders)
        elif isinstance(response, MaskedInputResponse):
            check_masked(index, response, ring_bits=self._params.ring_bits, length=self._length)
        elif isinstance(response, ConsistencyCheckResponse):
            check_consistency(
                index,
                response,
                session_id=st.session_id,
                context=st.context,
                cohort=st.cohorts[Stage.MASKED_INPUT],
                identity=self._identities[index],
            )
        elif isinstance(response, UnmaskResponse):
            seeds, keys = st.requested[index]
            check_unmask_shares(
                index,
                response,
                seeds=seeds,
                keys=keys,
                session_id=st.session_id,
                commitments=st.commitments,
            )

    def _check_advertisement(self, index: int, response: AdvertiseKeysResponse) -> None:
        check_advertisement(
            index, response, context=self._state.context, identity=self._identities[index]
        )

    # -- stages ---------------------------------------------------------------------------------

    def advertise_keys(
        self, responses: Mapping[int, AdvertiseKeysResponse]
    ) -> dict[int, ShareKeysRequest]:
        """Stage ADVERTISE_KEYS -> SHARE_KEYS: relay every signed advertisement to U1."""
        st = self._state
        cohort = self._collect(Stage.ADVERTISE_KEYS, responses)
        st.adverts = {u: responses[u] for u in cohort}
        encryption_keys = MappingProxyType({u: st.adverts[u].encryption_key for u in cohort})
        masking_keys = MappingProxyType({u: st.adverts[u].masking_key for u in cohort})
        signatures = MappingProxyType({u: st.adverts[u].signature for u in cohort})
        identities = MappingProxyType({u: self._identities[u] for u in cohort})
        st.session_id = compute_session_id(
            context=st.context,
            public_keys={u: (encryption_keys[u], masking_keys[u]) for u in cohort},
        )
        members = set(cohort)
        st.recipients = {u: frozenset(set(st.graph[u]) & members) for u in cohort}
        self._advance(Stage.SHARE_KEYS, cohort)
        header = self._header()
        return {
            u: ShareKeysRequest(
                **header,
                cohort=cohort,
                encryption_keys=encryption_keys,
                masking_keys=masking_keys,
                signatures=signatures,
                identities=identities,
            )
            for u in cohort
        }

    def share_keys(
        self, responses: Mapping[int, ShareKeysResponse]
    ) -> dict[int, MaskedInputRequest]:
        """Stage SHARE_KEYS -> MASKED_INPUT: route each envelope to its recipient in U2."""
        st = self._state
        cohort = self._collect(Stage.SHARE_KEYS, responses)
        members = set(cohort)
        self._require_holders(Stage.SHARE_KEYS, owners=cohort, alive=members)
        st.commitments = {
            u: Commitments(
                seeds=dict(responses[u].seed_commitments),
                keys=dict(responses[u].key_commitments),
                seed=responses[u].seed_commitment,
            )
            for u in cohort
        }
        inbox: dict[int, dict[int, bytes]] = {v: {} for v in cohort}
        for sender in cohort:
            for recipient, envelope in responses[sender].envelopes.items():
                if recipient in members:
                    inbox[recipient][sender] = envelope
        self._advance(Stage.MASKED_INPUT, cohort)
        header = self._header()
        return {
            v: MaskedInputRequest(**header, cohort=cohort, envelopes=MappingProxyType(inbox[v]))
            for v in cohort
        }

    def masked_input(
        self, responses: Mapping[int, MaskedInputResponse]
    ) -> dict[int, ConsistencyCheckRequest]:
        """Stage MASKED_INPUT -> CONSISTENCY_CHECK: sum the masked vectors, ask U3 to sign U3."""
        st, p = self._state, self._params
        cohort = self._collect(Stage.MASKED_INPUT, responses)
        members = set(cohort)
        shared_keys = set(st.cohorts[Stage.SHARE_KEYS])
        needed = members | {v for v in shared_keys - members if members & set(st.graph[v])}
        self._require_holders(Stage.MASKED_INPUT, owners=sorted(needed), alive=members)
        self._require_quorum(Stage.MASKED_INPUT, len(cohort))
        total = zeros(self._length, ring_bits=p.ring_bits)
        for u in cohort:
            add_into(total, responses[u].masked)
        st.total, st.needed = total, tuple(sorted(needed))
        self._advance(Stage.CONSISTENCY_CHECK, cohort)
        header = self._header()
        return {h: ConsistencyCheckRequest(**header, cohort=cohort) for h in cohort}

    def consistency_check(
        self, responses: Mapping[int, ConsistencyCheckResponse]
    ) -> dict[int, UnmaskRequest]:
        """Stage CONSISTENCY_CHECK -> UNMASK: relay U4's signatures, ask for one share per owner."""
        st, p = self._state, self._params
        signers = self._collect(Stage.CONSISTENCY_CHECK, responses)
        self._require_quorum(Stage.CONSISTENCY_CHECK, len(signers))
        self._require_holders(Stage.CONSISTENCY_CHECK, owners=st.needed, alive=set(signers))
        cohort = st.cohorts[Stage.MASKED_INPUT]
        members = set(cohort)
        shared_keys = set(st.cohorts[Stage.SHARE_KEYS])
        # A quorum of signatures is all a client needs; relaying just that many (the smallest
        # indices of U4) keeps each client's verification at q signatures, not |U4|.
        quorum = signers[: p.consistency_threshold]
        signatures = MappingProxyType({h: responses[h].signature for h in quorum})
        requests: dict[int, UnmaskRequest] = {}
        header = self._header()
        for h in signers:
            owners = (set(st.graph[h]) & shared_keys) | ({h} if p.is_full_graph else set())
            survivors, dropped = owners & members, owners - members
            st.requested[h] = (frozenset(survivors), frozenset(dropped))
            requests[h] = UnmaskRequest(
                **header,
                cohort=cohort,
                survivors=tuple(sorted(survivors)),
                dropped=tuple(sorted(dropped)),
                signatures=signatures,
            )
        self._advance(Stage.UNMASK, signers)
        return requests

    def unmask(self, responses: Mapping[int, UnmaskResponse]) -> SecAggResult:
        """Stage UNMASK: rebuild seeds and dropped keys, remove every mask, return the sum."""
        st, p = self._state, self._params
        answered = self._collect(Stage.UNMASK, responses)
        survivors = st.cohorts[Stage.MASKED_INPUT]
        members = set(survivors)
        late = sorted(set(st.cohorts[Stage.SHARE_KEYS]) - members)
        seed_shares: dict[int, dict[int, int]] = {u: {} for u in survivors}
        key_shares: dict[int, dict[int, int]] = {v: {} for v in late}
        for h in answered:
            for owner, value in responses[h].self_mask_shares.items():
                seed_shares[owner][h] = int.from_bytes(value, "big")
            for owner, value in responses[h].key_shares.items():
                key_shares[owner][h] = int.from_bytes(value, "big")
        lagrange: dict[tuple[int, ...], tuple[int, ...]] = {}
        self_keys = [
            self._derive(self._rebuild_seed(u, seed_shares[u], lagrange), Purpose.SELF_MASK, (u,))
            for u in survivors
        ]
        pairwise = list(self._pairwise_keys(late, key_shares, members, lagrange))
        total = st.total
        remove_masks(
            total,
            self_keys=self_keys,
            pairwise=pairwise,
            expander=MaskExpander(length=self._length, ring_bits=p.ring_bits),
        )
        st.total, st.stage = None, None
        return SecAggResult(
            total=RingVector(total),
            survivors=survivors,
            dropped=MappingProxyType(dict(st.dropped)),
        )

    # -- helpers --------------------------------------------------------------------------------

    def _pairwise_keys(
        self,
        late: list[int],
        key_shares: dict[int, dict[int, int]],
        survivors: set[int],
        lagrange: dict[tuple[int, ...], tuple[int, ...]],
    ) -> Iterator[tuple[int, int, bytes]]:
        st = self._state
        public: dict[int, X25519PublicKey] = {}
        for v in late:
            neighbours = [w for w in st.graph[v] if w in survivors]
            if not neighbours:
                continue
            raw = self._rebuild(v, key_shares[v], "masking key", lagrange)
            secret = X25519PrivateKey.from_private_bytes(raw)
            if public_bytes(secret) != st.adverts[v].masking_key:
                self._abort(
                    Stage.UNMASK,
                    f"the masking key rebuilt for client {v} does not match its advertised key; "
                    "a share was altered",
                )
            for w in neighbours:
                if w not in public:
                    public[w] = load_x25519_public(st.adverts[w].masking_key)
                shared = agree(secret, public[w])
                yield w, v, self._derive(shared, Purpose.PAIRWISE_MASK, (min(v, w), max(v, w)))

    def _rebuild_seed(
        self, owner: int, shares: dict[int, int], lagrange: dict[tuple[int, ...], tuple[int, ...]]
    ) -> bytes:
        """Rebuild b_owner and check it against the owner's commitment.

        Every share was already checked against the commitment its dealer sent for its holder,
        so a mismatch here means the dealer itself dealt shares that are not on one polynomial.
        """
        st = self._state
        seed = self._rebuild(owner, shares, "self-mask seed", lagrange)
        if seed_commitment(session_id=st.session_id, owner=owner, seed=seed) != (
            st.commitments[owner].seed
        ):
            self._abort(
                Stage.UNMASK,
                f"the self-mask seed rebuilt for client {owner} does not match its commitment; "
                f"client {owner} dealt inconsistent shares",
            )
        return seed

    def _rebuild(
        self,
        owner: int,
        shares: dict[int, int],
        what: str,
        lagrange: dict[tuple[int, ...], tuple[int, ...]],
    ) -> bytes:
        t = self._params.threshold
        if len(shares) < t:
            self._abort(
                Stage.UNMASK,
                f"only {len(shares)} shares of client {owner}'s {what} arrived, below the "
                f"threshold {t}",
            )
        xs = tuple(sorted(shares)[:t])
        if xs not in lagrange:
            lagrange[xs] = lagrange_at_zero(xs)
        try:
            return combine_with(lagrange[xs], [shares[x] for x in xs])
        except InvalidShareError as exc:
            self._abort(Stage.UNMASK, f"client {owner}'s {what} cannot be rebuilt: {exc}")

    def _derive(self, secret: bytes, purpose: Purpose, parties: tuple[int, ...]) -> bytes:
        st = self._state
        return derive_key(
            secret, purpose=purpose, session_id=st.session_id, context=st.context, parties=parties
        )

    def _collect(self, stage: Stage, responses: Mapping[int, object]) -> tuple[int, ...]:
        st = self._state
        if st.aborted is not None:
            raise ProtocolAbort(stage, f"the round already aborted: {st.aborted.reason}")
        if st.stage is not stage:
            raise ParameterError(f"the round is at stage {st.stage}, not {stage}")
        for index, response in responses.items():
            self.check(stage, index, response)
        cohort = tuple(sorted(responses))
        st.cohorts[stage] = cohort
        st.dropped[stage] = tuple(sorted(st.asked - set(cohort)))
        t = self._params.threshold
        if len(cohort) < t:
            self._abort(stage, f"only {len(cohort)} clients answered, below the threshold {t}")
        return cohort

    def _require_quorum(self, stage: Stage, count: int) -> None:
        q = self._params.consistency_threshold
        if count < q:
            self._abort(
                stage,
                f"only {count} clients remain for the consistency check, below its quorum {q}",
            )

    def _require_holders(self, stage: Stage, *, owners: Any, alive: set[int]) -> None:
        t, full = self._params.threshold, self._params.is_full_graph
        for u in owners:
            holders = (set(self._state.graph[u]) | ({u} if full else set())) & alive
            if len(holders) < t:
                self._abort(
                    stage,
                    f"client {u}'s secrets are held by only {len(holders)} remaining clients, "
                    f"below the threshold {t}",
                )

    def _advance(self, stage: Stage, cohort: tuple[int, ...]) -> None:
        self._state.stage, self._state.asked = stage, frozenset(cohort)

    def _abort(self, stage: Stage, reason: str) -> NoReturn:
        error = ProtocolAbort(stage, reason)
        st = self._state
        st.aborted, st.stage, st.total = error, None, None
        raise error

    def _header(self) -> dict[str, Any]:
        s = self._session
        return {
            "job_id": s.job_id,
            "round": s.round,
            "attempt": s.attempt,
            "model_hash": s.model_hash,
        }
