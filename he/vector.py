"""Encrypted model aggregation: owners encrypt, the coordinator adds, the key holder decrypts.

An alternative to secure aggregation: instead of pairwise masks, each owner encrypts its (clipped)
float update under the key holder's public key; the coordinator sums ciphertexts with
`he.aggregate.Aggregator` (same checks as statistics); the key holder decrypts only the sum of at
least k owners and releases it flooded and rounded (`he.release`). Vectors longer than one
ciphertext's 4096 slots (CKKS, N=8192) are packed across consecutive ciphertexts
(`he.encoding`). Threat model as in `he.envelope` and `he.keyholder`.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from he import _wire, encoding
from he.context import PublicContext
from he.envelope import (
    check_attempt,
    check_id,
    check_min_contributors,
    check_round,
    encode_contribution,
    sign_receipt,
)
from he.errors import DataError, SpecError
from he.masking import Masking
from he.spec import VectorSpec


def encrypt_vector(
    public: PublicContext,
    vector: npt.ArrayLike,
    *,
    spec: VectorSpec,
    job_id: str,
    round: int,
    owner_id: str,
    signing_key: Ed25519PrivateKey,
    min_contributors: int = 2,
    attempt: int = 1,
    masking: Masking | None = None,
) -> bytes:
    """Encrypt one owner's update (float32 or float64) into a signed contribution.

    Args:
        public: the key holder's public context.
        vector: a 1-D float array of ``spec.length`` finite values with |v| <= ``spec.max_abs``.
        spec: the job's vector spec.
        job_id: the job.
        round: the round.
        owner_id: this owner's enrolled id.
        signing_key: this owner's Ed25519 key.
        min_contributors: the smallest cohort this owner's policy accepts (raises k).
        attempt: the attempt of the round (signed, so the key holder never mixes attempts).
        masking: this owner's masking key and the attempt's cohort (`he.masking`): the
            plaintexts get pairwise zero-sum masks in Z_t, so only the cohort's sum means
            anything; None: unmasked.

    Returns:
        CONTRIBUTION envelope bytes for the coordinator.

    Raises:
        DataError: wrong dtype, shape, non-finite or out-of-range values.
        SpecError: the spec's sums could overflow these parameters.
    """
    if not isinstance(spec, VectorSpec):
        raise SpecError("encrypt_vector needs a VectorSpec")
    spec.check_params(public.params)
    arr = np.asarray(vector)
    if arr.dtype not in (np.float32, np.float64):
        raise DataError(f"vector must be float32 or float64, got {arr.dtype}")
    if arr.shape != (spec.length,):
        raise DataError(f"vector must have shape ({spec.length},), got {arr.shape}")
    values = arr.astype(np.float64)
    if not np.all(np.isfinite(values)):
        raise DataError("vector holds NaN or infinite values")
    if np.any(np.abs(values) > spec.max_abs):
        raise DataError(f"vector has values beyond max_abs={spec.max_abs}; clip it first")
    if masking is not None:  # BFV fixed point with the owner's pairwise masks in Z_t
        _, ckks = encoding.encrypt_masked(
            public, spec, np.zeros(0, dtype=np.int64), values, masking
        )
    else:
        ckks = encoding.encrypt_reals(public, spec, values)  # CKKS, or BFV fixed point
    receipt = sign_receipt(
        signing_key,
        job_id=check_id(job_id, "job_id"),
        round=check_round(round),
        attempt=check_attempt(attempt),
        fingerprint=public.fingerprint,
        spec_digest=spec.digest,
        payload="vector",
        owner_id=check_id(owner_id, "owner_id"),
        min_contributors=check_min_contributors(min_contributors),
        ciphertext_digest=_wire.digest_blobs(ckks),
        ciphertext_bytes=sum(len(b) for b in ckks),
        cohort=masking.cohort.digest if masking is not None else "",
    )
    return encode_contribution(receipt, [], ckks)
