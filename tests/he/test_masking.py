"""Issue 10, part 4: owners' pairwise zero-sum masks in Z_t; the key holder learns only the sum.

A curious key holder decrypts every individual ciphertext it receives, and pools what it holds
with the coordinator (and one colluding owner's masking key): the decrypted individual values are
indistinguishable from uniform on Z_t (chi-square), while the cohort's sum is exact.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import chisquare

import he
from he import encoding
from he.envelope import decode_contribution
from he.masking import Masking, MaskingKey, cohort_masks
from he.params import Scheme

OWNERS = ("hospital-0", "hospital-1", "hospital-2", "hospital-3")
JOB, ROUND = "job-mask", 0
SPEC = he.VectorSpec(length=8192, max_abs=1.0, max_owners=5)  # one BFV ciphertext
T = he.BFV_8192.plain_modulus or 0


@pytest.fixture
def holder(enrolment) -> he.KeyHolder:
    return he.KeyHolder.generate(he.BFV_8192, min_contributors=3, enrolment=enrolment)


def advertise(owner_keys, owners, *, attempt: int = 1):  # type: ignore[no-untyped-def]
    keys, ads = {}, []
    for o in owners:
        key, ad = MaskingKey.generate(
            identity_key=owner_keys[o], owner_id=o, job_id=JOB, round=ROUND, attempt=attempt
        )
        keys[o] = key
        ads.append(ad)
    return keys, he.Cohort(job_id=JOB, round=ROUND, attempt=attempt, advertisements=tuple(ads))


def contribute(holder, owner_keys, enrolment, vectors, keys, cohort, owners, *, attempt=1):  # type: ignore[no-untyped-def]
    return {
        o: he.encrypt_vector(
            holder.public_context(), vectors[o], spec=SPEC, job_id=JOB, round=ROUND, owner_id=o,
            signing_key=owner_keys[o], attempt=attempt,
            masking=Masking(keys[o], cohort, enrolment, min_size=3),
        )
        for o in owners
    }  # fmt: skip


def individual_plaintext(holder: he.KeyHolder, contribution: bytes) -> np.ndarray:
    """What a curious key holder sees when it decrypts one owner's ciphertext (mod t)."""
    blob = decode_contribution(contribution, max_blobs=4, max_blob_bytes=2**24)[2]
    ctx = holder._secret.tenseal(Scheme.BFV)  # white-box: the secret key
    vectors = encoding.load_ciphertexts(ctx, he.BFV_8192, blob, length=SPEC.length, what="x")
    return encoding.decrypt(ctx, he.BFV_8192, vectors) % T


def uniform_p_value(values: np.ndarray, bins: int = 64) -> float:
    counts = np.bincount((values.astype(np.float64) / T * bins).astype(np.int64), minlength=bins)
    return float(chisquare(counts).pvalue)


@pytest.fixture
def masked_round(holder, owner_keys, enrolment):  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(7)
    vectors = {o: rng.uniform(-1.0, 1.0, SPEC.length) for o in OWNERS}
    vectors[OWNERS[0]][:] = 0.25  # a very non-uniform input
    keys, cohort = advertise(owner_keys, OWNERS)
    data = contribute(holder, owner_keys, enrolment, vectors, keys, cohort, OWNERS)
    return vectors, keys, cohort, data


def test_the_masked_sum_is_exact(holder, masked_round) -> None:  # type: ignore[no-untyped-def]
    vectors, _, cohort, data = masked_round
    request = he.DecryptionRequest(job_id=JOB, round=ROUND, attempt=1, spec=SPEC,
                                   contributions=tuple(data.values()), cohort=cohort)  # fmt: skip

    release = holder.decrypt(request.to_bytes())

    expected = np.sum(list(vectors.values()), axis=0)
    assert np.all(np.abs(release.vector() - expected) <= release.tolerances())
    assert release.real_tolerance < 1e-10 and release.flood_bits == 0


def test_a_curious_key_holder_sees_uniform_values(holder, owner_keys, masked_round) -> None:  # type: ignore[no-untyped-def]
    # Prepare: the control, one owner's unmasked contribution, is far from uniform.
    vectors, _, _, data = masked_round
    plain = he.encrypt_vector(
        holder.public_context(), vectors[OWNERS[0]], spec=SPEC, job_id=JOB, round=1,
        owner_id=OWNERS[0], signing_key=owner_keys[OWNERS[0]],
    )  # fmt: skip
    assert uniform_p_value(individual_plaintext(holder, plain)) < 1e-12

    # Execute / Assert: every masked individual decryption looks uniform on Z_t.
    for owner in OWNERS:
        assert uniform_p_value(individual_plaintext(holder, data[owner])) > 1e-4


def pair_mask(key: MaskingKey, peer_public: bytes, cohort: he.Cohort, me: int, peer: int):  # type: ignore[no-untyped-def]
    """The one pairwise mask two cohort members share (what either of them can compute)."""
    from mpc.keys import Purpose, agree, derive_key, encode_fields, load_x25519_public
    from mpc.prg import expand_mod

    secret = agree(key.private, load_x25519_public(peer_public))
    mask_key = derive_key(
        secret, purpose=Purpose.HE_PAIRWISE_MASK, session_id=bytes.fromhex(cohort.digest),
        context=encode_fields(JOB, ROUND, 1), parties=(min(me, peer), max(me, peer)),
    )  # fmt: skip
    return expand_mod(mask_key, SPEC.length, modulus=T)


def test_key_holder_coordinator_and_one_owner_pooled_learn_nothing(holder, masked_round) -> None:  # type: ignore[no-untyped-def]
    # Prepare: they hold every ciphertext, the secret key, the cohort, and hospital-3's masking
    # key, so they can compute the mask hospital-3 shares with hospital-0.
    vectors, keys, cohort, data = masked_round
    public = {a.owner_id: a.public_key for a in cohort.advertisements}
    seen = individual_plaintext(holder, data[OWNERS[0]])
    m03 = pair_mask(keys[OWNERS[3]], public[OWNERS[0]], cohort, 3, 0)

    # Execute: strip it from hospital-0's decrypted value (hospital-0 added it with sign +1).
    stripped = (seen - m03) % T

    # Assert: what is left, x_0 + m_01 + m_02, is still uniform on Z_t, though x_0 is constant;
    # the test's oracle (the honest owners' keys) confirms the decomposition is the right one.
    assert uniform_p_value(stripped) > 1e-4
    pairs = ((1, OWNERS[1]), (2, OWNERS[2]))
    honest = sum(pair_mask(keys[OWNERS[0]], public[o], cohort, 0, i) for i, o in pairs)
    x0 = (stripped - honest) % T
    bits = he.fixed.fraction_bits(he.BFV_8192, limit=SPEC.max_abs * SPEC.max_owners,
                                  max_owners=SPEC.max_owners)  # fmt: skip
    assert np.all(x0 == round(0.25 * 2.0**bits))


def test_a_dropped_owner_stops_the_attempt_and_a_fresh_cohort_finishes_it(
    holder, owner_keys, enrolment, masked_round
) -> None:  # type: ignore[no-untyped-def]
    # Prepare: hospital-2 advertised a key, then dropped before contributing.
    vectors, _, cohort, data = masked_round
    partial = tuple(v for o, v in data.items() if o != OWNERS[2])

    # Execute / Assert: refused, naming who is missing; nothing decrypted.
    with pytest.raises(he.BindingError, match=r"missing \['hospital-2'\]: restart the attempt"):
        holder.decrypt(he.DecryptionRequest(job_id=JOB, round=ROUND, attempt=1, spec=SPEC,
                                            contributions=partial, cohort=cohort))  # fmt: skip
    assert holder.decryption_log == () and "missing" in holder.refusals[-1].reason

    # The attempt restarts: fresh keys, the three still alive; the sum is theirs exactly.
    alive = (OWNERS[0], OWNERS[1], OWNERS[3])
    keys2, cohort2 = advertise(owner_keys, alive, attempt=2)
    data2 = contribute(holder, owner_keys, enrolment, vectors, keys2, cohort2, alive, attempt=2)
    release = holder.decrypt(he.DecryptionRequest(job_id=JOB, round=ROUND, attempt=2, spec=SPEC,
                                                  contributions=tuple(data2.values()),
                                                  cohort=cohort2))  # fmt: skip
    expected = np.sum([vectors[o] for o in alive], axis=0)
    assert np.all(np.abs(release.vector() - expected) <= release.tolerances())


def test_cohorts_the_coordinator_could_forge_are_refused(owner_keys, enrolment) -> None:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from he.envelope import load_enrolment

    keys, cohort = advertise(owner_keys, OWNERS[:3])
    enrolled = load_enrolment(enrolment)
    # an invented peer: the coordinator's own key under a name nobody enrolled
    _, puppet = MaskingKey.generate(identity_key=Ed25519PrivateKey.generate(), owner_id="puppet",
                                    job_id=JOB, round=ROUND, attempt=1)  # fmt: skip
    forged = he.Cohort(job_id=JOB, round=ROUND, attempt=1,
                       advertisements=(*cohort.advertisements, puppet))  # fmt: skip
    with pytest.raises(he.BindingError, match="'puppet' is not enrolled"):
        cohort_masks(keys[OWNERS[0]], forged, keys=enrolled, min_size=3, length=4, modulus=T)
    # an enrolled name with a key the coordinator made up
    _, fake = MaskingKey.generate(identity_key=Ed25519PrivateKey.generate(), owner_id=OWNERS[3],
                                  job_id=JOB, round=ROUND, attempt=1)  # fmt: skip
    forged = he.Cohort(job_id=JOB, round=ROUND, attempt=1,
                       advertisements=(*cohort.advertisements, fake))  # fmt: skip
    with pytest.raises(he.BindingError, match="not signed by its enrolled identity"):
        cohort_masks(keys[OWNERS[0]], forged, keys=enrolled, min_size=3, length=4, modulus=T)
    # too small a cohort (the coordinator left out the other honest owners)
    small = he.Cohort(job_id=JOB, round=ROUND, attempt=1, advertisements=cohort.advertisements[:2])
    with pytest.raises(he.BindingError, match="at least 3 needed"):
        cohort_masks(keys[OWNERS[0]], small, keys=enrolled, min_size=3, length=4, modulus=T)
    # a cohort without this owner's own key
    other = he.Cohort(job_id=JOB, round=ROUND, attempt=1, advertisements=cohort.advertisements[1:])
    with pytest.raises(he.BindingError, match="at least 3|does not hold"):
        cohort_masks(keys[OWNERS[0]], other, keys=enrolled, min_size=2, length=4, modulus=T)


def test_the_masks_of_a_cohort_sum_to_zero(owner_keys, enrolment) -> None:
    from he.envelope import load_enrolment

    keys, cohort = advertise(owner_keys, OWNERS)
    enrolled = load_enrolment(enrolment)
    masks = [
        cohort_masks(keys[o], cohort, keys=enrolled, min_size=3, length=1000, modulus=T)
        for o in OWNERS
    ]
    assert np.all(np.sum(np.asarray(masks, dtype=object), axis=0) % T == 0)
    assert all(np.all((0 <= m) & (m < T)) for m in masks)
