"""The consistency check from the data owner's side (issue 9, item 2), through ``Client.handle``.

The coordinator's real round objects play the protocol; a tamper function alters what it sends
(tests/owner_harness.py). The owner computes the consistency quorum from its own job file and
refuses a lower one, and it reveals no share without a quorum of signatures on one cohort.
"""

from __future__ import annotations

import pytest
from owner_harness import drive, replace_field, server_round
from support import job_text, parse

from fl_core.errors import PolicyRefused, ProtocolError
from fl_core.payload import Payload
from tests.fl_core.client.test_owner_attacks import SECAGG, owners, trained


def _job(n: int = 6):
    return parse(job_text(clients=n, min_clients=n, extra=SECAGG))


def test_an_honest_round_runs_the_consistency_check() -> None:
    job = _job()
    clients = owners(job, 6)
    server = server_round(job, clients)
    assert "secagg.consistency_check" in server.stages

    aggregate, refusals = drive(job, server, clients)

    assert not refusals and aggregate is not None


@pytest.mark.parametrize("quorum", [1, 4])
def test_a_consistency_quorum_lowered_in_the_request_is_refused(quorum: int) -> None:
    job = _job()
    clients = owners(job, 6)
    server = server_round(job, clients)
    honest = server.params.consistency_threshold  # type: ignore[attr-defined]
    assert quorum < honest

    def lower(stage: str, tasks: dict[str, Payload]) -> dict[str, Payload]:
        if stage.endswith("advertise_keys"):
            return replace_field(tasks, "m.consistency_threshold", quorum)
        return tasks

    aggregate, refusals = drive(job, server, clients, tamper=lower)

    assert aggregate is None and len(refusals) == 6
    assert all(isinstance(e, PolicyRefused) for e in refusals.values())
    assert all(f"consistency_threshold = {quorum}" in str(e) for e in refusals.values()), refusals
    assert trained(clients) == 0


def test_unmasking_without_a_quorum_of_signatures_is_refused_by_every_owner() -> None:
    job = _job()
    clients = owners(job, 6)

    def withhold(stage: str, tasks: dict[str, Payload]) -> dict[str, Payload]:
        if not stage.endswith(".unmask"):
            return tasks
        out = {}
        for name, payload in tasks.items():
            fields = dict(payload.items())
            keys = fields["m.signatures.keys"]
            values = fields["m.signatures.values"]
            fields["m.signatures.keys"] = tuple(keys[:2])  # type: ignore[index]
            fields["m.signatures.values"] = tuple(values[:2])  # type: ignore[index]
            out[name] = Payload(fields)
        return out

    aggregate, refusals = drive(job, server_round(job, clients), clients, tamper=withhold)

    assert aggregate is None and len(refusals) == 6
    assert all(isinstance(e, ProtocolError) for e in refusals.values())
    assert all("below the quorum" in str(e) for e in refusals.values()), refusals
