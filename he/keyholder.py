"""The key holder: the only holder of the secret key; decrypts aggregates of at least k owners.

Threat model: the key holder is honest-but-curious and separate from the coordinator (DESIGN
security rule 5; REFERENCES 4.4). It publishes a `PublicContext` without any secret key, never
receives an individual ciphertext, and releases only flooded-and-rounded CKKS values (see
`he.release`), so a raw CKKS decryption never leaves it. Every decryption is logged and counted
against ``max_decryptions`` (the N_d of REFERENCES 4.3).

Steps of `KeyHolder.decrypt`:
    1. refuse anything that is not an AGGREGATE envelope (an owner's CONTRIBUTION included);
    2. check the context fingerprint and the spec against these keys;
    3. verify every receipt's signature against the enrolment and its binding (job, round,
       fingerprint, spec digest, payload); count distinct enrolled owners;
    4. k = max(own k, every contributor's k); refuse fewer contributors than k;
    5. refuse an aggregate whose ciphertexts are one owner's contribution;
    6. refuse beyond the decryption budget;
    7. check every ciphertext (parameters, level, size, scale), decrypt, check the ranges the
       spec allows (no wrap; histogram bins sum to the count);
    8. flood and round the CKKS values, add DP noise if the spec asks, log, release.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from he import _wire
from he.context import PublicContext, SecretContext
from he.encoding import decrypt, load_ciphertexts
from he.envelope import EncryptedAggregate, load_enrolment
from he.errors import (
    BelowMinimumCohort,
    BindingError,
    ContextMismatch,
    DecryptionError,
    NotAnAggregate,
    ParameterError,
)
from he.params import DEFAULT_STATS_PARAMS, HEParams, Scheme
from he.release import (
    DEFAULT_FLOOD_BITS,
    MAX_FLOOD_BITS,
    MIN_FLOOD_BITS,
    Release,
    add_dp_noise,
    flood_and_round,
    fresh_noise_bound,
)
from he.spec import Spec, StatsSpec, real_scales, vector_lengths

DEFAULT_MAX_DECRYPTIONS = 128
MIN_CONTRIBUTORS_FLOOR = 2


@dataclass(frozen=True, slots=True)
class DecryptionRecord:
    """One entry of the key holder's decryption log."""

    job_id: str
    round: int
    contributors: tuple[str, ...]
    aggregate_bytes: int


class KeyHolder:
    """Generates the keys, publishes the public context and decrypts only aggregates."""

    __slots__ = (
        "_flood_bits",
        "_keys",
        "_log",
        "_max_decryptions",
        "_min_contributors",
        "_public",
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
            min_contributors: k, the fewest distinct owners an aggregate may have (>= 2).
            enrolment: owner id -> raw Ed25519 public key of every owner of the job.
            flood_bits: statistical security s of the flooding noise on CKKS releases.
            max_decryptions: how many aggregates these keys may ever decrypt.

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

    def decrypt(self, aggregate: bytes | EncryptedAggregate) -> Release:
        """Decrypt an aggregate of at least k enrolled owners and release it (see module steps).

        Raises:
            NotAnAggregate: an individual contribution, or one owner's ciphertext relabelled.
            ContextMismatch: another context fingerprint.
            BindingError: a receipt is unsigned, foreign or from an owner not enrolled.
            BelowMinimumCohort: fewer distinct contributors than k.
            DecodeError: malformed bytes or ciphertexts.
            DecryptionError: the budget is spent or the sums are out of range.
        """
        agg = (
            aggregate
            if isinstance(aggregate, EncryptedAggregate)
            else EncryptedAggregate.from_bytes(aggregate)
        )
        if agg.fingerprint != self._public.fingerprint:
            raise ContextMismatch("aggregate is under another context fingerprint")
        spec = agg.spec
        spec.check_params(self._public.params)
        for receipt in agg.receipts:
            receipt.verify(
                self._keys,
                job_id=agg.job_id,
                round=agg.round,
                fingerprint=agg.fingerprint,
                spec=spec,
            )
        owners = {r.owner_id for r in agg.receipts}
        required = max([self._min_contributors, *(r.min_contributors for r in agg.receipts)])
        if len(owners) != len(agg.receipts) or len(owners) < required:
            raise BelowMinimumCohort(contributors=len(owners), required=required)
        if len(owners) > spec.max_owners:
            raise BindingError(
                f"aggregate has {len(owners)} contributors; the spec allows at most "
                f"{spec.max_owners} (its no-wrap guarantee depends on it)"
            )
        blobs = [*agg.bfv, *agg.ckks]
        size = sum(len(b) for b in blobs)
        # Hash only when the sizes match: different sizes already mean different bytes.
        if any(r.ciphertext_bytes == size for r in agg.receipts):
            digest = _wire.digest_blobs(blobs)
            if any(r.ciphertext_digest == digest for r in agg.receipts):
                raise NotAnAggregate("aggregate ciphertexts are one owner's contribution")
        if len(self._log) >= self._max_decryptions:
            raise DecryptionError(f"decryption budget of {self._max_decryptions} is spent")
        n_int, n_real = vector_lengths(spec)
        integers = self._decrypt(Scheme.BFV, agg.bfv, n_int).astype(np.int64)
        reals = self._decrypt(Scheme.CKKS, agg.ckks, n_real).astype(np.float64)
        _check_ranges(spec, integers, reals, contributors=len(owners))
        self._log.append(DecryptionRecord(agg.job_id, agg.round, agg.contributors, size))
        grid = tolerance = 0.0
        if n_real:
            bound = len(owners) * fresh_noise_bound(self._public.params_for(Scheme.CKKS))
            reals, grid, tolerance = flood_and_round(
                reals, noise_bound=bound, flood_bits=self._flood_bits
            )
            reals = reals * real_scales(spec)
        dp = None
        if isinstance(spec, StatsSpec) and spec.dp is not None:
            integers, reals, dp = add_dp_noise(spec, integers, reals)
        integers.setflags(write=False)
        reals.setflags(write=False)
        return Release(
            job_id=agg.job_id,
            round=agg.round,
            spec=spec,
            contributors=agg.contributors,
            integers=integers,
            reals=reals,
            real_tolerance=tolerance,
            grid=grid,
            flood_bits=self._flood_bits,
            dp=dp,
        )

    def _decrypt(self, scheme: Scheme, blobs: tuple[bytes, ...], length: int) -> npt.NDArray[Any]:
        if not length and not blobs:
            return np.zeros(0)
        params = self._public.params_for(scheme)
        ctx = self._secret.tenseal(scheme)
        vectors = load_ciphertexts(ctx, params, blobs, length=length, what="aggregate")
        return decrypt(ctx, params, vectors)


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
