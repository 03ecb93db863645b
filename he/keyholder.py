"""The key holder: the only holder of the secret key; decrypts only sums it assembled itself.

Threat model: the coordinator is malicious (DESIGN, security rule 6). Anything it computes can
be crafted: two ciphertexts (0, Delta) and (0, Delta x^(N/2)) decrypt to the secret key's
canonical embedding, and ct_A + Enc(0) + Enc(0) to one owner's input, whatever receipts come
with them. So the key holder never decrypts a ciphertext the coordinator made. It receives the
owners' individual CONTRIBUTION envelopes, relayed unchanged (`he.request.DecryptionRequest`),
checks each against its own enrolment (owner id -> Ed25519 key, from the roster or the
deployment, never from the coordinator), adds the ciphertexts itself and decrypts that sum
only, once per (job, round, statistic). It publishes a `PublicContext` without any secret key
and releases only flooded-and-rounded CKKS values (`he.release`), with the flooding s computed
from the job so that every value of every decryption together stays within statistical
distance 2^-64 of a key-independent simulation.

What it does not stop on its own: an *enrolled owner* colluding with the coordinator can sign
a crafted ciphertext of its own, and the key holder then decrypts honest sum + crafted; see
he/README.md (threat model) for what that costs and what masking adds.

Steps of `KeyHolder.decrypt`:
    1. refuse anything that is not a REQUEST (a contribution, or a sum someone else built);
    2. refuse a second decryption of the same (job, round, statistic) unless it is exactly
       the same set of contributions (then the same release again: nothing new leaves);
    3. for each contribution: parse it, check its ciphertexts against its signed digest, its
       receipt's binding (job, round, attempt, fingerprint, spec) and signature against the
       enrolment, refuse a second one from the same owner, and load every ciphertext with its
       checks (parameters, level, size, scale). A contribution that fails is refused with its
       reason and recorded, and the others are unaffected;
    4. k = max(own k, every accepted contributor's k); refuse fewer accepted owners than k,
       and more than the spec's max_owners;
    5. refuse beyond the decryption budget;
    6. add the accepted ciphertexts, decrypt, check the ranges the spec allows;
    7. flood (s from `flood_bits_for`) and round the CKKS values, add DP noise if the spec asks,
       log, release.
Every refusal, of a whole request or of one contribution, is kept in `KeyHolder.refusals`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from he import _wire
from he.context import PublicContext, SecretContext
from he.encoding import add_into, decrypt, load_sections, max_ciphertext_bytes, max_sections
from he.envelope import Receipt, decode_contribution, load_enrolment
from he.errors import (
    BelowMinimumCohort,
    BindingError,
    DecryptionError,
    HeError,
    ParameterError,
)
from he.fixed import decode_fixed, fixed_tolerance
from he.params import DEFAULT_STATS_PARAMS, HEParams, Scheme
from he.release import (
    DEFAULT_FLOOD_BITS,
    FP_RELATIVE_ERROR,
    MAX_FLOOD_BITS,
    MIN_FLOOD_BITS,
    TOTAL_DISTANCE_BITS,
    Release,
    add_dp_noise,
    flood_and_round,
    flood_bits_for,
    fresh_noise_bound,
    statistical_distance,
)
from he.request import DecryptionRequest
from he.spec import Spec, StatsSpec, real_encoding, real_limit, real_scales, vector_lengths

DEFAULT_MAX_DECRYPTIONS = 128
MIN_CONTRIBUTORS_FLOOR = 2


@dataclass(frozen=True, slots=True)
class DecryptionRecord:
    """One entry of the key holder's decryption log."""

    job_id: str
    round: int
    contributors: tuple[str, ...]
    aggregate_bytes: int
    attempt: int = 1
    statistic: str = ""
    flood_bits: int = 0
    distance: float = 0.0


@dataclass(frozen=True, slots=True)
class Refusal:
    """One thing the key holder refused: a whole request (owner None) or one contribution."""

    job_id: str
    round: int
    attempt: int
    owner: str | None
    reason: str


@dataclass(frozen=True, slots=True)
class _Done:
    """A decrypted (job, round, statistic): which contributions, and what was released."""

    contributions: frozenset[tuple[str, str]]
    release: Release


class KeyHolder:
    """Generates the keys, publishes the public context, decrypts only sums it assembled."""

    __slots__ = (
        "_distance",
        "_done",
        "_flood_bits",
        "_keys",
        "_log",
        "_max_decryptions",
        "_min_contributors",
        "_public",
        "_refusals",
        "_secret",
    )

    def __init__(
        self,
        secret: SecretContext,
        *,
        min_contributors: int,
        enrolment: Mapping[str, bytes],
        flood_bits: int,
        max_decryptions: int,
    ) -> None:
        """Wrap a secret context; use `KeyHolder.generate` to make fresh keys."""
        if not isinstance(secret, SecretContext):
            raise ParameterError("secret must be a SecretContext")
        _check_k(min_contributors)
        if not MIN_FLOOD_BITS <= flood_bits <= MAX_FLOOD_BITS:
            raise ParameterError(
                f"flood_bits must lie in [{MIN_FLOOD_BITS}, {MAX_FLOOD_BITS}], got {flood_bits}"
            )
        if not isinstance(max_decryptions, int) or max_decryptions < 1:
            raise ParameterError(f"max_decryptions must be >= 1, got {max_decryptions!r}")
        self._secret = secret
        self._public = PublicContext.from_bytes(secret.public_bytes())
        self._keys = load_enrolment(enrolment)
        self._min_contributors = min_contributors
        self._flood_bits = flood_bits
        self._max_decryptions = max_decryptions
        self._log: list[DecryptionRecord] = []
        self._refusals: list[Refusal] = []
        self._done: dict[tuple[str, int, str], _Done] = {}
        self._distance = 0.0

    @classmethod
    def generate(
        cls,
        params: HEParams | Sequence[HEParams] = DEFAULT_STATS_PARAMS,
        *,
        min_contributors: int,
        enrolment: Mapping[str, bytes],
        flood_bits: int = DEFAULT_FLOOD_BITS,
        max_decryptions: int = DEFAULT_MAX_DECRYPTIONS,
    ) -> KeyHolder:
        """Generate fresh keys (SEAL draws them from the OS CSPRNG).

        Args:
            params: one `HEParams` or one per scheme (default: CKKS for reals, BFV for counts).
            min_contributors: k, the fewest distinct owners a sum may have (>= 2).
            enrolment: owner id -> raw Ed25519 public key of every owner of the job (the
                roster's owner keys, never the coordinator's list).
            flood_bits: the least flooding s; each decryption floods with at least the s that
                `flood_bits_for` computes from its number of values and ``max_decryptions``.
            max_decryptions: how many sums these keys may ever decrypt (the job's N_d).

        Raises:
            ParameterError: k below 2, bad flood_bits or budget, or rejected parameters.
            BindingError: malformed enrolment.
        """
        items = (params,) if isinstance(params, HEParams) else tuple(params)
        return cls(
            SecretContext(items),
            min_contributors=min_contributors,
            enrolment=enrolment,
            flood_bits=flood_bits,
            max_decryptions=max_decryptions,
        )

    def __repr__(self) -> str:
        return (
            f"KeyHolder(k={self._min_contributors}, owners={len(self._keys)}, "
            f"fingerprint={self._public.fingerprint[:16]}..., <secret key>)"
        )

    def public_context(self) -> PublicContext:
        """The public context to publish to owners and the coordinator (no secret key)."""
        return self._public

    @property
    def min_contributors(self) -> int:
        """The current threshold k."""
        return self._min_contributors

    def raise_min_contributors(self, k: int) -> None:
        """Raise k (an owner's policy may demand more); it can never go down.

        Raises:
            ParameterError: k is lower than the current threshold or below 2.
        """
        _check_k(k)
        if k < self._min_contributors:
            raise ParameterError(
                f"min_contributors can only be raised: current {self._min_contributors}, asked {k}"
            )
        self._min_contributors = k

    @property
    def decryption_log(self) -> tuple[DecryptionRecord, ...]:
        """Every decryption so far."""
        return tuple(self._log)

    @property
    def refusals(self) -> tuple[Refusal, ...]:
        """Every refusal so far: whole requests (owner None) and single contributions."""
        return tuple(self._refusals)

    @property
    def statistical_distance(self) -> float:
        """The total statistical distance the releases so far may add (at most 2^-64)."""
        return self._distance

    def flood_bits_for(self, values: int) -> int:
        """The flooding s for a release of ``values`` CKKS values under this key's budget."""
        return max(
            self._flood_bits, flood_bits_for(values=values, decryptions=self._max_decryptions)
        )

    def decrypt(self, request: bytes | DecryptionRequest) -> Release:
        """Assemble the sum of at least k owners' contributions, decrypt it, release it.

        Args:
            request: the owners' contributions as relayed by the coordinator (see module steps).

        Returns:
            The release (the same one again for exactly the same contributions).

        Raises:
            NotAnAggregate: a contribution or a coordinator-built sum instead of a request.
            BelowMinimumCohort: fewer distinct accepted enrolled owners than k.
            BindingError: more contributors than the spec's max_owners.
            DecodeError: malformed request bytes.
            DecryptionError: a second, different decryption of the same (job, round,
                statistic); the budget is spent; the sums are out of range.
        """
        try:
            req = (
                request
                if isinstance(request, DecryptionRequest)
                else DecryptionRequest.from_bytes(request)
            )
        except HeError as exc:
            self._refusals.append(Refusal("", 0, 0, None, f"{type(exc).__name__}: {exc}"))
            raise
        try:
            return self._decrypt_request(req)
        except HeError as exc:
            self._refusals.append(
                Refusal(req.job_id, req.round, req.attempt, None, f"{type(exc).__name__}: {exc}")
            )
            raise

    def _decrypt_request(self, req: DecryptionRequest) -> Release:
        spec = req.spec
        spec.check_params(self._public.params)
        n_int, n_real = vector_lengths(spec)
        expected_cohort = ""
        if req.cohort is not None:
            cohort = req.cohort
            if (cohort.job_id, cohort.round, cohort.attempt) != (
                req.job_id,
                req.round,
                req.attempt,
            ):
                raise BindingError("the masking cohort is for another job, round or attempt")
            cohort.check(self._keys, min_size=self._min_contributors)
            expected_cohort = cohort.digest
        accepted: dict[str, tuple[Receipt, dict[str, list[Any]]]] = {}
        digests: set[tuple[str, str]] = set()
        for index, blob in enumerate(req.contributions):
            try:
                receipt, loaded = self._check_contribution(req, blob, n_int, n_real)
                if receipt.cohort != expected_cohort:
                    raise BindingError(
                        f"contribution of {receipt.owner_id!r} is masked for cohort "
                        f"{receipt.cohort[:16] or 'none'!r}, the request's is "
                        f"{expected_cohort[:16] or 'none'!r}"
                    )
            except HeError as exc:
                self._refusals.append(
                    Refusal(
                        req.job_id,
                        req.round,
                        req.attempt,
                        _owner_of(blob),
                        f"contribution {index}: {type(exc).__name__}: {exc}",
                    )
                )
                continue
            if receipt.owner_id in accepted:
                self._refusals.append(
                    Refusal(
                        req.job_id,
                        req.round,
                        req.attempt,
                        receipt.owner_id,
                        f"contribution {index}: a second contribution of {receipt.owner_id!r}",
                    )
                )
                continue
            accepted[receipt.owner_id] = (receipt, loaded)
            digests.add((receipt.owner_id, receipt.ciphertext_digest))
        key = (req.job_id, req.round, spec.digest)
        done = self._done.get(key)
        if done is not None:
            if done.contributions == frozenset(digests):
                return done.release  # exactly the same sum again: nothing new leaves
            raise DecryptionError(
                f"job {req.job_id!r} round {req.round} was already decrypted for this statistic "
                f"over {sorted(o for o, _ in done.contributions)}; the key holder decrypts once "
                "per (job, round, statistic), so no difference of two sums can isolate an owner"
            )
        if req.cohort is not None and set(accepted) != set(req.cohort.owners):
            missing = sorted(set(req.cohort.owners) - set(accepted))
            raise BindingError(
                f"the masks cancel only over the whole cohort; missing {missing}: restart the "
                "attempt with fresh keys and the owners still alive"
            )
        receipts = [r for r, _ in accepted.values()]
        required = max([self._min_contributors, *(r.min_contributors for r in receipts)])
        if len(accepted) < required:
            raise BelowMinimumCohort(contributors=len(accepted), required=required)
        if len(accepted) > spec.max_owners:
            raise BindingError(
                f"{len(accepted)} contributors; the spec allows at most {spec.max_owners} "
                "(its no-wrap guarantee depends on it)"
            )
        if len(self._log) >= self._max_decryptions:
            raise DecryptionError(f"decryption budget of {self._max_decryptions} is spent")
        sums: dict[str, list[Any] | None] = {"integers": None, "reals": None}
        for _, loaded in accepted.values():
            for part, vectors in loaded.items():
                if vectors:
                    sums[part] = add_into(sums[part], vectors)
        bfv = self._public.params_for(Scheme.BFV) if n_int else None
        real, bits = real_encoding(spec, self._public.params) if n_real else (None, None)
        integers = self._decrypt(bfv, sums["integers"], n_int).astype(np.int64)
        reals = self._decrypt(real, sums["reals"], n_real)
        if bits is not None:  # BFV fixed point: exact, no key-dependent noise to flood
            reals = decode_fixed(reals.astype(np.int64), bits=bits)
        reals = reals.astype(np.float64)
        _check_ranges(spec, integers, reals, contributors=len(accepted))
        contributors = tuple(accepted)
        grid = tolerance = 0.0
        flood_bits = 0
        distance = 0.0
        if n_real and bits is not None:
            grid, tolerance = 2.0**-bits, fixed_tolerance(owners=len(accepted), bits=bits)
            reals = reals * real_scales(spec)
        elif n_real:
            flood_bits = self.flood_bits_for(n_real)
            distance = statistical_distance(values=n_real, flood_bits=flood_bits)
            if self._distance + distance > 2.0**-TOTAL_DISTANCE_BITS:
                raise DecryptionError(
                    "the release would take the key's total statistical distance above 2^-64"
                )
            ckks = self._public.params_for(Scheme.CKKS)
            # the deviation to hide: encryption noise of the sum, and SEAL's double-precision
            # decoding error (relative to the largest slot the spec allows; data-independent)
            bound = len(accepted) * fresh_noise_bound(ckks) + 2 * real_limit(spec) * (
                FP_RELATIVE_ERROR
            )
            reals, grid, tolerance = flood_and_round(
                reals, noise_bound=bound, flood_bits=flood_bits
            )
            reals = reals * real_scales(spec)
        dp = None
        if isinstance(spec, StatsSpec) and spec.dp is not None:
            integers, reals, dp = add_dp_noise(spec, integers, reals)
        integers.setflags(write=False)
        reals.setflags(write=False)
        release = Release(
            job_id=req.job_id,
            round=req.round,
            spec=spec,
            contributors=contributors,
            integers=integers,
            reals=reals,
            real_tolerance=tolerance,
            grid=grid,
            flood_bits=flood_bits,
            dp=dp,
        )
        size = sum(len(b) for b in req.contributions)
        self._distance += distance
        self._log.append(
            DecryptionRecord(
                req.job_id,
                req.round,
                contributors,
                size,
                attempt=req.attempt,
                statistic=spec.digest,
                flood_bits=flood_bits,
                distance=distance,
            )
        )
        self._done[key] = _Done(frozenset(digests), release)
        return release

    def _check_contribution(
        self, req: DecryptionRequest, blob: bytes, n_int: int, n_real: int
    ) -> tuple[Receipt, dict[str, list[Any]]]:
        """Step 3 for one contribution: digest, binding, signature, then every ciphertext."""
        receipt, bfv, ckks, _ = decode_contribution(
            blob,
            max_blobs=self._max_blobs(req.spec, n_int, n_real),
            max_blob_bytes=self._max_blob_bytes(),
        )
        receipt.verify(
            self._keys,
            job_id=req.job_id,
            round=req.round,
            attempt=req.attempt,
            fingerprint=self._public.fingerprint,
            spec=req.spec,
        )
        loaded = load_sections(
            self._secret.tenseal,
            self._public.params,
            req.spec,
            bfv,
            ckks,
            lengths=(n_int, n_real),
            what=f"contribution of {receipt.owner_id!r}",
        )
        return receipt, loaded

    def _max_blob_bytes(self) -> int:
        return max(max_ciphertext_bytes(p) for p in self._public.params)

    def _max_blobs(self, spec: Spec, n_int: int, n_real: int) -> int:
        return max_sections(self._public.params, spec, n_int, n_real)

    def _decrypt(
        self, params: HEParams | None, vectors: list[Any] | None, length: int
    ) -> npt.NDArray[Any]:
        if not length or vectors is None or params is None:
            return np.zeros(0)
        return decrypt(self._secret.tenseal(params.scheme), params, vectors)


def _owner_of(blob: bytes) -> str | None:
    """The owner a refused contribution claims to be from, if its header parses at all."""
    try:
        env = _wire.decode(
            blob, max_bytes=len(blob), max_blobs=2**20, max_blob_bytes=len(blob), what="c"
        )
        return Receipt.from_json(env.header.get("receipt")).owner_id
    except HeError:
        return None


def _check_k(k: int) -> None:
    if not isinstance(k, int) or isinstance(k, bool) or k < MIN_CONTRIBUTORS_FLOOR:
        raise ParameterError(
            f"min_contributors must be an integer >= {MIN_CONTRIBUTORS_FLOOR}, got {k!r}"
        )


def _check_ranges(
    spec: Spec,
    integers: npt.NDArray[np.int64],
    reals: npt.NDArray[np.float64],
    *,
    contributors: int,
) -> None:
    """Refuse decrypted (still scaled) sums that no honest set of contributors could produce."""
    if isinstance(spec, StatsSpec):
        rows = contributors * spec.max_rows_per_owner
        count = int(integers[0])
        if not 0 <= count <= rows:
            raise DecryptionError(f"decrypted count {count} outside [0, {rows}]")
        for h, start in zip(spec.histograms, spec.layout.histogram_offsets, strict=True):
            bins = integers[start : start + h.bins]
            if np.any(bins < 0) or int(bins.sum()) != count:
                raise DecryptionError(f"histogram of {h.column!r} does not sum to the count")
        limits = np.full(reals.shape, float(rows))  # slots hold sums / per-row bounds
    else:
        limits = np.full(reals.shape, spec.max_abs * contributors)
    if reals.size and np.any(np.abs(reals) > limits * (1 + 1e-9) + 1e-6):
        raise DecryptionError("decrypted CKKS sums exceed what the spec's ranges allow")
