"""The key holder as a participant: context, decryption, refusals, simulated identities."""

from __future__ import annotations

import stat
import tomllib
from pathlib import Path

import pytest
from support import job_text, parse
from support_he import stats_job

import he
from fl_core.client.policy import OwnerPolicy
from fl_core.errors import ConfigError, PolicyRefused
from fl_core.he_job import SignedContext, load_enrolment, raw_public_key
from fl_core.keyholder import KeyholderParticipant, SimulatedKeys
from fl_core.payload import Payload
from fl_core.stats import dataset_tables
from fl_core.transport.base import Task, TaskHeader

NAMES = [f"client-{i}" for i in range(5)]


def task(stage: str, payload: Payload, *, job: str = "stats-test", round: int = 1) -> Task:
    header = TaskHeader(job_id=job, round=round, attempt=1, stage=stage, task_id="t")
    return Task(header, payload)


@pytest.fixture(scope="module")
def setup() -> tuple[KeyholderParticipant, SimulatedKeys, list[bytes], he.PublicContext]:
    job = stats_job(k=3)
    keys = SimulatedKeys.generate(NAMES)
    holder = keys.keyholder_participant(job)
    reply = holder.handle(task("he.context", Payload({"he.job_sha256": job.sha256})))
    public = SignedContext.from_payload(reply).open(job, trusted={raw_public_key(keys.keyholder)})
    assert job.stats is not None
    spec = job.stats.spec()
    contributions = [
        he.encrypt_statistics(
            public,
            table,
            spec=spec,
            job_id=job.job.name,
            round=1,
            owner_id=name,
            signing_key=keys.owners[name],
        )
        for name, table in zip(NAMES, dataset_tables(job), strict=True)
    ]
    return holder, keys, contributions, public


def request(setup_, owners: list[int], *, round: int = 1, attempt: int = 1) -> bytes:  # type: ignore[no-untyped-def]
    """What the coordinator relays: the owners' contributions, unchanged."""
    holder, _keys, contributions, _public = setup_
    job = holder.job
    return he.DecryptionRequest(
        job_id=job.job.name,
        round=round,
        attempt=attempt,
        spec=job.stats.spec(),
        contributions=tuple(contributions[i] for i in owners),
    ).to_bytes()


def decrypt(holder: KeyholderParticipant, data: bytes, *, round: int = 1) -> Payload:
    return holder.handle(task("he.decrypt", Payload({"he.request": data}), round=round))


def test_the_context_has_no_secret_key_and_is_signed_by_the_key_holder(setup) -> None:  # type: ignore[no-untyped-def]
    holder, keys, _, public = setup
    for params in public.params:
        assert not public.tenseal(params.scheme).has_secret_key()
    assert not hasattr(public, "decrypt")
    assert public.fingerprint == holder.public_context().fingerprint


def test_refusals_name_the_key_holders_reason(setup) -> None:  # type: ignore[no-untyped-def]
    holder, _, contributions, _ = setup
    with pytest.raises(PolicyRefused, match="NotAnAggregate: refusing to decrypt an individual"):
        decrypt(holder, contributions[0])
    with pytest.raises(PolicyRefused, match="at least 3 required"):
        decrypt(holder, request(setup, [0, 1]))
    with pytest.raises(PolicyRefused, match="the task for job 'stats-test' round 2 attempt 1"):
        decrypt(holder, request(setup, [0, 1, 2]), round=2)
    with pytest.raises(PolicyRefused, match="attempt 2, the task .* attempt 1"):
        decrypt(holder, request(setup, [0, 1, 2], attempt=2))
    reasons = [r.reason for r in holder.decryption_refusals]
    assert len(reasons) == 4 and "individual owner contribution" in reasons[0]
    assert holder.decryption_log == ()
    with pytest.raises(PolicyRefused, match="not a key-holder stage"):
        holder.handle(task("he.contribute", Payload({})))
    with pytest.raises(PolicyRefused, match="task for job 'other'"):
        holder.handle(task("he.context", Payload({}), job="other"))


def test_one_release_per_round_and_never_a_difference(setup) -> None:  # type: ignore[no-untyped-def]
    holder, *_ = setup
    first = decrypt(holder, request(setup, [0, 1, 2, 3]), round=1)
    again = decrypt(holder, request(setup, [3, 2, 1, 0]), round=1)
    assert first["he.release"] == again["he.release"]  # the same release: nothing new leaves
    with pytest.raises(PolicyRefused, match="already decrypted for this statistic"):
        decrypt(holder, request(setup, [0, 1, 2, 3, 4]), round=1)
    release = he.Release.from_bytes(first.get_bytes("he.release"))
    assert release.integers[0] == sum(len(t["target"]) for t in dataset_tables(holder.job)[:4])
    assert len(holder.decryption_log) == 1


def test_the_key_holder_counts_only_owners_of_its_own_enrolment() -> None:
    job = stats_job(k=3)
    assert job.stats is not None
    genuine = SimulatedKeys.generate(NAMES)  # what the deployment gave the key holder
    puppets = SimulatedKeys.generate(NAMES)  # same names, keys the coordinator made up
    holder = KeyholderParticipant(job=job, enrolment=genuine.enrolment())
    public = holder.public_context()
    forged = [
        he.encrypt_statistics(
            public,
            table,
            spec=job.stats.spec(),
            job_id=job.job.name,
            round=1,
            owner_id=name,
            signing_key=puppets.owners[name],
        )
        for name, table in zip(NAMES[:3], dataset_tables(job), strict=False)
    ]
    data = he.DecryptionRequest(  # the coordinator checked them against the puppets' keys
        job_id=job.job.name, round=1, attempt=1, spec=job.stats.spec(), contributions=tuple(forged)
    ).to_bytes()
    with pytest.raises(PolicyRefused, match="BelowMinimumCohort: aggregate has 0 distinct"):
        decrypt(holder, data)
    left_out = [r for r in holder.decryption_refusals if r.owner is not None]
    assert [r.owner for r in left_out] == NAMES[:3]
    assert all("receipt of" in r.reason and "invalid signature" in r.reason for r in left_out)
    assert holder.decryption_log == ()


def test_the_key_holder_refuses_jobs_without_he_and_a_lower_k() -> None:
    keys = SimulatedKeys.generate(NAMES)
    with pytest.raises(ConfigError, match="needs no key holder"):
        KeyholderParticipant(job=parse(job_text()), enrolment=keys.enrolment())
    with pytest.raises(ConfigError, match="k can only be raised"):
        KeyholderParticipant(job=stats_job(k=3), enrolment=keys.enrolment(), min_contributors=2)
    raised = KeyholderParticipant(
        job=stats_job(k=3), enrolment=keys.enrolment(), min_contributors=4
    )
    assert raised.min_contributors == 4


def test_simulated_identities_are_private_files(tmp_path: Path) -> None:
    keys = SimulatedKeys.generate(NAMES[:2])
    files = keys.write(tmp_path / "ids")
    for path in [files.keyholder_identity, *files.owner_identities.values()]:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_enrolment(files.enrolment) == keys.enrolment()
    policy = OwnerPolicy.from_toml(files.owner_policy)
    assert policy.trusted_keyholders == (raw_public_key(keys.keyholder).hex(),)
    assert tomllib.loads(files.owner_policy.read_text())["policy"]
