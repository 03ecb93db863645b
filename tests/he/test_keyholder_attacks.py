"""Issue 10: a dishonest coordinator against the key holder, through the public API.

The coordinator holds the public context, the owners' genuine contributions (ciphertexts and
signed receipts) and nothing else. Each test carries out one attack and then checks, by trying
it, that nothing about an individual owner came out: the secret-key recovery is attempted on
whatever the key holder released, and a released "sum" is compared with one owner's vector.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import numpy.typing as npt
import pytest
import tenseal as ts
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from he_attacks import crafted_key_probe, decrypt_with_recovered_key, recover_secret_key

import he
from he.envelope import decode_contribution
from he.params import Scheme

OWNERS = ("hospital-0", "hospital-1", "hospital-2")
JOB, ROUND = "job-attack", 0
SPEC = he.VectorSpec(length=8192, max_abs=1000.0, max_owners=5)  # two CKKS ciphertexts


@dataclasses.dataclass
class Setup:
    keyholder: he.KeyHolder
    public: he.PublicContext
    enrolment: dict[str, bytes]
    vectors: dict[str, npt.NDArray[np.float64]]
    contributions: dict[str, bytes]


@pytest.fixture
def setup(owner_keys: dict[str, Ed25519PrivateKey], enrolment: dict[str, bytes]) -> Setup:
    # A fresh key holder per test: every attack starts from keys nobody has queried.
    keyholder = he.KeyHolder.generate(min_contributors=3, enrolment=enrolment)
    public = he.PublicContext.from_bytes(keyholder.public_context().to_bytes())
    rng = np.random.default_rng(10)
    vectors = {o: rng.uniform(-1.0, 1.0, SPEC.length) for o in OWNERS}
    contributions = {
        o: he.encrypt_vector(
            public, vectors[o], spec=SPEC, job_id=JOB, round=ROUND, owner_id=o,
            signing_key=owner_keys[o],
        )
        for o in OWNERS
    }  # fmt: skip
    return Setup(keyholder, public, enrolment, vectors, contributions)


def ckks_blobs(contribution: bytes) -> tuple[bytes, ...]:
    return decode_contribution(contribution, max_blobs=4, max_blob_bytes=2**24)[2]


def genuine_aggregate(s: Setup) -> he.EncryptedAggregate:
    """What an honest coordinator would send: the sum, with the three genuine receipts."""
    return he.add_ciphertexts(
        s.public, s.contributions.values(), spec=SPEC, job_id=JOB, round=ROUND,
        enrolment=s.enrolment,
    )  # fmt: skip


def ask(s: Setup, aggregate: he.EncryptedAggregate) -> he.Release | None:
    """Submit to the key holder; None when it refuses (any he error)."""
    try:
        return s.keyholder.decrypt(aggregate.to_bytes())
    except he.HeError:
        return None


def owner_leak_error(s: Setup, released: npt.NDArray[np.float64], owner: str) -> float:
    """How close a released vector is to one owner's own vector (small: it leaked)."""
    return float(np.abs(released - s.vectors[owner]).max())


def test_crafted_ciphertexts_with_genuine_receipts_do_not_reveal_the_secret_key(setup) -> None:  # type: ignore[no-untyped-def]
    # Prepare: (0, Delta) and (0, Delta x^(N/2)) in place of the sum, three genuine receipts.
    s = setup
    probes = crafted_key_probe(s.public)
    crafted = dataclasses.replace(genuine_aggregate(s), ckks=probes)

    # Execute: one query, then the recovery on whatever came out.
    release = ask(s, crafted)

    # Assert: nothing was released; had it been, the recovered key would decrypt hospital-0.
    if release is not None:
        key = recover_secret_key(release.vector())
        first = decrypt_with_recovered_key(key, ckks_blobs(s.contributions[OWNERS[0]])[0], s.public)
        error = float(np.abs(first - s.vectors[OWNERS[0]][: first.size]).max())
        pytest.fail(
            f"the key holder decrypted crafted ciphertexts; the secret key recovered from its "
            f"release decrypts {OWNERS[0]}'s contribution alone with error {error:.1e}"
        )
    assert any("assembles" in r.reason for r in s.keyholder.refusals)


def test_the_recovery_works_when_the_ciphertexts_are_decrypted(setup) -> None:  # type: ignore[no-untyped-def]
    # The oracle for the test above: decrypting the probes with the secret key (what the old
    # key holder did, minus flooding) gives a key that decrypts one owner's contribution.
    s = setup
    secret = he.context.SecretContext([he.CKKS_8192])
    public = he.PublicContext.from_bytes(secret.public_bytes())
    probes = crafted_key_probe(public)
    ctx = secret.tenseal(Scheme.CKKS)
    values = np.concatenate([np.asarray(ts.ckks_vector_from(ctx, p).decrypt()) for p in probes])
    vector = s.vectors[OWNERS[0]][:4096]
    mine = ts.ckks_vector(ctx, vector.tolist()).serialize()

    leaked = decrypt_with_recovered_key(recover_secret_key(values), mine, public)

    assert np.abs(leaked - vector).max() < 1e-9


@pytest.mark.parametrize("how", ["plus-encryptions-of-zero", "three-times"])
def test_one_owners_ciphertext_with_three_receipts_is_not_released(setup, how: str) -> None:  # type: ignore[no-untyped-def]
    # Prepare: ct_A + Enc(0) + Enc(0), or ct_A + ct_A + ct_A, as "the sum" of three owners.
    s = setup
    ctx = s.public.tenseal(Scheme.CKKS)
    blobs = []
    for blob in ckks_blobs(s.contributions[OWNERS[0]]):
        vec = ts.ckks_vector_from(ctx, blob)
        if how == "three-times":
            other = ts.ckks_vector_from(ctx, blob)
            vec.add_(other)
            vec.add_(other)
        else:
            for _ in range(2):
                vec.add_(ts.ckks_vector(ctx, [0.0] * vec.size()))
        blobs.append(vec.serialize())
    forged = dataclasses.replace(genuine_aggregate(s), ckks=tuple(blobs))

    # Execute
    release = ask(s, forged)

    # Assert
    if release is not None:
        released = release.vector() / (3.0 if how == "three-times" else 1.0)
        pytest.fail(
            f"the key holder released {OWNERS[0]}'s update alone (error "
            f"{owner_leak_error(s, released, OWNERS[0]):.1e}) as a sum of three owners"
        )
    assert s.keyholder.refusals


def _with_ciphertexts(contribution: bytes, ckks: tuple[bytes, ...]) -> bytes:
    """An owner's genuine receipt around ciphertexts of the coordinator's choosing."""
    from he import _wire

    env = _wire.decode(contribution, max_bytes=2**30, max_blobs=8, max_blob_bytes=2**30, what="c")
    return _wire.encode(_wire.Kind.CONTRIBUTION, env.header, list(ckks))


@pytest.mark.parametrize("attack", ["key-probe", "one-owner-plus-zeros"])
def test_relayed_contributions_with_other_ciphertexts_are_refused(setup, attack: str) -> None:  # type: ignore[no-untyped-def]
    # Prepare: the new channel. The coordinator relays the three genuine receipts, but around
    # the key probe (in hospital-0's envelope) or around encryptions of zero (in the others').
    s = setup
    ctx = s.public.tenseal(Scheme.CKKS)
    zeros = tuple(ts.ckks_vector(ctx, [0.0] * 4096).serialize() for _ in range(2))
    relayed = dict(s.contributions)
    if attack == "key-probe":
        relayed[OWNERS[0]] = _with_ciphertexts(relayed[OWNERS[0]], crafted_key_probe(s.public))
    else:
        for owner in OWNERS[1:]:
            relayed[owner] = _with_ciphertexts(relayed[owner], zeros)
    request = he.DecryptionRequest(
        job_id=JOB, round=ROUND, attempt=1, spec=SPEC, contributions=tuple(relayed.values())
    )

    # Execute
    try:
        release = s.keyholder.decrypt(request.to_bytes())
    except he.BelowMinimumCohort:
        release = None

    # Assert: the forged envelopes are left out for their digest; what remains is below k.
    if release is not None:
        key = recover_secret_key(release.vector())
        first = decrypt_with_recovered_key(key, ckks_blobs(s.contributions[OWNERS[1]])[0], s.public)
        pytest.fail(f"released; recovery error {np.abs(first - s.vectors[OWNERS[1]][:4096]).max()}")
    left_out = [r for r in s.keyholder.refusals if r.owner is not None]
    assert left_out and all("do not match its receipt" in r.reason for r in left_out)
    assert s.keyholder.decryption_log == ()
