"""The data owner's side of SecAgg / SecAgg+: one method per stage, checking the coordinator.

Threat model: the coordinator relays every message and may lie about who dropped out, telling
different clients different stories; up to a stated fraction of clients collude with it. Peers'
identity keys are trusted only where the client pins them (``pinned_identities``); without pins
the coordinator relays them and could invent the signers of the consistency check.
The client trusts nobody with its input. It checks every request and aborts its part of the round,
with a stated reason, when a request could only come from a coordinator that deviates, in
particular when it would reveal both the self-mask share and the key share of one peer (which
would let the coordinator unmask that peer's input; REFERENCES.md 1.4 test 3 and 2.2).

Protocol (Bonawitz et al. CCS 2017, section 4; Bell et al. CCS 2020, section 4 for neighbours):

0. ``advertise_keys``: check the parameters and the neighbour list; generate two X25519 key pairs
   (c for envelopes, s for pairwise masks) from the OS CSPRNG; sign both public keys and the
   session context with the long-term Ed25519 identity key.
1. ``share_keys``: check the cohort U1 and every peer's signed advertisement (neighbours always;
   every client of U1 when the client enforces a minimum cohort, so that the cohort counts
   authenticated identities); derive the session id from all advertised keys and the model hash;
   agree keys with each live neighbour (X25519 on c for the envelopes both ways, on s for the
   pairwise mask, each through HKDF); then forget both X25519 secret keys. Draw the self-mask
   seed b_u; Shamir-share b_u and s_u^SK t-out-of-holders; seal each holder's pair of shares
   with AES-GCM.
2. ``masked_input``: check that the model trained on is the one bound into the session, that the
   envelopes come exactly from the neighbours in U2, open them, and send
   y_u = x_u + PRG(b_u) + sum_v sign(u, v) PRG(s_uv) over those neighbours.
   With the shares, commit to each holder's share values and to b_u (SHA-256, bound to the
   session), so that the coordinator can name an altered share instead of summing wrongly.
3. ``consistency_check``: check the cohort U3 of masked inputs (a subset of U2 holding this client,
   at least t and at least the consistency quorum q) and sign (session, U3) with the identity key
   (Bonawitz et al., section 4, round 3 of the active variant; fcp has no such round).
4. ``unmask``: refuse unless the request's cohort is the U3 this client signed and at least q
   members of U3 signed that same U3 under their (pinned) identity keys: two different stories
   about who survived cannot both gather q signatures, because any two quorums share an honest
   client (``SecAggParams.consistency_threshold``). Then check the survivor and dropped lists
   (disjoint, no repeats, not this client, only peers whose shares it holds, consistent with U3);
   reveal shares of b_v for members of U3 and of s_v^SK for peers outside it, never both for one
   peer (checked again on the response itself); then forget every secret.

A client object serves one attempt of one round: each stage runs at most once, in order, and a
retried round needs a new object (fresh keys, seed and masks). Secrets stay in memory, hidden
from ``repr``.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, NoReturn, TypeVar, cast

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

from mpc.errors import CoordinatorMisbehaviour, InvalidShareError, ParameterError, ProtocolAbort
from mpc.keys import (
    Purpose,
    advertisement_payload,
    agree,
    compute_session_id,
    consistency_payload,
    derive_key,
    generate_x25519,
    identity_public_bytes,
    load_x25519_public,
    open_sealed,
    seal,
    seed_commitment,
    share_commitment,
    sign,
    verify,
)
from mpc.masks import apply_masks
from mpc.prg import MaskExpander
from mpc.ring import RingVector, check_ring_vector
from mpc.secagg._checks import (
    check_advertise,
    check_cohort,
    check_consistency_signatures,
    check_one_kind_per_peer,
    check_unmask_lists,
    distinct,
    fail,
)
from mpc.secagg.messages import (
    ENVELOPE_PLAINTEXT_BYTES,
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
from mpc.shamir import MAX_HOLDER, SHARE_BYTES, Share, split_among

_R = TypeVar("_R")
_STAGES = tuple(Stage)


@dataclass(slots=True, kw_only=True)
class _ClientState:
    """Per-round state of one client; secret fields are hidden from ``repr``."""

    next_stage: Stage | None = Stage.ADVERTISE_KEYS
    aborted: ProtocolAbort | None = None
    session: SessionInfo | None = None
    context: bytes = b""
    threshold: int = 0
    consistency_threshold: int = 0
    full_graph: bool = False
    ring_bits: int = 32
    vector_length: int = 0
    participants: frozenset[int] = frozenset()
    neighbours: frozenset[int] = frozenset()
    cohort: tuple[int, ...] = ()
    identities: dict[int, bytes] = field(default_factory=dict)
    signed: tuple[int, ...] | None = None
    encryption_key: bytes = b""
    masking_key: bytes = b""
    encryption_secret: X25519PrivateKey | None = field(default=None, repr=False)
    masking_secret: X25519PrivateKey | None = field(default=None, repr=False)
    seed: bytes = field(default=b"", repr=False)
    session_id: bytes = b""
    envelope_keys: dict[int, tuple[bytes, bytes]] = field(default_factory=dict, repr=False)
    mask_keys: dict[int, bytes] = field(default_factory=dict, repr=False)
    owners: frozenset[int] = frozenset()
    held: dict[int, tuple[bytes, bytes]] = field(default_factory=dict, repr=False)


class SecAggClient:
    """Client state machine for one attempt of one secure-aggregation round.

    Args:
        index: this client's participant index (also its Shamir x-coordinate).
        identity_key: the client's long-term Ed25519 identity key (signs key advertisements).
        min_cohort: the smallest cohort this data owner accepts; 0 for no minimum. With a minimum,
            the client verifies the signed advertisement of every member of the cohort.
        pinned_identities: optional index -> raw Ed25519 public key; relayed identities must match
            and every peer the client verifies must be pinned.
    """

    __slots__ = ("_identity", "_identity_public", "_index", "_min_cohort", "_pinned", "_state")

    def __init__(
        self,
        *,
        index: int,
        identity_key: Ed25519PrivateKey,
        min_cohort: int = 0,
        pinned_identities: Mapping[int, bytes] | None = None,
    ) -> None:
        if isinstance(index, bool) or not isinstance(index, int) or not 1 <= index <= MAX_HOLDER:
            raise ParameterError(f"index must be an int in [1, {MAX_HOLDER}], got {index!r}")
        if not isinstance(identity_key, Ed25519PrivateKey):
            raise ParameterError("identity_key must be an Ed25519PrivateKey")
        if isinstance(min_cohort, bool) or not isinstance(min_cohort, int) or min_cohort < 0:
            raise ParameterError(f"min_cohort must be an int >= 0, got {min_cohort!r}")
        self._index = index
        self._identity = identity_key
        self._identity_public = identity_public_bytes(identity_key)
        self._min_cohort = min_cohort
        self._pinned = dict(pinned_identities) if pinned_identities is not None else None
        self._state = _ClientState()

    def __repr__(self) -> str:
        return f"SecAggClient(index={self._index}, next_stage={self._state.next_stage})"

    @property
    def index(self) -> int:
        """This client's participant index."""
        return self._index

    def advertise_keys(self, request: AdvertiseKeysRequest) -> AdvertiseKeysResponse:
        """Stage ADVERTISE_KEYS: check the round set-up and return two fresh signed public keys."""
        return self._run(Stage.ADVERTISE_KEYS, AdvertiseKeysRequest, request, self._advertise)

    def share_keys(self, request: ShareKeysRequest) -> ShareKeysResponse:
        """Stage SHARE_KEYS: check peers' advertisements and return sealed shares for holders."""
        return self._run(Stage.SHARE_KEYS, ShareKeysRequest, request, self._share_keys)

    def masked_input(
        self, request: MaskedInputRequest, *, vector: RingVector, model_hash: bytes
    ) -> MaskedInputResponse:
        """Stage MASKED_INPUT: return ``vector`` masked with the self and pairwise masks.

        Args:
            request: the coordinator's request.
            vector: the quantized update (uint32 or uint64, of the round's vector length).
            model_hash: SHA-256 of the global model this client trained from; it must equal the
                hash bound into the session.

        Raises:
            ParameterError: if ``vector`` has the wrong dtype or length (nothing changes).
            ProtocolAbort: with the reason, if a check on the request fails.
        """
        st = self._state
        if st.next_stage is Stage.MASKED_INPUT and st.aborted is None:
            check_ring_vector(vector, ring_bits=st.ring_bits, length=st.vector_length)
        return self._run(
            Stage.MASKED_INPUT,
            MaskedInputRequest,
            request,
            lambda req: self._masked_input(req, vector, model_hash),
        )

    def consistency_check(self, request: ConsistencyCheckRequest) -> ConsistencyCheckResponse:
        """Stage CONSISTENCY_CHECK: sign the cohort of masked inputs the coordinator reports."""
        return self._run(
            Stage.CONSISTENCY_CHECK, ConsistencyCheckRequest, request, self._consistency_check
        )

    def unmask(self, request: UnmaskRequest) -> UnmaskResponse:
        """Stage UNMASK: verify a quorum signed this cohort, reveal one kind of share per peer."""
        return self._run(Stage.UNMASK, UnmaskRequest, request, self._unmask)

    # -- stage plumbing

    def _run(self, stage: Stage, kind: type[Any], request: Any, body: Callable[[Any], _R]) -> _R:
        st = self._state
        if st.aborted is not None:
            raise ProtocolAbort(
                stage, f"this client already aborted the round: {st.aborted.reason}"
            )
        try:
            if st.next_stage is not stage:
                expected = "nothing (the round is over)" if st.next_stage is None else st.next_stage
                fail(stage, f"expected stage {expected}, got {stage}")
            if not isinstance(request, kind):
                fail(stage, f"expected a {kind.__name__}")
            if stage is not Stage.ADVERTISE_KEYS and request.session != st.session:
                fail(stage, "the request belongs to another session")
            result = body(request)
        except ProtocolAbort as exc:
            self._abort(exc)
        except ParameterError as exc:  # a malformed field, e.g. of the session: same abort
            self._abort(CoordinatorMisbehaviour(stage, f"malformed request: {exc}"))
        position = _STAGES.index(stage)
        st.next_stage = _STAGES[position + 1] if position + 1 < len(_STAGES) else None
        return result

    def _abort(self, error: ProtocolAbort) -> NoReturn:
        self._forget()
        self._state.aborted = error
        self._state.next_stage = None
        raise error

    def _forget(self) -> None:
        st = self._state
        st.encryption_secret = st.masking_secret = None
        st.seed = b""
        st.envelope_keys, st.mask_keys, st.held = {}, {}, {}
        st.signed = None

    def _cohort(self, stage: Stage, value: object, previous: Any) -> tuple[int, ...]:
        return check_cohort(
            stage,
            value,
            previous=previous,
            index=self._index,
            threshold=self._state.threshold,
            min_cohort=self._min_cohort,
        )

    # -- stage 0

    def _advertise(self, req: AdvertiseKeysRequest) -> AdvertiseKeysResponse:
        st = self._state
        session, participants, neighbours, full_graph = check_advertise(
            req, index=self._index, min_cohort=self._min_cohort
        )
        st.session = session
        st.context = session_context(
            session,
            num_clients=req.num_clients,
            threshold=req.threshold,
            degree=req.degree,
            ring_bits=req.ring_bits,
            vector_length=req.vector_length,
            participants=participants,
            consistency_threshold=req.consistency_threshold,
        )
        st.threshold, st.full_graph = req.threshold, full_graph
        st.consistency_threshold = req.consistency_threshold
        st.ring_bits, st.vector_length = req.ring_bits, req.vector_length
        st.participants, st.neighbours = frozenset(participants), frozenset(neighbours)
        st.encryption_secret, st.encryption_key = generate_x25519()
        st.masking_secret, st.masking_key = generate_x25519()
        payload = advertisement_payload(
            context=st.context,
            index=self._index,
            encryption_key=st.encryption_key,
            masking_key=st.masking_key,
        )
        return AdvertiseKeysResponse(
            encryption_key=st.encryption_key,
            masking_key=st.masking_key,
            signature=sign(self._identity, payload),
        )

    # -- stage 1

    def _share_keys(self, req: ShareKeysRequest) -> ShareKeysResponse:
        stage, st, me = Stage.SHARE_KEYS, self._state, self._index
        cohort = self._cohort(stage, req.cohort, st.participants)
        members = set(cohort)
        self._check_relayed_keys(req, members)
        live_neighbours = st.neighbours & members
        to_verify = members - {me} if self._min_cohort else live_neighbours
        for peer in sorted(to_verify):
            self._verify_advertisement(req, peer)
        st.identities = self._signer_keys(members, req.identities)
        holders = sorted(live_neighbours | ({me} if st.full_graph else set()))
        if len(holders) < st.threshold:
            fail(
                stage,
                f"only {len(holders)} holders remain for this client's shares, "
                f"below the threshold {st.threshold}",
            )
        st.session_id = compute_session_id(
            context=st.context,
            public_keys={v: (req.encryption_keys[v], req.masking_keys[v]) for v in cohort},
        )
        for peer in sorted(live_neighbours):
            self._agree_with(peer, req.encryption_keys[peer], req.masking_keys[peer])
        masking_secret = cast(X25519PrivateKey, st.masking_secret)
        secret_key = masking_secret.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
        st.encryption_secret = st.masking_secret = None  # every agreement is done
        st.cohort = cohort
        st.seed = secrets.token_bytes(32)
        seed_shares = split_among(st.seed, threshold=st.threshold, holders=holders)
        key_shares = split_among(secret_key, threshold=st.threshold, holders=holders)
        envelopes: dict[int, bytes] = {}
        seed_commitments: dict[int, bytes] = {}
        key_commitments: dict[int, bytes] = {}
        for seed_share, key_share in zip(seed_shares, key_shares, strict=True):
            holder = seed_share.x
            pair = (seed_share.value_bytes(), key_share.value_bytes())
            for kind, value, commitments in (
                ("seed", pair[0], seed_commitments),
                ("key", pair[1], key_commitments),
            ):
                commitments[holder] = share_commitment(
                    session_id=st.session_id, owner=me, holder=holder, kind=kind, value=value
                )
            if holder == me:
                st.held[me] = pair
                continue
            plaintext = me.to_bytes(4, "big") + holder.to_bytes(4, "big") + pair[0] + pair[1]
            envelopes[holder] = seal(st.envelope_keys[holder][0], plaintext, aad=st.session_id)
        return ShareKeysResponse(
            envelopes=envelopes,
            seed_commitments=seed_commitments,
            key_commitments=key_commitments,
            seed_commitment=seed_commitment(session_id=st.session_id, owner=me, seed=st.seed),
        )

    def _signer_keys(self, members: set[int], relayed: Mapping[int, bytes]) -> dict[int, bytes]:
        """The identity key each cohort member's consistency signature must verify under.

        Pinned keys where the client pins its peers (a member without a pin is then unknown and
        cannot count towards the quorum), else the keys relayed with the advertisements. Two
        members with one key would let one party sign twice: refused.
        """
        keys: dict[int, bytes] = {}
        for v in sorted(members):
            key = self._pinned.get(v) if self._pinned is not None else relayed.get(v)
            if isinstance(key, bytes):
                keys[v] = key
        if len(set(keys.values())) != len(keys):
            fail(Stage.SHARE_KEYS, "two members of the cohort have the same identity key")
        return keys

    def _check_relayed_keys(self, req: ShareKeysRequest, members: set[int]) -> None:
        stage, st, me = Stage.SHARE_KEYS, self._state, self._index
        for name in ("encryption_keys", "masking_keys"):
            listed = set(getattr(req, name))
            if listed != members:
                fail(stage, f"{name} do not match the cohort (client {min(listed ^ members)})")
        if req.encryption_keys[me] != st.encryption_key or req.masking_keys[me] != st.masking_key:
            fail(stage, "the keys relayed for this client are not the ones it advertised")
        if req.identities.get(me, self._identity_public) != self._identity_public:
            fail(stage, "the identity relayed for this client is not its own")
        keys = [req.encryption_keys[v] for v in members] + [req.masking_keys[v] for v in members]
        if any(not isinstance(key, bytes) or len(key) != 32 for key in keys):
            fail(stage, "a relayed public key is not 32 bytes")
        if len(set(keys)) != len(keys):
            fail(stage, "two advertised public keys are identical")

    def _verify_advertisement(self, req: ShareKeysRequest, peer: int) -> None:
        stage = Stage.SHARE_KEYS
        identity = req.identities.get(peer)
        signature = req.signatures.get(peer)
        if not isinstance(identity, bytes) or not isinstance(signature, bytes):
            fail(stage, f"no identity or signature was relayed for peer {peer}")
        if self._pinned is not None and self._pinned.get(peer) != identity:
            fail(stage, f"the identity relayed for peer {peer} does not match the pinned key")
        payload = advertisement_payload(
            context=self._state.context,
            index=peer,
            encryption_key=req.encryption_keys[peer],
            masking_key=req.masking_keys[peer],
        )
        if not verify(identity, signature, payload):
            fail(stage, f"the signature of peer {peer}'s key advertisement does not verify")

    def _agree_with(self, peer: int, encryption_key: bytes, masking_key: bytes) -> None:
        """Derive the envelope keys (both directions) and the pairwise-mask key with ``peer``."""
        st, me = self._state, self._index
        try:
            envelope = agree(
                cast(X25519PrivateKey, st.encryption_secret), load_x25519_public(encryption_key)
            )
            mask = agree(cast(X25519PrivateKey, st.masking_secret), load_x25519_public(masking_key))
        except ParameterError as exc:
            fail(Stage.SHARE_KEYS, f"peer {peer}'s public keys are unusable: {exc}")

        def derive(secret: bytes, purpose: Purpose, parties: tuple[int, ...]) -> bytes:
            return derive_key(
                secret,
                purpose=purpose,
                session_id=st.session_id,
                context=st.context,
                parties=parties,
            )

        st.envelope_keys[peer] = (
            derive(envelope, Purpose.SHARE_ENCRYPTION, (me, peer)),
            derive(envelope, Purpose.SHARE_ENCRYPTION, (peer, me)),
        )
        st.mask_keys[peer] = derive(mask, Purpose.PAIRWISE_MASK, (min(me, peer), max(me, peer)))

    # -- stage 2

    def _masked_input(
        self, req: MaskedInputRequest, vector: RingVector, model_hash: bytes
    ) -> MaskedInputResponse:
        stage, st, me = Stage.MASKED_INPUT, self._state, self._index
        session = cast(SessionInfo, st.session)
        if model_hash != session.model_hash:
            fail(
                stage,
                "the hash of the model this client trained from differs from the one "
                "bound into the session",
            )
        cohort = self._cohort(stage, req.cohort, st.cohort)
        members = set(cohort)
        senders = set(req.envelopes)
        for sender in sorted(senders):
            if sender not in st.mask_keys:
                fail(stage, f"an envelope comes from {sender}, not a neighbour in the cohort")
            if sender not in members:
                fail(stage, f"an envelope comes from {sender}, which is not in the cohort")
        missing = (st.neighbours & members) - senders
        if missing:
            fail(stage, f"no envelope from neighbour {min(missing)} although it is listed")
        if len(senders) + st.full_graph < st.threshold:
            fail(stage, f"{len(senders)} neighbours shared keys, below the threshold")
        for sender in sorted(senders):
            st.held[sender] = self._open_envelope(sender, req.envelopes[sender])
        self_key = derive_key(
            st.seed,
            purpose=Purpose.SELF_MASK,
            session_id=st.session_id,
            context=st.context,
            parties=(me,),
        )
        masked = apply_masks(
            vector,
            index=me,
            self_key=self_key,
            pairwise_keys={peer: st.mask_keys[peer] for peer in sorted(senders)},
            expander=MaskExpander(length=st.vector_length, ring_bits=st.ring_bits),
        )
        st.cohort = cohort
        st.owners = frozenset(senders | ({me} if st.full_graph else set()))
        st.seed, st.mask_keys, st.envelope_keys = b"", {}, {}  # no longer needed
        return MaskedInputResponse(masked=masked)

    def _open_envelope(self, sender: int, envelope: object) -> tuple[bytes, bytes]:
        stage, me = Stage.MASKED_INPUT, self._index
        if not isinstance(envelope, bytes):
            fail(stage, f"the envelope from {sender} is not bytes")
        key = self._state.envelope_keys[sender][1]
        plaintext = open_sealed(key, envelope, aad=self._state.session_id)
        if plaintext is None or len(plaintext) != ENVELOPE_PLAINTEXT_BYTES:
            fail(stage, f"the envelope from {sender} does not authenticate")
        if plaintext[:4] != sender.to_bytes(4, "big") or plaintext[4:8] != me.to_bytes(4, "big"):
            fail(stage, f"the envelope from {sender} names another sender or recipient")
        seed_share, key_share = plaintext[8 : 8 + SHARE_BYTES], plaintext[8 + SHARE_BYTES :]
        try:
            Share.from_value_bytes(me, seed_share)
            Share.from_value_bytes(me, key_share)
        except InvalidShareError as exc:
            fail(stage, f"the envelope from {sender} holds an invalid share: {exc}")
        return seed_share, key_share

    # -- stage 3

    def _consistency_check(self, req: ConsistencyCheckRequest) -> ConsistencyCheckResponse:
        stage, st = Stage.CONSISTENCY_CHECK, self._state
        cohort = tuple(sorted(self._cohort(stage, req.cohort, st.cohort)))
        if len(cohort) < st.consistency_threshold:
            fail(
                stage,
                f"the cohort of {len(cohort)} masked inputs is below the consistency quorum "
                f"{st.consistency_threshold}",
            )
        st.signed = cohort
        payload = consistency_payload(
            session_id=st.session_id, context=st.context, index=self._index, cohort=cohort
        )
        return ConsistencyCheckResponse(signature=sign(self._identity, payload))

    # -- stage 4

    def _unmask(self, req: UnmaskRequest) -> UnmaskResponse:
        stage, st = Stage.UNMASK, self._state
        signed = cast(tuple[int, ...], st.signed)
        cohort = distinct(stage, "cohort", req.cohort)
        if tuple(sorted(cohort)) != signed:
            fail(
                stage,
                "the cohort of the unmask request differs from the one this client signed at "
                "the consistency check",
            )
        check_consistency_signatures(
            req.signatures,
            cohort=signed,
            session_id=st.session_id,
            context=st.context,
            identities=st.identities,
            quorum=st.consistency_threshold,
        )
        survivors, dropped = check_unmask_lists(
            req,
            index=self._index,
            cohort=signed,
            participants=st.participants,
            neighbours=st.neighbours,
            owners=st.owners,
        )
        response = UnmaskResponse(
            self_mask_shares={peer: st.held[peer][0] for peer in survivors},
            key_shares={peer: st.held[peer][1] for peer in dropped},
        )
        check_one_kind_per_peer(
            response.self_mask_shares, response.key_shares, cohort=frozenset(signed)
        )
        self._forget()
        return response
