"""Encrypted model aggregation across several ciphertexts."""

from __future__ import annotations

import numpy as np
import pytest

import he
from he.fixed import fraction_bits
from he.release import FP_RELATIVE_ERROR, fresh_noise_bound

OWNERS = tuple(f"hospital-{i}" for i in range(5))  # as in conftest.py


@pytest.fixture(scope="module")
def vholder(enrolment) -> he.KeyHolder:
    """HE training's default: exact BFV with the updates in fixed point (he.fixed)."""
    return he.KeyHolder.generate(he.BFV_8192, min_contributors=3, enrolment=enrolment)


def encrypt(holder, owner_keys, owner, vector, spec, round=0):
    return he.encrypt_vector(
        holder.public_context(), vector, spec=spec, job_id="train", round=round,
        owner_id=owner, signing_key=owner_keys[owner],
    )  # fmt: skip


def test_sum_of_updates_packed_across_ciphertexts(vholder, owner_keys, enrolment) -> None:
    # Prepare: 10,000 parameters (3 ciphertexts of 4096 slots), float32 updates in [-1, 1]
    spec = he.VectorSpec(length=10_000, max_abs=1.0, max_owners=10)
    rng = np.random.default_rng(0)
    updates = [rng.uniform(-1, 1, spec.length).astype(np.float32) for _ in range(4)]
    updates[0][:2] = [1.0, -1.0]  # values at the range limits

    # Execute
    agg = he.Aggregator(vholder.public_context(), spec=spec, job_id="train", round=0,
                        enrolment=enrolment)  # fmt: skip
    for owner, update in zip(OWNERS, updates, strict=False):
        agg.add(encrypt(vholder, owner_keys, owner, update, spec))
    aggregate = agg.result()
    release = he.Release.from_bytes(vholder.decrypt(agg.request(attempt=1).to_bytes()).to_bytes())

    # Assert: 8192 BFV slots a ciphertext; exact up to each owner's rounding to 2^-f
    assert len(aggregate.ckks) == 2 and aggregate.bfv == ()
    expected = np.sum([u.astype(np.float64) for u in updates], axis=0)
    total = release.vector()
    assert total.shape == (10_000,)
    assert np.all(np.abs(total - expected) <= release.tolerances())
    bits = fraction_bits(he.BFV_8192, limit=10.0, max_owners=10)
    assert release.flood_bits == 0 and release.real_tolerance == 4 * 0.5 * 2.0**-bits < 1e-10


def test_ckks_vectors_are_flooded_for_the_jobs_whole_budget(owner_keys, enrolment) -> None:
    # CKKS: s sized so that 10,000 values in each of 128 decryptions stay within 2^-64 in
    # total; the deviation flooded is the encryption noise of a sum of 3 plus SEAL's double
    # decoding error, so the tolerance is 2^s times that: far too coarse to train with.
    holder = he.KeyHolder.generate(he.CKKS_8192, min_contributors=3, enrolment=enrolment)
    spec = he.VectorSpec(length=10_000, max_abs=1.0, max_owners=10)
    agg = he.Aggregator(holder.public_context(), spec=spec, job_id="train", round=0,
                        enrolment=enrolment)  # fmt: skip
    for owner in OWNERS[:3]:
        agg.add(encrypt(holder, owner_keys, owner, np.zeros(spec.length), spec))

    release = holder.decrypt(agg.request(attempt=1))

    assert release.flood_bits == he.flood_bits_for(values=10_000, decryptions=128) == 84
    deviation = 3 * fresh_noise_bound(he.CKKS_8192) + 2 * 10.0 * FP_RELATIVE_ERROR
    assert 2.0**84 * deviation <= release.real_tolerance <= 1.01 * 2.0**84 * deviation
    assert holder.statistical_distance == 10_000 * 2.0**-85 <= 2.0**-64 / 128


@pytest.mark.parametrize(
    ("vector", "message"),
    [
        (np.zeros(5, dtype=np.int64), "float32 or float64"),
        (np.zeros(4, dtype=np.float32), r"shape \(5,\)"),
        (np.array([0, 0, np.nan, 0, 0], dtype=np.float32), "NaN"),
        (np.array([0, 0, 2.0, 0, 0]), "beyond max_abs=1.0"),
    ],
)
def test_bad_updates_are_refused(vholder, owner_keys, vector, message) -> None:
    spec = he.VectorSpec(length=5, max_abs=1.0, max_owners=10)
    with pytest.raises(he.DataError, match=message):
        encrypt(vholder, owner_keys, OWNERS[0], vector, spec)


def test_vector_sum_below_k_is_refused(vholder, owner_keys, enrolment) -> None:
    spec = he.VectorSpec(length=5, max_abs=1.0, max_owners=10)
    agg = he.Aggregator(vholder.public_context(), spec=spec, job_id="train", round=1,
                        enrolment=enrolment)  # fmt: skip
    for owner in OWNERS[:2]:
        agg.add(encrypt(vholder, owner_keys, owner, np.ones(5), spec, round=1))
    with pytest.raises(he.BelowMinimumCohort):
        vholder.decrypt(agg.request(attempt=1))


def test_statistics_release_has_no_vector(vholder) -> None:
    spec = he.spec_from_dict(
        {"columns": ["a"], "statistics": ["count"], "max_rows_per_owner": 1, "max_owners": 2}
    )
    release = he.Release(
        job_id="j", round=0, spec=spec, contributors=(), integers=np.zeros(1, dtype=np.int64),
        reals=np.zeros(0), real_tolerance=0.0, grid=0.0, flood_bits=40,
    )  # fmt: skip
    with pytest.raises(he.SpecError, match="use finalize_statistics"):
        release.vector()


def test_vector_spec_overflow_is_refused() -> None:
    spec = he.VectorSpec(length=5, max_abs=2.0**45, max_owners=10)
    with pytest.raises(he.SpecError, match="exceeds the CKKS limit"):
        spec.check_params((he.CKKS_8192,))
