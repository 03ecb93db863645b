"""Issue 10 through the key-holder participant (the ``he.decrypt`` stage `bulwark keyholder`
answers): a coordinator's crafted aggregate and one owner's ciphertext with three receipts."""

from __future__ import annotations

import numpy as np
import pytest
from he_attacks import (
    decrypt_with_recovered_key,
    first_chunk,
    forged_aggregates,
    recover_secret_key,
)
from support import job_text, parse

import he
from fl_core.errors import PolicyRefused
from fl_core.he_job import SignedContext, vector_spec
from fl_core.keyholder import KeyholderParticipant, SimulatedKeys
from fl_core.payload import Payload
from fl_core.transport.base import Task, TaskHeader

NAMES = ["client-0", "client-1", "client-2"]
EXTRA = (  # CKKS reals: the parameters the crafted ciphertexts are written for
    "[aggregation]\nkind = 'he'\n[he]\nreals = 'ckks'\nclip = 10.0\nmax_weight = 1000\n"
    "min_contributors = 3\n"
)


def task(stage: str, payload: Payload) -> Task:
    header = TaskHeader(job_id="test-job", round=1, attempt=1, stage=stage, task_id="t")
    return Task(header, payload)


@pytest.mark.parametrize("attack", ["key-probe", "one-owner"])
def test_the_key_holder_participant_releases_nothing_a_coordinator_forged(attack: str) -> None:
    # Prepare: an HE training job; three enrolled owners contribute genuinely (length 8192).
    job = parse(job_text(clients=3, min_clients=3, extra=EXTRA))
    keys = SimulatedKeys.generate(NAMES)
    holder: KeyholderParticipant = keys.keyholder_participant(job)
    public = SignedContext.from_payload(
        holder.handle(task("he.context", Payload({"he.job_sha256": job.sha256})))
    ).open(job)
    spec = vector_spec(job, length=8192)
    rng = np.random.default_rng(3)
    vectors = {n: rng.uniform(-10.0, 10.0, spec.length) for n in NAMES}
    contributions = {
        n: he.encrypt_vector(
            public, vectors[n], spec=spec, job_id="test-job", round=1, owner_id=n,
            signing_key=keys.owners[n],
        )
        for n in NAMES
    }  # fmt: skip
    forged = forged_aggregates(
        public, contributions, spec=spec, job_id="test-job", round=1, enrolment=keys.enrolment()
    )[attack]

    # Execute
    try:
        reply = holder.handle(task("he.decrypt", Payload({"he.aggregate": forged.to_bytes()})))
    except PolicyRefused as exc:
        refusal = str(exc)
    else:
        released = he.Release.from_bytes(reply.get_bytes("he.release")).vector()
        if attack == "key-probe":
            key = recover_secret_key(released)
            alone = decrypt_with_recovered_key(key, first_chunk(contributions[NAMES[0]]), public)
        else:
            alone = released[:4096]
        error = float(np.abs(alone - vectors[NAMES[0]][:4096]).max())
        pytest.fail(f"{attack}: {NAMES[0]}'s contribution came out alone, error {error:.1e}")

    # Assert: refused with its reason, recorded, and nothing decrypted.
    assert "key holder refuses" in refusal
    assert holder.decryption_refusals and holder.decryption_refusals[-1].reason in refusal
    assert holder.decryption_log == ()
