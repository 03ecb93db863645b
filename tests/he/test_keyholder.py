"""Key-holder refusals, the k rule and the Li-Micciancio release rule."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

import he
from he import _wire, encoding
from he.envelope import EncryptedAggregate
from he.params import Scheme

OWNERS = tuple(f"hospital-{i}" for i in range(5))  # as in conftest.py


@pytest.fixture(scope="module")
def spec() -> he.StatsSpec:
    return he.spec_from_dict(
        {
            "columns": ["a"],
            "statistics": ["count", "mean", "variance", "histogram"],
            "moment_columns": ["a"],
            "clip": {"a": [-5, 5]},
            "histograms": {"a": {"bins": 5, "range": [-5, 5]}},
            "max_rows_per_owner": 50,
            "max_owners": 5,
        }
    )


@pytest.fixture(scope="module")
def tables() -> list[np.ndarray]:
    rng = np.random.default_rng(5)
    return [rng.uniform(-5, 5, size=(n, 1)) for n in (10, 20, 30, 40, 50)]


def aggregate_of(public, enrolment, spec, tables, contribute, owners, **kw) -> EncryptedAggregate:
    agg = he.Aggregator(public, spec=spec, job_id="job-1", round=0, enrolment=enrolment)
    for owner in owners:
        agg.add(contribute(owner, tables[OWNERS.index(owner)], spec, **kw))
    return agg.result()


def test_fewer_than_k_contributors_is_refused(public, enrolment, keyholder, spec, tables,
                                              contribute):  # fmt: skip
    # keyholder k = 3; the coordinator's own check (k from receipts) allows 2
    aggregate = aggregate_of(public, enrolment, spec, tables, contribute, OWNERS[:2])
    with pytest.raises(he.BelowMinimumCohort, match="2 distinct contributor.*at least 3"):
        keyholder.decrypt(aggregate.to_bytes())


def test_an_owners_k_raises_the_threshold(public, enrolment, keyholder, spec, tables, contribute):
    # Prepare: four contributors (k = 3 passes), but hospital-3's signed receipt demands 5.
    # The coordinator would refuse to build this aggregate; a deviating one might send it.
    aggregate = aggregate_of(public, enrolment, spec, tables, contribute, OWNERS[:4])
    strict = contribute(OWNERS[3], tables[3], spec, min_contributors=5)
    header = _wire.decode(strict, max_bytes=2**30, max_blobs=8, max_blob_bytes=2**30,
                          what="t").header  # fmt: skip
    receipts = (*aggregate.receipts[:3], he.Receipt.from_json(header["receipt"]))
    forged = dataclasses.replace(aggregate, receipts=receipts)

    # Execute / Assert
    with pytest.raises(he.BelowMinimumCohort, match="4 distinct contributor.*at least 5"):
        keyholder.decrypt(forged)


def test_raise_min_contributors_only_goes_up(enrolment) -> None:
    holder = he.KeyHolder.generate(he.BFV_4096, min_contributors=3, enrolment=enrolment)
    holder.raise_min_contributors(4)
    assert holder.min_contributors == 4
    with pytest.raises(he.ParameterError, match="can only be raised: current 4, asked 3"):
        holder.raise_min_contributors(3)
    with pytest.raises(he.ParameterError, match=">= 2"):
        he.KeyHolder.generate(he.BFV_4096, min_contributors=1, enrolment=enrolment)


def test_individual_contribution_is_refused(public, keyholder, spec, tables, contribute):
    # The coordinator forwards one owner's contribution for decryption.
    data = contribute(OWNERS[0], tables[0], spec)
    with pytest.raises(he.NotAnAggregate, match="individual owner contribution"):
        keyholder.decrypt(data)


def test_one_contribution_relabelled_as_aggregate_is_refused(
    public, enrolment, keyholder, spec, tables, contribute
):
    # Prepare: k genuine receipts, but hospital-0's ciphertexts instead of the sum
    genuine = aggregate_of(public, enrolment, spec, tables, contribute, OWNERS[:3])
    single = _wire.decode(contribute(OWNERS[0], tables[0], spec), max_bytes=2**30,
                          max_blobs=8, max_blob_bytes=2**30, what="t")  # fmt: skip
    n_bfv = single.header["n_bfv"]
    receipt = he.Receipt.from_json(single.header["receipt"])
    relabelled = dataclasses.replace(
        genuine,
        receipts=(receipt, *genuine.receipts[1:]),
        bfv=single.blobs[:n_bfv],
        ckks=single.blobs[n_bfv:],
    )

    # Execute / Assert
    with pytest.raises(he.NotAnAggregate, match="one owner's contribution"):
        keyholder.decrypt(relabelled.to_bytes())


def test_aggregate_under_another_fingerprint_is_refused(
    public, enrolment, keyholder, spec, tables, contribute
):
    genuine = aggregate_of(public, enrolment, spec, tables, contribute, OWNERS[:3])
    other = dataclasses.replace(genuine, fingerprint="0" * 64)
    with pytest.raises(he.ContextMismatch):
        keyholder.decrypt(other)


def test_receipt_from_another_round_is_refused(
    public, enrolment, keyholder, spec, tables, contribute
):
    genuine = aggregate_of(public, enrolment, spec, tables, contribute, OWNERS[:3])
    moved = dataclasses.replace(genuine, round=1)
    with pytest.raises(he.BindingError, match="round 0"):
        keyholder.decrypt(moved)


def test_duplicate_receipts_do_not_count_twice(
    public, enrolment, keyholder, spec, tables, contribute
):
    genuine = aggregate_of(public, enrolment, spec, tables, contribute, OWNERS[:2])
    doubled = dataclasses.replace(genuine, receipts=(*genuine.receipts, genuine.receipts[0]))
    with pytest.raises(he.BelowMinimumCohort):
        keyholder.decrypt(doubled)


def test_release_never_equals_the_raw_decryption(
    public, enrolment, keyholder, spec, tables, contribute
):
    # Prepare
    aggregate = aggregate_of(public, enrolment, spec, tables, contribute, OWNERS)
    ckks = he.CKKS_8192
    secret_ctx = keyholder._secret.tenseal(Scheme.CKKS)  # white-box: the raw decryption
    vectors = encoding.load_ciphertexts(secret_ctx, ckks, aggregate.ckks, length=2, what="t")
    raw = encoding.decrypt(secret_ctx, ckks, vectors) * he.spec.real_scales(spec)
    plain = sum(he.sufficient_statistics(t, spec)[1] for t in tables)

    # Execute: decrypt the same aggregate twice
    first = keyholder.decrypt(aggregate.to_bytes())
    second = keyholder.decrypt(aggregate.to_bytes())

    # Assert: fresh flooding each time, never the raw values, always within tolerance
    assert not np.array_equal(first.reals, second.reals)
    assert not np.any(first.reals == raw) and not np.any(second.reals == raw)
    for release in (first, second):
        assert np.all(np.abs(release.reals - plain) <= release.tolerances())
        np.testing.assert_array_equal(release.integers[0], 150)
    # the flooding half-width dominates the raw noise by 2^flood_bits
    assert first.flood_bits == 40


def test_decryptions_are_logged_and_budgeted(public, enrolment, spec, tables, contribute):
    holder = he.KeyHolder.generate(min_contributors=2, enrolment=enrolment, max_decryptions=1)
    pub = holder.public_context()
    agg = he.Aggregator(pub, spec=spec, job_id="job-1", round=0, enrolment=enrolment)
    for owner in OWNERS[:2]:
        agg.add(contribute(owner, tables[0], spec, context=pub))
    aggregate = agg.result()

    holder.decrypt(aggregate)
    with pytest.raises(he.DecryptionError, match="budget of 1 is spent"):
        holder.decrypt(aggregate)
    assert [r.contributors for r in holder.decryption_log] == [OWNERS[:2]]


def test_dp_release_adds_noise_and_reports_budget(public, enrolment, keyholder, tables,
                                                  contribute):  # fmt: skip
    # Prepare
    spec = he.spec_from_dict(
        {
            "columns": ["a"],
            "statistics": ["count", "mean", "histogram"],
            "moment_columns": ["a"],
            "clip": {"a": [-5, 5]},
            "histograms": {"a": {"bins": 5, "range": [-5, 5]}},
            "max_rows_per_owner": 50,
            "max_owners": 5,
            "dp": {"epsilon": 1.0, "delta": 1e-6},
        }
    )
    aggregate = aggregate_of(public, enrolment, spec, tables, contribute, OWNERS)

    # Execute
    release = he.Release.from_bytes(keyholder.decrypt(aggregate).to_bytes())

    # Assert
    assert release.dp is not None
    assert release.dp.epsilon == 1.0 and release.dp.delta == 1e-6
    assert set(release.dp.sigmas) == {"count", "histograms", "sums"}
    # 150 rows: a noisy count with sigma about 7 lies within 8 sigma of the truth
    assert abs(int(release.integers[0]) - 150) <= 8 * release.dp.sigmas["count"]
    result = he.finalize_statistics(release)
    assert result.dp is not None


def test_keyholder_without_bfv_cannot_serve_statistics(enrolment, spec):
    holder = he.KeyHolder.generate(he.CKKS_8192, min_contributors=2, enrolment=enrolment)
    with pytest.raises(he.SpecError, match="need BFV"):
        he.Aggregator(holder.public_context(), spec=spec, job_id="j", round=0,
                      enrolment=enrolment)  # fmt: skip


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"flood_bits": 10}, r"flood_bits must lie in \[20, 60\]"),
        ({"max_decryptions": 0}, "max_decryptions must be >= 1"),
        ({"enrolment": {}}, "at least 2 owners"),
        ({"enrolment": {"a": b"short", "b": b"x"}}, "not an Ed25519 key"),
    ],
)
def test_generate_validates_arguments(enrolment, kwargs, message):
    args = {"min_contributors": 2, "enrolment": enrolment} | kwargs
    with pytest.raises(he.HeError, match=message):
        he.KeyHolder.generate(he.BFV_4096, **args)


def test_more_contributors_than_max_owners_is_refused(enrolment, owner_keys, tables):
    # Prepare: a spec for at most 2 owners; a deviating coordinator sums 3
    spec = he.spec_from_dict(
        {"columns": ["a"], "statistics": ["count"], "max_rows_per_owner": 50, "max_owners": 2}
    )
    holder = he.KeyHolder.generate(he.BFV_4096, min_contributors=2, enrolment=enrolment)
    pub = holder.public_context()
    agg = he.Aggregator(pub, spec=spec, job_id="job-1", round=0, enrolment=enrolment)
    contributions = [
        he.encrypt_statistics(pub, tables[0], spec=spec, job_id="job-1", round=0, owner_id=o,
                              signing_key=owner_keys[o])
        for o in OWNERS[:3]
    ]  # fmt: skip
    agg.add(contributions[0])
    agg.add(contributions[1])
    two = agg.result()
    third = _wire.decode(contributions[2], max_bytes=2**30, max_blobs=8, max_blob_bytes=2**30,
                         what="t").header["receipt"]  # fmt: skip
    forged = dataclasses.replace(two, receipts=(*two.receipts, he.Receipt.from_json(third)))

    # Execute / Assert
    with pytest.raises(he.BindingError, match="at most 2"):
        holder.decrypt(forged)
