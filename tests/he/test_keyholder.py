"""Key-holder refusals, the k rule, once per (job, round, statistic), and the release rule."""

from __future__ import annotations

import dataclasses
import itertools

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

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


def request_of(contributions, spec, *, round: int = 0, attempt: int = 1) -> he.DecryptionRequest:
    return he.DecryptionRequest(
        job_id="job-1", round=round, attempt=attempt, spec=spec, contributions=tuple(contributions)
    )


def contributions_of(spec, tables, contribute, owners, **kw) -> list[bytes]:
    return [contribute(o, tables[OWNERS.index(o)], spec, **kw) for o in owners]


def aggregate_of(public, enrolment, spec, tables, contribute, owners, **kw) -> EncryptedAggregate:
    agg = he.Aggregator(public, spec=spec, job_id="job-1", round=0, enrolment=enrolment)
    for data in contributions_of(spec, tables, contribute, owners, **kw):
        agg.add(data)
    return agg.result()


@pytest.fixture
def holder(enrolment) -> he.KeyHolder:
    """A fresh key holder: each (job, round, statistic) is decrypted at most once per key."""
    return he.KeyHolder.generate(min_contributors=3, enrolment=enrolment)


@pytest.fixture
def mine(holder, contribute):  # type: ignore[no-untyped-def]
    """Encrypt under the fresh holder's public context."""

    def run(owner, table, spec, **kw):  # type: ignore[no-untyped-def]
        return contribute(owner, table, spec, context=holder.public_context(), **kw)

    return run


def test_fewer_than_k_contributors_is_refused(holder, spec, tables, mine):
    # the coordinator's own check (k from receipts) allows 2; the key holder's k = 3
    request = request_of(contributions_of(spec, tables, mine, OWNERS[:2]), spec)
    with pytest.raises(he.BelowMinimumCohort, match="2 distinct contributor.*at least 3"):
        holder.decrypt(request.to_bytes())
    assert holder.refusals[-1].owner is None and "at least 3" in holder.refusals[-1].reason
    assert holder.decryption_log == ()


def test_an_owners_k_raises_the_threshold(holder, spec, tables, mine):
    # Prepare: four contributors (k = 3 passes), but hospital-3's signed receipt demands 5.
    data = contributions_of(spec, tables, mine, OWNERS[:3])
    data.append(mine(OWNERS[3], tables[3], spec, min_contributors=5))

    # Execute / Assert
    with pytest.raises(he.BelowMinimumCohort, match="4 distinct contributor.*at least 5"):
        holder.decrypt(request_of(data, spec))


def test_raise_min_contributors_only_goes_up(enrolment) -> None:
    holder = he.KeyHolder.generate(he.BFV_4096, min_contributors=3, enrolment=enrolment)
    holder.raise_min_contributors(4)
    assert holder.min_contributors == 4
    with pytest.raises(he.ParameterError, match="can only be raised: current 4, asked 3"):
        holder.raise_min_contributors(3)
    with pytest.raises(he.ParameterError, match=">= 2"):
        he.KeyHolder.generate(he.BFV_4096, min_contributors=1, enrolment=enrolment)


def test_individual_contribution_is_refused(holder, spec, tables, mine):
    # The coordinator forwards one owner's contribution for decryption.
    data = mine(OWNERS[0], tables[0], spec)
    with pytest.raises(he.NotAnAggregate, match="individual owner contribution"):
        holder.decrypt(data)
    assert "individual owner contribution" in holder.refusals[-1].reason


def test_a_sum_the_coordinator_built_is_refused(holder, enrolment, spec, tables, mine):
    # Even an honest sum with k genuine receipts: the key holder decrypts only what it assembles.
    genuine = aggregate_of(holder.public_context(), enrolment, spec, tables, mine, OWNERS[:3])
    with pytest.raises(he.NotAnAggregate, match="assembles itself"):
        holder.decrypt(genuine.to_bytes())
    assert holder.decryption_log == ()


def _swap_ciphertexts(data: bytes, other: bytes) -> bytes:
    """``data``'s receipt with ``other``'s ciphertexts (what a coordinator could relay)."""
    mine_ = _wire.decode(data, max_bytes=2**30, max_blobs=8, max_blob_bytes=2**30, what="t")
    theirs = _wire.decode(other, max_bytes=2**30, max_blobs=8, max_blob_bytes=2**30, what="t")
    return _wire.encode(_wire.Kind.CONTRIBUTION, mine_.header, list(theirs.blobs))


BAD = {
    "bad signature": "invalid signature",
    "foreign owner": "not enrolled",
    "duplicate owner": "a second contribution of 'hospital-0'",
    "stale attempt": "attempt 1, this job expects 2",
    "another round": "round 1, this job expects 0",
    "another statistic": "spec_digest",
    "another key": "under context",
    "swapped ciphertexts": "do not match its receipt",
    "unparseable ciphertext": "does not parse",
}


@pytest.mark.parametrize("bad", list(BAD))
def test_a_bad_contribution_is_refused_and_the_others_still_count(
    holder, enrolment, owner_keys, spec, tables, mine, keyholder, bad
):
    # Prepare: three good contributions for attempt 2, and one bad one.
    attempt = 1 if bad == "stale attempt" else 2
    good = contributions_of(spec, tables, mine, OWNERS[:3], attempt=2)
    pub = holder.public_context()
    fields = {"job_id": "job-1", "round": 0, "attempt": attempt, "owner_id": OWNERS[3]}
    fields["signing_key"] = owner_keys[OWNERS[3]]
    other_spec = dataclasses.replace(spec, max_rows_per_owner=spec.max_rows_per_owner + 1)
    if bad == "bad signature":
        fields["signing_key"] = Ed25519PrivateKey.generate()
    elif bad == "foreign owner":
        fields["owner_id"] = "stranger"
    elif bad == "duplicate owner":
        fields["owner_id"], fields["signing_key"] = OWNERS[0], owner_keys[OWNERS[0]]
    elif bad == "another round":
        fields["round"] = 1
    elif bad == "another key":
        pub = keyholder.public_context()
    chosen = other_spec if bad == "another statistic" else spec
    data = he.encrypt_statistics(pub, tables[3], spec=chosen, **fields)
    if bad == "swapped ciphertexts":
        data = _swap_ciphertexts(data, good[0])
    elif bad == "unparseable ciphertext":
        env = _wire.decode(data, max_bytes=2**30, max_blobs=8, max_blob_bytes=2**30, what="t")
        blobs = [b"\x00" * len(env.blobs[0]), *env.blobs[1:]]
        header = dict(env.header)
        receipt = he.Receipt.from_json(header["receipt"])
        signed = he.envelope.sign_receipt(
            owner_keys[OWNERS[3]],
            **(receipt.fields() | {"ciphertext_digest": _wire.digest_blobs(blobs)}),
        )
        header["receipt"] = signed.to_json()
        data = _wire.encode(_wire.Kind.CONTRIBUTION, header, blobs)

    # Execute
    release = holder.decrypt(request_of([*good, data], spec, attempt=2))

    # Assert: the three good ones are the sum; the bad one is refused with its reason, recorded.
    assert sorted(release.contributors) == sorted(OWNERS[:3])
    assert int(release.integers[0]) == sum(len(t) for t in tables[:3])
    (refusal,) = holder.refusals
    assert BAD[bad] in refusal.reason and refusal.attempt == 2
    assert len(holder.decryption_log) == 1


def test_once_per_job_round_and_statistic(holder, spec, tables, mine):
    # Prepare
    data = contributions_of(spec, tables, mine, OWNERS[:4])
    first = holder.decrypt(request_of(data[:3], spec))

    # Execute / Assert: the same contributions again give the same release, nothing new ...
    again = holder.decrypt(request_of(reversed(data[:3]), spec))
    assert again is first
    # ... and any other set (a difference of two sums would isolate hospital-3) is refused,
    # in any attempt.
    for attempt, chosen in ((1, data), (2, contributions_of(spec, tables, mine, OWNERS[:3],
                                                            attempt=2))):  # fmt: skip
        with pytest.raises(he.DecryptionError, match="already decrypted for this statistic"):
            holder.decrypt(request_of(chosen, spec, attempt=attempt))
    assert len(holder.decryption_log) == 1


def test_release_never_equals_the_raw_decryption(holder, enrolment, spec, tables, mine):
    # Prepare
    aggregate = aggregate_of(holder.public_context(), enrolment, spec, tables, mine, OWNERS)
    ckks = he.CKKS_8192
    secret_ctx = holder._secret.tenseal(Scheme.CKKS)  # white-box: the raw decryption
    vectors = encoding.load_ciphertexts(secret_ctx, ckks, aggregate.ckks, length=2, what="t")
    raw = encoding.decrypt(secret_ctx, ckks, vectors) * he.spec.real_scales(spec)
    plain = sum(he.sufficient_statistics(t, spec)[1] for t in tables)

    # Execute
    release = holder.decrypt(request_of(contributions_of(spec, tables, mine, OWNERS), spec))

    # Assert: flooded, never the raw values, within tolerance; s sized for the job's budget
    assert not np.any(release.reals == raw)
    assert np.all(np.abs(release.reals - plain) <= release.tolerances())
    np.testing.assert_array_equal(release.integers[0], 150)
    # 2 CKKS values, 128 decryptions: s = 63 + log2(256) = 71
    assert release.flood_bits == he.flood_bits_for(values=2, decryptions=128) == 71
    assert holder.statistical_distance == 2 * 2.0**-72 <= 2.0**-64


def test_decryptions_are_logged_and_budgeted(enrolment, spec, tables, contribute):
    holder = he.KeyHolder.generate(min_contributors=2, enrolment=enrolment, max_decryptions=1)
    pub = holder.public_context()
    for round in (0, 1):
        data = [contribute(o, tables[0], spec, context=pub, round=round) for o in OWNERS[:2]]
        if round == 0:
            holder.decrypt(request_of(data, spec, round=round))
            continue
        with pytest.raises(he.DecryptionError, match="budget of 1 is spent"):
            holder.decrypt(request_of(data, spec, round=round))
    assert [r.contributors for r in holder.decryption_log] == [OWNERS[:2]]
    # one decryption of 2 values under a budget of 1: s = 63 + 1
    assert holder.decryption_log[0].flood_bits == 64


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
    request = request_of(contributions_of(spec, tables, contribute, OWNERS), spec)

    # Execute
    release = he.Release.from_bytes(keyholder.decrypt(request).to_bytes())

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
        ({"flood_bits": 10}, r"flood_bits must lie in \[20, 128\]"),
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
    # Prepare: a spec for at most 2 owners; a deviating coordinator relays 3
    spec = he.spec_from_dict(
        {"columns": ["a"], "statistics": ["count"], "max_rows_per_owner": 50, "max_owners": 2}
    )
    holder = he.KeyHolder.generate(he.BFV_4096, min_contributors=2, enrolment=enrolment)
    pub = holder.public_context()
    contributions = [
        he.encrypt_statistics(pub, tables[0], spec=spec, job_id="job-1", round=0, owner_id=o,
                              signing_key=owner_keys[o])
        for o in OWNERS[:3]
    ]  # fmt: skip

    # Execute / Assert
    with pytest.raises(he.BindingError, match="at most 2"):
        holder.decrypt(request_of(contributions, spec))


_ROUNDS = itertools.count(100)


@pytest.fixture(scope="module")
def bfv_holder(enrolment) -> he.KeyHolder:
    return he.KeyHolder.generate(
        he.BFV_8192, min_contributors=3, enrolment=enrolment, max_decryptions=10_000
    )


@settings(max_examples=12, deadline=None)
@given(
    sizes=st.lists(st.integers(0, 25), min_size=2, max_size=5),
    dropped=st.sets(st.integers(0, 4), max_size=3),
    seed=st.integers(0, 2**32 - 1),
)
def test_random_cohorts_and_dropouts_equal_numpy_or_abort_below_k(
    bfv_holder, owner_keys, sizes, dropped, seed
):
    # Prepare: a cohort of owners with random tables; some drop before they contribute.
    spec = he.spec_from_dict(
        {
            "columns": ["a", "b"],
            "statistics": ["count", "mean", "variance"],
            "moment_columns": ["a", "b"],
            "clip": {"a": [-10, 10], "b": [0, 100]},
            "max_rows_per_owner": 50,
            "max_owners": 5,
        }
    )
    rng = np.random.default_rng(seed)
    tables = [np.column_stack([rng.uniform(-10, 10, n), rng.uniform(0, 100, n)]) for n in sizes]
    survivors = [i for i in range(len(tables)) if i not in dropped]
    round = next(_ROUNDS)
    data = [
        he.encrypt_statistics(
            bfv_holder.public_context(), tables[i], spec=spec, job_id="job-1", round=round,
            owner_id=OWNERS[i], signing_key=owner_keys[OWNERS[i]],
        )
        for i in survivors
    ]  # fmt: skip

    # Execute / Assert
    request = request_of(data, spec, round=round)
    if len(survivors) < 3:
        with pytest.raises(he.BelowMinimumCohort):
            bfv_holder.decrypt(request)
        return
    release = bfv_holder.decrypt(request)
    pooled = np.concatenate([tables[i] for i in survivors])
    plain = sum(he.sufficient_statistics(tables[i], spec)[1] for i in survivors)
    assert int(release.integers[0]) == len(pooled)
    assert np.all(np.abs(release.reals - plain) <= release.tolerances())
    result = he.finalize_statistics(release)
    if len(pooled):
        for j, column in enumerate(("a", "b")):
            assert (
                abs(result.mean[column] - pooled[:, j].mean()) <= result.tolerance["mean"][column]
            )
