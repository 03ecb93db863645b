"""The signed public context, enrolment files and the owner's k (fl_core.he_job)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from support import job_text, parse
from support_he import stats_job, stats_job_text

import he
from fl_core.client.policy import OwnerPolicy
from fl_core.config import JobConfig, parse_job
from fl_core.errors import ConfigError, PolicyRefused, ProtocolError
from fl_core.he_job import (
    SignedContext,
    enrolment_toml,
    job_params,
    load_enrolment,
    owner_min_contributors,
    raw_public_key,
    trusted_keyholders,
    vector_spec,
)

OWNERS = {f"o{i}": Ed25519PrivateKey.generate() for i in range(3)}
ENROLMENT = {name: raw_public_key(key) for name, key in OWNERS.items()}


def with_he(**fields: str) -> JobConfig:
    """The test statistics job with extra [he] fields."""
    lines = "".join(f'{k} = "{v}"\n' for k, v in fields.items())
    return parse_job(stats_job_text().replace("[he]\n", "[he]\n" + lines))


@pytest.fixture(scope="module")
def holder() -> he.KeyHolder:
    return he.KeyHolder.generate(job_params(stats_job()), min_contributors=2, enrolment=ENROLMENT)


def test_a_signed_context_opens_for_its_job_and_trusted_signer(holder: he.KeyHolder) -> None:
    job = stats_job()
    key = Ed25519PrivateKey.generate()
    signed = SignedContext.create(job, holder.public_context(), key)

    public = signed.open(job, trusted={raw_public_key(key)})

    assert public.fingerprint == holder.public_context().fingerprint
    for params in public.params:
        assert not public.tenseal(params.scheme).has_secret_key()


def test_a_context_from_an_untrusted_signer_is_refused(holder: he.KeyHolder) -> None:
    job = stats_job()
    mallory = Ed25519PrivateKey.generate()  # e.g. a coordinator with keys of its own
    signed = SignedContext.create(job, holder.public_context(), mallory)
    trusted = {raw_public_key(Ed25519PrivateKey.generate())}
    with pytest.raises(PolicyRefused, match="not by a key holder the owner trusts"):
        signed.open(job, trusted=trusted)


def test_a_forged_or_replayed_signature_is_refused(holder: he.KeyHolder) -> None:
    job = stats_job()
    key = Ed25519PrivateKey.generate()
    signed = SignedContext.create(job, holder.public_context(), key)
    forged = dataclasses.replace(signed, signature=bytes(64))
    with pytest.raises(ProtocolError, match="signature does not verify"):
        forged.open(job)
    other_job = stats_job(name="another-job")  # signed for one job, replayed in another
    with pytest.raises(ProtocolError, match="signature does not verify"):
        signed.open(other_job)


def test_a_context_with_other_parameters_than_the_job_is_refused(holder: he.KeyHolder) -> None:
    job = with_he(bfv="bfv_4096")  # the job asks for BFV at N = 4096; the context has 8192
    signed = SignedContext.create(job, holder.public_context(), Ed25519PrivateKey.generate())
    with pytest.raises(ProtocolError, match="parameters differ from the job's"):
        signed.open(job)


def test_a_context_carrying_a_secret_key_is_refused() -> None:
    from he import _wire
    from he.context import SecretContext
    from he.params import Scheme

    job = stats_job()
    secret = SecretContext(job_params(job))  # what a careless key holder might publish
    blobs = [secret.tenseal(p.scheme).serialize(save_secret_key=True) for p in job_params(job)]
    header = {"params": [p.to_dict() for p in job_params(job)]}
    data = _wire.encode(_wire.Kind.PUBLIC_CONTEXT, header, blobs)
    assert Scheme.BFV in {p.scheme for p in job_params(job)}
    with pytest.raises(ProtocolError, match="carries a secret key"):
        SignedContext(data, bytes(64), bytes(32)).open(job)


def test_owners_never_lower_k() -> None:
    job = stats_job(k=3)
    assert owner_min_contributors(job, OwnerPolicy()) == 2
    assert owner_min_contributors(job, OwnerPolicy(min_cohort=3)) == 3
    with pytest.raises(PolicyRefused, match="below the owner's minimum cohort of 5"):
        owner_min_contributors(job, OwnerPolicy(min_cohort=5))


def test_trusted_key_holders_come_from_the_job_file_and_the_policy() -> None:
    a, b = (raw_public_key(Ed25519PrivateKey.generate()) for _ in range(2))
    job = with_he(keyholder_key=a.hex())
    assert trusted_keyholders(job, OwnerPolicy(trusted_keyholders=(b.hex(),))) == {a, b}
    assert trusted_keyholders(stats_job(), OwnerPolicy()) == frozenset()


def test_enrolment_files_round_trip_and_name_bad_entries(tmp_path: Path) -> None:
    path = tmp_path / "enrolment.toml"
    path.write_text(enrolment_toml(ENROLMENT))
    assert load_enrolment(path) == ENROLMENT
    path.write_text('o1 = "abcd"\no2 = "' + "00" * 32 + '"\n')
    with pytest.raises(ConfigError, match="o1 = 'abcd' is not a 32-byte Ed25519 public key"):
        load_enrolment(path)
    path.write_text(f'o1 = "{ENROLMENT["o1"].hex()}"\n')
    with pytest.raises(ConfigError, match="at least 2 owners"):
        load_enrolment(path)
    with pytest.raises(ConfigError, match="cannot read enrolment file"):
        load_enrolment(tmp_path / "missing.toml")


def test_the_vector_spec_bounds_weighted_clipped_updates() -> None:
    job = parse(job_text(extra="[aggregation]\nkind = 'he'\n[he]\nclip = 2.0\nmax_weight = 50\n"))
    spec = vector_spec(job, length=7)
    assert (spec.length, spec.max_abs, spec.max_owners) == (7, 100.0, 5)
    assert [p.scheme.value for p in job_params(job)] == ["bfv"]  # exact fixed point by default
    ckks = parse(job_text(extra="[aggregation]\nkind = 'he'\n[he]\nreals = 'ckks'\n"))
    assert [p.scheme.value for p in job_params(ckks)] == ["ckks"]
