"""A dishonest coordinator against the data owner (issue 9), through ``Client.handle``.

Each test plays the coordinator with the real server-side round objects and alters what it
sends (tests/owner_harness.py). On the code before the owner computed its own parameters every
attack here went through (the owner trained and released); now each ends in a refusal that
names the field or rule, and nothing is released.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from owner_harness import drive, fit_of, replace_field, server_round, task
from support import LinearTrainer, job_text, parse

from fl_core.client.ledger import PrivacyLedger
from fl_core.client.policy import OwnerPolicy
from fl_core.client.runtime import Client
from fl_core.errors import PolicyRefused, ProtocolError
from fl_core.federation import simulated_roster
from fl_core.payload import Payload

SECAGG = """
[aggregation]
kind = "secagg"
[secagg]
full_graph = true
adversary = "semi_malicious"
clip = 10.0
max_weight = 1000
"""

CENTRAL = """
[evaluation]
every = 1
[dp]
mode = "central"
epsilon = 8.0
clip = 1.0
"""


def owners(job, n: int, *, ledgers: Path | None = None) -> list[Client]:
    out = []
    for i in range(n):
        ledger = None
        if ledgers is not None:
            ledger = ledgers / f"client-{i}.db"
            with PrivacyLedger(ledger) as book:
                book.set_cap(job.data.dataset, epsilon=1000.0, delta=1e-5)
        out.append(
            Client(
                name=f"client-{i}",
                job=job,
                trainer=LinearTrainer(i),
                policy=OwnerPolicy(min_cohort=4),
                ledger=ledger,
            )
        )
    return out


def secagg_job(n: int = 6):
    return parse(job_text(clients=n, min_clients=n, extra=SECAGG))


def trained(clients: list[Client]) -> int:
    return sum(len(c.trainer.fits) for c in clients)  # type: ignore[attr-defined]


def test_an_honest_secure_round_gives_the_exact_weighted_mean() -> None:
    job = secagg_job()
    clients = owners(job, 6)
    aggregate, refusals = drive(job, server_round(job, clients), clients)
    assert not refusals
    assert aggregate is not None and len(aggregate.contributors) == 6  # type: ignore[attr-defined]


def test_a_threshold_lowered_in_the_request_is_refused() -> None:
    """Attack 1: t = 2 instead of the job's threshold (the split-view lie then recovers inputs)."""
    job = secagg_job()
    clients = owners(job, 6)

    def lower(stage: str, tasks: dict[str, Payload]) -> dict[str, Payload]:
        return replace_field(tasks, "m.threshold", 2) if stage.endswith("advertise_keys") else tasks

    aggregate, refusals = drive(job, server_round(job, clients), clients, tamper=lower)
    assert aggregate is None and set(refusals) == {c.name for c in clients}
    assert all("threshold = 2" in str(e) for e in refusals.values()), refusals
    assert trained(clients) == 0


@pytest.mark.parametrize(
    ("name", "value"), [("q.bits", 30), ("q.clip", 1e6), ("q.max_weight", 10**9)]
)
def test_quantization_from_the_request_is_refused(name: str, value: object) -> None:
    job = secagg_job()
    clients = owners(job, 6)

    def change(stage: str, tasks: dict[str, Payload]) -> dict[str, Payload]:
        return replace_field(tasks, name, value) if stage.endswith("advertise_keys") else tasks

    aggregate, refusals = drive(job, server_round(job, clients), clients, tamper=change)
    assert aggregate is None and len(refusals) == 6
    assert all(name in str(e) for e in refusals.values()), refusals
    assert trained(clients) == 0


@pytest.mark.parametrize(
    ("field", "value"),
    [("learning_rate", 3.0), ("epochs", 10_000), ("batch_size", 1), ("max_steps", 7)],
)
def test_training_settings_from_the_task_are_refused(field: str, value: object) -> None:
    """Attack 6: epochs, learning rate, batch and steps come from the job file, not the task."""
    job = parse(job_text(clients=3, min_clients=3))
    clients = owners(job, 3)
    fit = fit_of(job, 1, **{field: value})
    aggregate, refusals = drive(job, server_round(job, clients, fit=fit), clients)
    assert aggregate is None and len(refusals) == 3
    assert all(f"fit.{field}" in str(e) for e in refusals.values()), refusals
    assert trained(clients) == 0


def test_attempts_per_round_are_capped_by_the_job() -> None:
    """Attack 6: an owner released six round-1 updates; now at most round.max_attempts (2)."""
    job = parse(job_text(clients=3, min_clients=3))
    clients = owners(job, 3)
    for attempt in (1, 2):
        aggregate, refusals = drive(
            job, server_round(job, clients, attempt=attempt), clients, attempt=attempt
        )
        assert aggregate is not None and not refusals
    aggregate, refusals = drive(job, server_round(job, clients, attempt=3), clients, attempt=3)
    assert aggregate is None and len(refusals) == 3
    assert all("round.max_attempts = 2" in str(e) for e in refusals.values())
    assert trained(clients) == 6


def test_a_retry_after_a_secure_release_is_refused() -> None:
    """Attack 4: sums over 6 and then 5 owners would differ by client-5's exact update."""
    job = secagg_job()
    clients = owners(job, 6)
    first, refusals = drive(job, server_round(job, clients), clients)
    assert first is not None and not refusals
    survivors = clients[:5]
    second, refusals = drive(job, server_round(job, survivors, attempt=2), survivors, attempt=2)
    assert second is None and set(refusals) == {c.name for c in survivors}
    assert all("already released" in str(e) for e in refusals.values()), refusals
    assert trained(clients) == 6


def test_a_new_round_that_reuses_the_old_model_is_refused() -> None:
    """The same retry in disguise: round 2 with round 1's global model and a smaller cohort."""
    job = secagg_job()
    clients = owners(job, 6)
    first, _ = drive(job, server_round(job, clients), clients)
    assert first is not None
    survivors = clients[:5]
    second, refusals = drive(job, server_round(job, survivors, round=2), survivors, round=2)
    assert second is None and len(refusals) == 5
    assert all("this global model" in str(e) for e in refusals.values()), refusals


def test_a_round_beyond_the_job_is_refused() -> None:
    job = parse(job_text(rounds=3, clients=3, min_clients=3))
    clients = owners(job, 3)
    aggregate, refusals = drive(job, server_round(job, clients, round=4), clients, round=4)
    assert aggregate is None and all("3 rounds" in str(e) for e in refusals.values())
    assert trained(clients) == 0


def test_evaluation_in_a_dp_job_is_refused(tmp_path: Path) -> None:
    """Attack 6: 200 evaluation answers in a DP job charged nothing to the ledger."""
    job = parse(job_text(clients=3, min_clients=3, extra=CENTRAL))
    client = owners(job, 1, ledgers=tmp_path)[0]
    payload = Payload({"weights": np.zeros(5, np.float32)})
    with pytest.raises(PolicyRefused, match="evaluation"):
        client.handle(task(job, "evaluate", payload))


def test_central_dp_charges_as_if_always_selected(tmp_path: Path) -> None:
    """Attack 7: with Poisson sampling q = 0.1 the owner used to charge GaussianEvent(z, 0.1)."""
    extra = CENTRAL + "[sampling]\npoisson = true\nfraction = 0.1\n"
    text = job_text(rounds=100, clients=3, min_clients=1).replace("[sampling]\n", "", 1)
    text = text.replace("min_clients = 1\nwait_for_clients_s = 30\n", "")
    job = parse(text + extra.replace("fraction = 0.1\n", "fraction = 0.1\nmin_clients = 1\n"))
    clients = owners(job, 3, ledgers=tmp_path)
    aggregate, refusals = drive(job, server_round(job, clients), clients)
    assert aggregate is not None and not refusals
    with PrivacyLedger(tmp_path / "client-0.db") as book:
        (entry,) = book.entries()
    assert entry.parameters["sample_rate"] == 1.0


def test_a_release_reports_only_this_jobs_spend(tmp_path: Path) -> None:
    """Attack 8: each masked input carried the owner's ledger total across all its jobs."""
    job = parse(job_text(clients=3, min_clients=3, extra=CENTRAL.replace("every = 1", "every = 0")))
    clients = owners(job, 3, ledgers=tmp_path)
    from fl_core.dp.accounting import GaussianEvent

    with PrivacyLedger(tmp_path / "client-0.db") as book:  # another job spent before this one
        book.charge(
            job="other-job",
            round=1,
            dataset=job.data.dataset,
            mechanism="dpsgd",
            event=GaussianEvent(noise_multiplier=0.5, sample_rate=1.0, steps=50),
        )
    aggregate, refusals = drive(job, server_round(job, clients), clients)
    assert aggregate is not None and not refusals
    reported = aggregate.client_metrics["client-0"]["epsilon"]  # type: ignore[attr-defined]
    others = aggregate.client_metrics["client-1"]["epsilon"]  # type: ignore[attr-defined]
    assert reported == pytest.approx(others)  # the other job's spend is not in it


@pytest.mark.parametrize("names", ["ghost", "client"], ids=["invented-names", "stolen-names"])
def test_invented_peers_are_refused_by_an_owner_with_a_roster(names: str) -> None:
    """Issue 9, item 3: five peers the coordinator made up, with keys it holds.

    Without a roster the owner has only the identity keys the coordinator relays, so five signed
    made-up peers pass (min_cohort 4) and the sum reveals the owner's input. With the roster
    every peer must be a roster owner under its roster key.
    """
    job = secagg_job()
    roster, keys = simulated_roster([f"client-{i}" for i in range(6)])
    victim = Client(
        name="client-0",
        job=job,
        trainer=LinearTrainer(0),
        identity_key=keys["client-0"],
        policy=OwnerPolicy(min_cohort=4),
        roster=roster,
    )
    fakes = [
        Client(name=f"{names}-{i}", job=job, trainer=LinearTrainer(i), policy=OwnerPolicy())
        for i in range(1, 6)
    ]
    aggregate, refusals = drive(job, server_round(job, [victim, *fakes]), [victim, *fakes])
    assert aggregate is None
    assert isinstance(refusals["client-0"], PolicyRefused | ProtocolError)
    assert "roster" in str(refusals["client-0"]) or "pinned" in str(refusals["client-0"])
    assert trained([victim]) == 0


def test_an_owner_with_a_roster_refuses_another_name_for_itself() -> None:
    job = secagg_job()
    roster, keys = simulated_roster([f"client-{i}" for i in range(6)])
    clients = [
        Client(
            name=f"client-{i}",
            job=job,
            trainer=LinearTrainer(i),
            identity_key=keys[f"client-{i}"],
            policy=OwnerPolicy(min_cohort=4),
            roster=roster,
        )
        for i in range(6)
    ]
    # The honest round passes the roster checks.
    aggregate, refusals = drive(job, server_round(job, clients), clients)
    assert not refusals and aggregate is not None

    def swap(stage: str, tasks: dict[str, Payload]) -> dict[str, Payload]:
        if stage != "secagg.advertise":
            return tasks
        out = {}
        for c, p in tasks.items():
            fields = dict(p.items())
            fields["peers.name"] = tuple(reversed(fields["peers.name"]))  # type: ignore[arg-type]
            out[c] = Payload(fields)
        return out

    aggregate, refusals = drive(
        job, server_round(job, clients, round=2), clients, round=2, tamper=swap
    )
    assert aggregate is None and set(refusals) == {c.name for c in clients}
