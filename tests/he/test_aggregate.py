"""Coordinator-side refusals and the HE sum against the plain sum."""

from __future__ import annotations

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

import he
from he import _wire

OWNERS = tuple(f"hospital-{i}" for i in range(5))  # as in conftest.py


@pytest.fixture(scope="module")
def spec() -> he.StatsSpec:
    return he.spec_from_dict(
        {
            "columns": ["a", "b"],
            "statistics": ["count", "mean", "variance", "histogram"],
            "moment_columns": ["a", "b"],
            "clip": {"a": [-10, 10], "b": [0, 100]},
            "histograms": {"b": {"bins": 10, "range": [0, 100]}},
            "max_rows_per_owner": 100,
            "max_owners": 4,
        }
    )


@pytest.fixture(scope="module")
def table() -> np.ndarray:
    rng = np.random.default_rng(11)
    return np.column_stack([rng.uniform(-10, 10, 20), rng.uniform(0, 100, 20)])


def make(public, enrolment, spec, **kw) -> he.Aggregator:
    args = {"spec": spec, "job_id": "job-1", "round": 0, "enrolment": enrolment} | kw
    return he.Aggregator(public, **args)


def test_contribution_for_another_job_is_refused(public, enrolment, spec, table, contribute):
    agg = make(public, enrolment, spec)
    with pytest.raises(he.BindingError, match="job_id 'job-2'"):
        agg.add(contribute(OWNERS[0], table, spec, job_id="job-2"))


def test_contribution_for_another_round_is_refused(public, enrolment, spec, table, contribute):
    agg = make(public, enrolment, spec, round=3)
    with pytest.raises(he.BindingError, match="round 0"):
        agg.add(contribute(OWNERS[0], table, spec))


def test_contribution_for_another_spec_is_refused(public, enrolment, spec, table, contribute):
    other = he.spec_from_dict({**spec.to_dict(), "max_owners": 5})
    agg = make(public, enrolment, other)
    with pytest.raises(he.BindingError, match="spec_digest"):
        agg.add(contribute(OWNERS[0], table, spec))


def test_contribution_under_another_context_is_refused(enrolment, spec, table, contribute):
    # Prepare: a second key holder with identical parameters (TenSEAL alone would accept it)
    other = he.KeyHolder.generate(min_contributors=2, enrolment=enrolment).public_context()
    agg = make(other, enrolment, spec)

    # Execute / Assert
    with pytest.raises(he.ContextMismatch, match="is under context"):
        agg.add(contribute(OWNERS[0], table, spec))


def test_owner_not_enrolled_is_refused(public, enrolment, spec, table, owner_keys):
    stranger = Ed25519PrivateKey.generate()
    data = he.encrypt_statistics(
        public, table, spec=spec, job_id="job-1", round=0, owner_id="mallory",
        signing_key=stranger,
    )  # fmt: skip
    with pytest.raises(he.BindingError, match="'mallory' is not enrolled"):
        make(public, enrolment, spec).add(data)


def test_wrong_signature_is_refused(public, enrolment, spec, table, owner_keys):
    # hospital-0's id, hospital-1's key
    data = he.encrypt_statistics(
        public, table, spec=spec, job_id="job-1", round=0, owner_id=OWNERS[0],
        signing_key=owner_keys[OWNERS[1]],
    )  # fmt: skip
    with pytest.raises(he.BindingError, match="invalid signature"):
        make(public, enrolment, spec).add(data)


def test_swapped_ciphertext_is_refused(public, enrolment, spec, table, contribute):
    # Prepare: keep hospital-0's signed receipt, replace its ciphertexts by hospital-1's
    first = _wire.decode(contribute(OWNERS[0], table, spec), max_bytes=2**30, max_blobs=8,
                         max_blob_bytes=2**30, what="t")  # fmt: skip
    second = _wire.decode(contribute(OWNERS[1], table * 0.5, spec), max_bytes=2**30,
                          max_blobs=8, max_blob_bytes=2**30, what="t")  # fmt: skip
    forged = _wire.encode(_wire.Kind.CONTRIBUTION, first.header, list(second.blobs))

    # Execute / Assert
    with pytest.raises(he.BindingError, match="do not match its receipt"):
        make(public, enrolment, spec).add(forged)


def test_duplicate_owner_is_refused(public, enrolment, spec, table, contribute):
    agg = make(public, enrolment, spec)
    data = contribute(OWNERS[0], table, spec)
    agg.add(data)
    with pytest.raises(he.BindingError, match="already contributed"):
        agg.add(data)


def test_max_owners_is_enforced(public, enrolment, spec, table, contribute):
    agg = make(public, enrolment, spec)
    for owner in OWNERS[:4]:
        agg.add(contribute(owner, table, spec))
    with pytest.raises(he.BindingError, match="max_owners=4"):
        agg.add(contribute(OWNERS[4], table, spec))


def test_result_below_an_owners_k_is_refused(public, enrolment, spec, table, contribute):
    agg = make(public, enrolment, spec)
    agg.add(contribute(OWNERS[0], table, spec, min_contributors=3))
    agg.add(contribute(OWNERS[1], table, spec))
    with pytest.raises(he.BelowMinimumCohort, match="2 distinct contributor.*at least 3"):
        agg.result()


def test_aggregate_with_no_secret_key_anywhere(public, enrolment, spec, table, contribute):
    agg = make(public, enrolment, spec)
    for owner in OWNERS[:3]:
        agg.add(contribute(owner, table, spec))
    result = agg.result()
    assert result.contributors == OWNERS[:3]
    assert not public.tenseal(he.Scheme.CKKS).has_secret_key()
    assert he.EncryptedAggregate.from_bytes(result.to_bytes()).contributors == OWNERS[:3]


def test_contribution_bytes_are_not_an_aggregate(public, enrolment, spec, table, contribute):
    with pytest.raises(he.NotAnAggregate):
        he.EncryptedAggregate.from_bytes(contribute(OWNERS[0], table, spec))


def test_spec_that_could_wrap_bfv_is_refused(public, enrolment):
    # 200000 rows * 4 owners > 516096 = (t - 1) // 2 of BFV_4096
    wide = he.spec_from_dict(
        {
            "columns": ["a"],
            "statistics": ["count"],
            "max_rows_per_owner": 200_000,
            "max_owners": 4,
        }  # fmt: skip
    )
    with pytest.raises(he.SpecError, match="exceeds the BFV limit 516096"):
        make(public, enrolment, wide)


@settings(max_examples=8)
@given(
    sizes=st.lists(st.integers(0, 30), min_size=3, max_size=4),
    seed=st.integers(0, 2**32 - 1),
)
def test_he_sum_matches_plain_sum(public, enrolment, keyholder, spec, contribute, sizes, seed):
    # Prepare
    rng = np.random.default_rng(seed)
    tables = [np.column_stack([rng.uniform(-10, 10, n), rng.uniform(0, 100, n)]) for n in sizes]
    plain = [he.sufficient_statistics(t, spec) for t in tables]
    holder = he.KeyHolder.generate(min_contributors=3, enrolment=enrolment)  # once per round
    mine = holder.public_context()

    # Execute: the coordinator checks and relays; the key holder assembles and decrypts
    agg = make(mine, enrolment, spec, round=seed)
    for owner, t in zip(OWNERS, tables, strict=False):
        agg.add(contribute(owner, t, spec, round=seed, context=mine))
    release = holder.decrypt(agg.request(attempt=1))

    # Assert: integers exact, reals within the stated tolerance
    np.testing.assert_array_equal(release.integers, sum(p[0] for p in plain))
    assert np.all(np.abs(release.reals - sum(p[1] for p in plain)) <= release.tolerances())


@pytest.mark.parametrize("k", [0, 1, True, 2**21])
def test_owner_min_contributors_is_validated(public, spec, table, owner_keys, k):
    with pytest.raises(he.BindingError, match=r"min_contributors must be an integer in \[2"):
        he.encrypt_statistics(
            public, table, spec=spec, job_id="job-1", round=0, owner_id=OWNERS[0],
            signing_key=owner_keys[OWNERS[0]], min_contributors=k,
        )  # fmt: skip
