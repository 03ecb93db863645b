"""Secure aggregation as an aggregator: the coordinator learns only the cohort's weighted sum.

Stages (``secagg.<stage>``, Bonawitz et al. CCS 2017, Section 4; Bell et al. CCS 2020): advertise
keys, share keys, masked input, consistency check, unmask. The first task of a round carries the
global model, so that its SHA-256 is bound into the session before any key is made; the client
trains in the masked-input stage and sends

    y = Quantize([w * update, w]) + masks        (w = min(examples, max_weight) / max_weight)

so the unmasked, dequantized sum holds sum(w * update) and sum(w): the example-weighted mean
(FedAvg's weighting, with examples capped) without any client's update or example count. The
protocol itself lives in :mod:`mpc` (state machines that never see the network); this module
only maps its messages onto payload fields and cohort names onto participant indices.

Threat model: a coordinator that may lie about who dropped out (the consistency check stops it
from telling clients different stories) and up to ``secagg.corrupt_rate`` colluding clients; the
clients' checks (:class:`mpc.SecAggClient`) refuse the deviations listed there.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

import mpc
from mpc.secagg.messages import Request, Response

from ..client.training import owner_fit
from ..config import JobConfig, SecAggSection
from ..dp.plan import DPPlan, check_plan, make_plan, plan_fields, read_owner_epsilon
from ..dp.skellam import new_rotation_seed, skellam_decode, skellam_encode
from ..errors import CodecError, ConfigError, PolicyRefused, ProtocolError, RoundAborted
from ..federation import pinned_peers
from ..payload import Payload
from ._secagg_fields import _request_type, _response_type, message_from_fields, message_to_fields
from .base import (
    AggregateUpdate,
    FloatVector,
    RoundContext,
    fit_to_fields,
    model_hash,
)
from .mean import quorum_of

PREFIX = "secagg"
STAGES = tuple(f"{PREFIX}.{s.value}" for s in mpc.Stage)
MAX_AUTO_BITS = 24


def _stage(name: str) -> mpc.Stage:
    if not name.startswith(PREFIX + "."):
        raise CodecError(f"stage {name!r} is not a secure-aggregation stage")
    try:
        return mpc.Stage(name[len(PREFIX) + 1 :])
    except ValueError:
        raise CodecError(f"stage {name!r} is not a secure-aggregation stage") from None


# --- parameters --------------------------------------------------------------------------------


def round_parameters(
    section: SecAggSection, cohort: int, *, modular: bool = False
) -> tuple[mpc.SecAggParams, int]:
    """The round's SecAgg parameters and quantization bits for a cohort of ``cohort`` clients.

    With ``modular`` (Skellam encodings, whose sums wrap around the ring by design and are
    decoded modulo 2^bits) no wraparound rule applies and the returned bits are 0.

    Raises:
        ConfigError: the explicit (k, t) break a rule, or the cohort is too small; the message
            names the rule and the allowed range.
    """
    bits = section.quantization_bits
    if bits == 0 and not modular:
        headroom = (1 << section.ring_bits) // max(cohort, 1)
        bits = min(MAX_AUTO_BITS, headroom.bit_length() - 1)
    q_bits: int | None = None if modular else bits
    try:
        if section.degree:
            params = mpc.SecAggParams(
                num_clients=cohort,
                threshold=section.threshold,
                degree=section.degree,
                dropout_rate=section.dropout_rate,
                corrupt_rate=section.corrupt_rate,
                adversary=mpc.Adversary(section.adversary),
                ring_bits=section.ring_bits,
                quantization_bits=q_bits,
            )
        elif section.full_graph:
            params = _full_graph(section, cohort, q_bits)
        else:
            params = mpc.find_parameters(
                num_clients=cohort,
                dropout_rate=section.dropout_rate,
                corrupt_rate=section.corrupt_rate,
                adversary=section.adversary,
                ring_bits=section.ring_bits,
                quantization_bits=q_bits,
            )
    except mpc.ParameterError as exc:
        raise ConfigError(f"[secagg] for a cohort of {cohort}: {exc}") from exc
    return params, 0 if modular else bits


def _full_graph(section: SecAggSection, cohort: int, bits: int | None) -> mpc.SecAggParams:
    last: mpc.ParameterError | None = None
    for t in range(2, cohort + 1):  # the smallest threshold the full-graph rules accept
        try:
            return mpc.SecAggParams(
                num_clients=cohort,
                threshold=t,
                degree=cohort - 1,
                dropout_rate=section.dropout_rate,
                corrupt_rate=section.corrupt_rate,
                adversary=mpc.Adversary(section.adversary),
                ring_bits=section.ring_bits,
                quantization_bits=bits,
            )
        except mpc.ParameterError as exc:
            last = exc
    raise mpc.ParameterError(f"no threshold fits the complete graph: {last}")


# --- coordinator side --------------------------------------------------------------------------


class SecureSumServerRound:
    """Coordinator side of one secure-aggregation round attempt (holds no client secret)."""

    stages: tuple[str, ...] = STAGES

    def __init__(
        self,
        ctx: RoundContext,
        section: SecAggSection,
        *,
        quorum_fraction: float,
        plan: DPPlan | None = None,
    ) -> None:
        self._ctx = ctx
        self._section = section
        self._quorum_fraction = quorum_fraction
        self._dim = int(ctx.global_weights.shape[0])
        self._plan = plan
        self._skellam = plan.skellam if plan is not None else None
        self._seed = new_rotation_seed() if self._skellam is not None else b""
        self._length = self._skellam.padded_dim if self._skellam else self._dim + 1
        self._owner_epsilon: dict[str, float] = {}
        self.params, self.bits = round_parameters(
            section, len(ctx.cohort), modular=self._skellam is not None
        )
        self._index = {cid: i for i, cid in enumerate(sorted(ctx.cohort), start=1)}
        self._name = {i: cid for cid, i in self._index.items()}
        missing = [cid for cid in ctx.cohort if len(ctx.identities.get(cid, b"")) != 32]
        if missing:
            raise RoundAborted(stage=STAGES[0], reason=f"clients without identity keys: {missing}")
        session = mpc.SessionInfo(ctx.job_id, ctx.round, ctx.attempt, ctx.model_hash)
        self._server = mpc.SecAggServer(
            self.params,
            session,
            vector_length=self._length,
            identities={self._index[c]: ctx.identities[c] for c in ctx.cohort},
        )
        self._next: dict[int, Request] = {}
        self._result: mpc.SecAggResult | None = None
        self._masked_dtype = "uint32" if section.ring_bits == 32 else "uint64"

    def tasks(self, stage: str, alive: Sequence[str]) -> dict[str, Payload]:
        """One request per live client; the first stage also carries the model and settings."""
        step = _stage(stage)
        if step is mpc.Stage.ADVERTISE_KEYS:
            self._next = dict(self._server.start(tuple(self._index[c] for c in alive)))
        common: dict[str, object] = {}
        if step is mpc.Stage.ADVERTISE_KEYS:
            common = {
                "weights": self._ctx.global_weights,
                **fit_to_fields(self._ctx.fit),
                "q.bits": self.bits,
                "q.clip": float(self._section.clip),
                "q.max_weight": self._section.max_weight,
                # Who each index is: owners with a roster pin every peer to its roster key.
                "peers.index": tuple(sorted(self._name)),
                "peers.name": tuple(self._name[i].encode() for i in sorted(self._name)),
            }
            if self._plan is not None:
                common.update(plan_fields(self._plan))
            if self._skellam is not None:
                common["dp.rotation_seed"] = self._seed
        out = {}
        for index, request in self._next.items():
            out[self._name[index]] = Payload(
                {"index": index, **common, **message_to_fields(request)}
            )
        return out

    def quorum(self, stage: str, sent: int) -> int:
        """At least the threshold (t survivors) and the job's quorum.

        Up to the consistency check also its quorum (the owners refuse to unmask with fewer
        signatures). With distributed DP also at least the survivors the noise is calibrated
        for: fewer shares of noise would spend more than the owners charged.
        """
        floor = self._skellam.min_clients if self._skellam is not None else 1
        protocol = self.params.threshold
        if _stage(stage) is not mpc.Stage.UNMASK:
            protocol = self.params.consistency_threshold
        return max(protocol, quorum_of(sent, self._quorum_fraction, floor))

    def check(self, stage: str, client_id: str, payload: Payload) -> object:
        """Decode the client's response and let the protocol validate it."""
        step = _stage(stage)
        index = self._index.get(client_id)
        if index is None:
            raise CodecError(f"client {client_id!r} is not in this round's cohort")
        masked = (self._masked_dtype, self._length) if step is mpc.Stage.MASKED_INPUT else None
        response = message_from_fields(_response_type(step), payload, masked=masked)
        try:
            self._server.check(step, index, response)
        except mpc.InvalidMessage as exc:
            raise CodecError(str(exc)) from exc
        epsilon = read_owner_epsilon(payload)
        if epsilon is not None:
            self._owner_epsilon[client_id] = epsilon
        return response

    def collect(self, stage: str, results: Mapping[str, object], dropped: Sequence[str]) -> None:
        """Advance the protocol with the stage's responses (missing clients have dropped)."""
        step = _stage(stage)
        responses = {self._index[c]: r for c, r in results.items()}
        try:
            if step is mpc.Stage.ADVERTISE_KEYS:
                self._next = dict(self._server.advertise_keys(responses))  # type: ignore[arg-type]
            elif step is mpc.Stage.SHARE_KEYS:
                self._next = dict(self._server.share_keys(responses))  # type: ignore[arg-type]
            elif step is mpc.Stage.MASKED_INPUT:
                self._next = dict(self._server.masked_input(responses))  # type: ignore[arg-type]
            elif step is mpc.Stage.CONSISTENCY_CHECK:
                self._next = dict(self._server.consistency_check(responses))  # type: ignore[arg-type]
            else:
                self._result = self._server.unmask(responses)  # type: ignore[arg-type]
        except mpc.ProtocolAbort as exc:
            raise RoundAborted(stage=stage, reason=str(exc)) from exc

    def finish(self) -> AggregateUpdate:
        """Dequantize (or Skellam-decode) the sum and turn it into the mean update."""
        if self._result is None:
            raise RoundAborted(stage=STAGES[-1], reason="the unmask stage did not complete")
        result = self._result
        contributors = tuple(sorted(self._name[i] for i in result.survivors))
        dropped = {str(s): [self._name[i] for i in ids] for s, ids in result.dropped.items() if ids}
        details: dict[str, object] = {
            "secagg_degree": self.params.degree,
            "secagg_threshold": self.params.threshold,
            "secagg_dropped": sum(len(v) for v in dropped.values()),
        }
        client_metrics = {c: {"epsilon": e} for c, e in self._owner_epsilon.items()}
        if self._skellam is not None and self._plan is not None:
            noisy_sum = skellam_decode(result.total, config=self._skellam, rotation_seed=self._seed)
            n = len(contributors)
            if self._plan.mode == "fedsgd":  # one SGD step: minus the noisy mean gradient
                scale = -1.0 / self._plan.expected_batch
            else:  # distributed DP-FedAvg: the mean of the clipped updates
                scale = 1.0 / n
            return AggregateUpdate(
                mean_update=(noisy_sum.astype(np.float64) * scale).astype(np.float32),
                contributors=contributors,
                total_weight=float(n),
                client_metrics=client_metrics,
                details={**details, "dp_survivors": n, "skellam_bits": self._skellam.bits},
            )
        total = mpc.dequantize_sum(
            result.total,
            num_clients=result.num_summed,
            clip=self._section.clip,
            bits=self.bits,
            ring_bits=self._section.ring_bits,
        )
        weight = float(total[-1])
        if not weight > 0:
            raise RoundAborted(stage=STAGES[-1], reason=f"the summed weight is {weight}")
        mean = (total[:-1] / weight).astype(np.float32)
        return AggregateUpdate(
            mean_update=mean,
            contributors=contributors,
            total_weight=weight * self._section.max_weight,
            client_metrics=client_metrics,
            details={**details, "secagg_bits": self.bits, "dp_survivors": len(contributors)},
        )


class SecureSumAggregator:
    """Makes a :class:`SecureSumServerRound` per round attempt."""

    name = "secagg"

    def __init__(
        self, section: SecAggSection, *, quorum_fraction: float, job: JobConfig | None = None
    ) -> None:
        self.section = section
        self.quorum_fraction = quorum_fraction
        self._job = job
        self._plan: DPPlan | None = None
        self._planned_dim = -1

    def plan(self, dim: int) -> DPPlan | None:
        """The job's DP plan for a model of ``dim`` parameters (computed once)."""
        if self._job is None:
            return None
        if dim != self._planned_dim:
            self._plan, self._planned_dim = make_plan(self._job, dim=dim), dim
        return self._plan

    def server_round(self, ctx: RoundContext) -> SecureSumServerRound:
        """A fresh protocol instance (fresh graph, fresh session, fresh rotation seed)."""
        plan = self.plan(int(ctx.global_weights.shape[0]))
        return SecureSumServerRound(
            ctx, self.section, quorum_fraction=self.quorum_fraction, plan=plan
        )


# --- data-owner side ---------------------------------------------------------------------------


def weighted_input(
    update: FloatVector, examples: int, *, max_weight: int
) -> npt.NDArray[np.float64]:
    """``[w * update, w]`` with ``w = min(examples, max_weight) / max_weight``."""
    w = min(examples, max_weight) / max_weight
    out = np.empty(update.shape[0] + 1, dtype=np.float64)
    out[:-1] = update
    out[:-1] *= w
    out[-1] = w
    return out


class SecureSumClientRound:
    """Data-owner side of one round attempt: fresh keys, secrets in memory only."""

    def __init__(self, ctx: Any, *, round: int, attempt: int, rng: np.random.Generator) -> None:
        self._ctx = ctx
        self._round, self._attempt = round, attempt
        self._rng = rng
        self._client: mpc.SecAggClient | None = None
        self._weights: FloatVector | None = None
        self._hash = b""
        self._fit: Any = None
        self._q: tuple[int, float, int] = (0, 0.0, 0)
        self._ring_bits = 32
        self._privacy = getattr(ctx, "privacy", None)
        self._plan: DPPlan | None = self._privacy.plan if self._privacy is not None else None
        self._skellam = self._plan.skellam if self._plan is not None else None
        self._seed = b""
        self._epsilon: float | None = None

    def handle(self, stage: str, payload: Payload) -> Payload:
        """Answer one stage's request; any check that fails refuses the task with its reason."""
        step = _stage(stage)
        request = message_from_fields(_request_type(step), payload)
        try:
            if step is mpc.Stage.ADVERTISE_KEYS:
                response: Response = self._advertise(payload, request)
            elif self._client is None:
                raise ProtocolError(f"{stage} arrived before the round's key advertisement")
            elif step is mpc.Stage.SHARE_KEYS:
                response = self._client.share_keys(request)
            elif step is mpc.Stage.MASKED_INPUT:
                response = self._masked_input(request)
            elif step is mpc.Stage.CONSISTENCY_CHECK:
                response = self._client.consistency_check(request)
            else:
                response = self._client.unmask(request)
        except (mpc.ProtocolAbort, mpc.CoordinatorMisbehaviour, mpc.ParameterError) as exc:
            raise ProtocolError(f"secure aggregation refused at {stage}: {exc}") from exc
        fields = message_to_fields(response)
        if step is mpc.Stage.MASKED_INPUT and self._epsilon is not None:
            fields["privacy.epsilon"] = self._epsilon
        return Payload(fields)

    def _advertise(self, payload: Payload, request: Any) -> Response:
        policy = self._ctx.policy
        cohort = len(request.participants)
        if policy.min_cohort and cohort < policy.min_cohort:
            raise PolicyRefused(
                f"the cohort has {cohort} clients; the owner requires at least {policy.min_cohort}"
            )
        dim = self._ctx.layout.total
        weights = payload.get_tensor("weights", dtype="float32", shape=(dim,), finite=True)
        self._weights = np.asarray(weights)
        self._hash = model_hash(self._weights)
        self._fit = owner_fit(self._ctx.job, payload, round=self._round)
        if self._plan is not None:
            check_plan(self._plan, payload)  # no less noise than the job agreed to
        elif "dp.mode" in payload:
            raise PolicyRefused("the task asks for DP parameters the job does not have")
        job = self._ctx.job
        # The owner's own parameters for this cohort size, from its own job file: the request
        # is only checked against them (a lower threshold or a smaller ring is a lie).
        params, bits = round_parameters(job.secagg, cohort, modular=self._skellam is not None)
        if self._skellam is not None:
            self._seed = payload.get_bytes("dp.rotation_seed", size=32)
            length = self._skellam.padded_dim
        else:
            self._q = (bits, float(job.secagg.clip), job.secagg.max_weight)
            claimed = (
                payload.get_int("q.bits", lo=1, hi=40),
                payload.get_float("q.clip", lo=1e-12, hi=1e12),
                payload.get_int("q.max_weight", lo=1, hi=10**9),
            )
            names = ("q.bits", "q.clip", "q.max_weight")
            for name, got, want in zip(names, claimed, self._q, strict=True):
                if got != want:
                    raise PolicyRefused(
                        f"the task asks for {name} = {got!r}; the job file gives {want!r}"
                    )
            length = dim + 1
        check_request(request, params, vector_length=length)
        self._ring_bits = params.ring_bits
        index = payload.get_int("index", lo=1, hi=2**31 - 1)
        self._client = mpc.SecAggClient(
            index=index,
            identity_key=self._ctx.identity_key,
            min_cohort=policy.min_cohort,
            pinned_identities=self._pins(payload, request, index),
        )
        return self._client.advertise_keys(request)

    def _pins(self, payload: Payload, request: Any, index: int) -> dict[int, bytes] | None:
        """With a roster: every peer's identity key from the roster, by the name it is given.

        A coordinator that invents peers, gives a peer another key, names one owner twice or
        gives this owner another name is refused before any key is shared.
        """
        roster = getattr(self._ctx, "roster", None)
        if roster is None:
            return None
        indices = payload.get_ints("peers.index", max_len=1 << 20)
        names = payload.get_bytes_list("peers.name", item_max_size=256)
        if len(indices) != len(names):
            raise CodecError(f"peers.index has {len(indices)} entries, peers.name {len(names)}")
        try:
            named = {i: n.decode() for i, n in zip(indices, names, strict=True)}
        except UnicodeDecodeError:
            raise CodecError("peers.name holds a name that is not UTF-8") from None
        missing = sorted(set(request.participants) - set(named))
        if missing:
            raise PolicyRefused(f"the task names no roster member for peers {missing[:5]}")
        cohort = {i: named[i] for i in request.participants}
        if len(set(cohort.values())) != len(cohort):
            raise PolicyRefused("the task names one roster owner for two peers")
        if cohort.get(index) != self._ctx.client_id:
            raise PolicyRefused(
                f"the task gives this owner's index {index} to {cohort.get(index)!r}"
            )
        return pinned_peers(roster, cohort)

    def _masked_input(self, request: Any) -> Response:
        if self._client is None or self._weights is None:
            raise ProtocolError("masked input requested before the key advertisement")
        # Counted before anything is computed; without DP, once per round and per model.
        self._ctx.releases.release(
            round=self._round, attempt=self._attempt, model_hash=self._hash, once=self._plan is None
        )
        if self._skellam is not None:
            vector = self._skellam_input()
            return self._client.masked_input(request, vector=vector, model_hash=self._hash)
        update, examples, metrics = self._ctx.local_update(self._weights, self._fit)
        if "epsilon" in metrics:
            self._epsilon = float(metrics["epsilon"])
        bits, clip, max_weight = self._q
        vector = mpc.quantize(
            weighted_input(update, examples, max_weight=max_weight),
            clip=clip,
            bits=bits,
            ring_bits=self._ring_bits,
            rng=self._rng,
        )
        return self._client.masked_input(request, vector=vector, model_hash=self._hash)

    def _skellam_input(self) -> mpc.RingVector:
        """Distributed DP: the owner's Skellam-encoded contribution, charged before it leaves."""
        plan, config, privacy = self._plan, self._skellam, self._privacy
        if plan is None or config is None or privacy is None or self._weights is None:
            raise ProtocolError("no Skellam plan for this round")
        # Charge first: nothing is computed for a round the owner's budget cannot pay for.
        self._epsilon = privacy.charge(round=self._fit.round, event=plan.owner_event())
        if plan.mode == "fedsgd":
            weights = self._ctx.layout.unflatten(np.array(self._weights, copy=True))
            vector, batch = self._ctx.trainer.clipped_gradient_sum(
                weights, clip=plan.clip, sample_rate=config.sample_rate, rng=self._rng
            )
            ring = skellam_encode(
                vector,
                config=config,
                rotation_seed=self._seed,
                rng=self._rng,
                num_examples=batch,
            )
        else:
            update, _, _ = self._ctx.raw_update(self._weights, self._fit)
            ring = skellam_encode(update, config=config, rotation_seed=self._seed, rng=self._rng)
        dtype = np.uint32 if self._ring_bits == 32 else np.uint64
        return mpc.RingVector(ring.astype(dtype, copy=False))


def check_request(
    request: mpc.AdvertiseKeysRequest, params: mpc.SecAggParams, *, vector_length: int
) -> None:
    """Refuse a key-advertisement request whose round set-up is not the owner's own.

    Raises:
        PolicyRefused: naming the field that differs from the owner's parameters.
    """
    expected = {
        "num_clients": params.num_clients,
        "threshold": params.threshold,
        "degree": params.degree,
        "ring_bits": params.ring_bits,
        "vector_length": vector_length,
        "consistency_threshold": params.consistency_threshold,
    }
    for name, want in expected.items():
        got = getattr(request, name)
        if got != want:
            raise PolicyRefused(
                f"the coordinator asks for secagg {name} = {got!r}; this owner's job gives "
                f"{want!r} for a cohort of {params.num_clients}"
            )
    if len(request.neighbours) != params.degree:
        raise PolicyRefused(
            f"the coordinator gives {len(request.neighbours)} neighbours; the degree is "
            f"{params.degree}"
        )


def check_job(job: JobConfig) -> None:
    """Refuse at start-up a secure-aggregation job whose parameters cannot work."""
    if job.aggregation.kind == PREFIX:
        round_parameters(job.secagg, max(job.sampling.min_clients, 2))
