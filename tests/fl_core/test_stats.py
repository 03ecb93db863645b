"""Statistics jobs in process: StatsOwner, compute_statistics, tables, owner policies."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from support_he import COLUMNS, assert_matches_pooled, pooled, stats_job

from fl_core.client.policy import OwnerPolicy
from fl_core.errors import ConfigError
from fl_core.stats import compute_statistics, dataset_tables, load_table


def test_five_owners_get_numpys_statistics_of_the_pooled_diabetes_rows() -> None:
    job = stats_job()
    tables = dataset_tables(job)

    outcome = compute_statistics(job, tables)

    assert outcome.done.status == "completed", outcome.done.reason
    assert outcome.participant_errors == {}
    assert outcome.statistics is not None
    assert sorted(outcome.statistics["contributors"]) == [f"client-{i}" for i in range(5)]
    assert_matches_pooled(outcome.statistics, pooled(tables))
    metrics = outcome.metrics
    assert metrics["num_clients"] == 5 and metrics["flood_bits"] == 0  # exact BFV: nothing flooded
    assert metrics["stage_seconds"].keys() == {
        "he.context",
        "he.keys",
        "he.contribute",
        "he.decrypt",
    }  # type: ignore[attr-defined]


def test_an_owner_with_no_rows_still_counts_and_changes_nothing() -> None:
    job = stats_job(min_clients=4)
    tables = dataset_tables(job)[:3]
    empty = {c: np.zeros(0) for c in COLUMNS}

    outcome = compute_statistics(job, [*tables, empty])

    assert outcome.done.status == "completed", outcome.done.reason
    assert outcome.statistics is not None
    assert len(outcome.statistics["contributors"]) == 4
    assert_matches_pooled(outcome.statistics, pooled(tables))


def test_an_owner_whose_policy_needs_a_higher_k_refuses_and_the_rest_go_on() -> None:
    job = stats_job(min_clients=4, k=3)
    tables = dataset_tables(job)
    names = [f"h{i}" for i in range(5)]

    outcome = compute_statistics(
        job, dict(zip(names, tables, strict=True)), policies={"h4": OwnerPolicy(min_cohort=4)}
    )

    assert outcome.done.status == "completed", outcome.done.reason
    assert "h4" in outcome.participant_errors
    assert "below the owner's minimum cohort of 4" in outcome.participant_errors["h4"]
    assert outcome.statistics is not None
    assert sorted(outcome.statistics["contributors"]) == names[:4]
    assert_matches_pooled(outcome.statistics, pooled(tables[:4]))


def test_dataset_tables_deal_out_every_row_once() -> None:
    job = stats_job(owners=3)
    tables = dataset_tables(job)
    assert len(tables) == 3
    assert sum(len(t["target"]) for t in tables) == 442
    assert set(tables[0]) == set(COLUMNS)


def test_tables_load_from_csv_and_npz(tmp_path: Path) -> None:
    csv = tmp_path / "t.csv"
    csv.write_text("age,bmi\n50,22.5\n61,30\n")
    npz = tmp_path / "t.npz"
    np.savez(npz, age=np.array([50.0, 61.0]), bmi=np.array([22.5, 30.0]))
    for path in (csv, npz):
        table = load_table(path)
        np.testing.assert_array_equal(table["age"], [50.0, 61.0])
        np.testing.assert_array_equal(table["bmi"], [22.5, 30.0])
    bad = tmp_path / "t.txt"
    bad.write_text("x")
    with pytest.raises(ConfigError, match="a .csv or .npz"):
        load_table(bad)
    ragged = tmp_path / "r.csv"
    ragged.write_text("a,b\n1,2\n3\n")
    with pytest.raises(ConfigError, match="cannot read table"):
        load_table(ragged)


def test_withdrawn_rows_are_not_counted_by_the_statistics(tmp_path: Path) -> None:
    # Prepare: three canaries of owner 0's part, withdrawn in its ledger
    from fl_core.client.consent import withdrawn_mask
    from fl_core.client.ledger import PrivacyLedger
    from fl_core.stats import dataset_share_ids

    job = stats_job()
    before = dataset_tables(job)
    canaries = list(dataset_share_ids(job)[0][:3])
    with PrivacyLedger(tmp_path / "l.db") as book:
        book.withdraw(job.data.dataset, canaries)
    mask = withdrawn_mask(tmp_path / "l.db", job.data.dataset)

    # Execute
    tables = dataset_tables(job, withdrawn=mask)
    outcome = compute_statistics(job, tables)

    # Assert: exact counts, and the canaries' ids are gone from owner 0's part only
    total = sum(len(t[COLUMNS[0]]) for t in before)
    assert outcome.statistics is not None
    assert outcome.statistics["count"] == total - 3
    assert len(tables[0][COLUMNS[0]]) == len(before[0][COLUMNS[0]]) - 3
    assert not set(canaries) & set(dataset_share_ids(job, withdrawn=mask)[0])
    assert_matches_pooled(outcome.statistics, pooled(tables))


def test_a_statistics_owner_drops_identifiers_and_checks_k(tmp_path: Path) -> None:
    from fl_core.audit import AuditLog, read_audit
    from fl_core.errors import PolicyRefused
    from fl_core.stats import deidentify_table

    job = stats_job()
    table = dict(dataset_tables(job)[0])
    n = len(table[COLUMNS[0]])
    table["phone"] = np.arange(n, dtype=np.float64)
    table["band"] = np.arange(n, dtype=np.float64) % 4
    policy = OwnerPolicy(
        drop_columns=("phone",), quasi_identifiers=("band",), min_k_anonymity=n // 4
    )
    with AuditLog(tmp_path / "a.db", party="client-0", role="owner") as log:
        out = deidentify_table(table, job=job, policy=policy, key=b"", audit=log)
        strict = OwnerPolicy(quasi_identifiers=("band",), min_k_anonymity=n)
        with pytest.raises(PolicyRefused, match=f"not {n}-anonymous"):
            deidentify_table(table, job=job, policy=strict, key=b"", audit=log)
        reads = OwnerPolicy(drop_columns=(COLUMNS[0],))
        with pytest.raises(PolicyRefused, match="the job's statistics reads column"):
            deidentify_table(table, job=job, policy=reads, key=b"", audit=log)
    assert "phone" not in out and set(COLUMNS) <= set(out)
    _, entries = read_audit(tmp_path / "a.db")
    assert [e.kind for e in entries] == [
        "deidentification", "deidentification_refused", "deidentification_refused",
    ]  # fmt: skip


def test_a_masked_owner_refuses_a_cohort_the_coordinator_padded_or_left_out() -> None:
    # Prepare: a hospital of a masked statistics job (the default), pinned to its peers.
    import he
    from fl_core.errors import PolicyRefused, ProtocolError
    from fl_core.he_job import SignedContext, cohort_fields
    from fl_core.keyholder import SimulatedKeys
    from fl_core.payload import Payload
    from fl_core.stats import StatsOwner
    from fl_core.transport.base import Task, TaskHeader

    job = stats_job(k=3)
    names = ["h0", "h1", "h2"]
    keys = SimulatedKeys.generate(names)
    holder = keys.keyholder_participant(job)
    owner = StatsOwner(name="h0", job=job, table=dataset_tables(job)[0],
                       identity_key=keys.owners["h0"], policy=keys.owner_policy())  # fmt: skip

    def task(stage: str, payload: Payload) -> Task:
        header = TaskHeader(job_id=job.job.name, round=1, attempt=1, stage=stage, task_id="t")
        return Task(header, payload)

    signed = holder.handle(task("he.context", Payload({"he.job_sha256": job.sha256})))
    mine = owner.handle(task("he.keys", Payload({})))
    ad = he.MaskAdvertisement(owner_id="h0", public_key=mine.get_bytes("he.mask_key"),
                              signature=mine.get_bytes("he.mask_signature"))  # fmt: skip
    puppets = SimulatedKeys.generate(["h1", "h2"])  # the coordinator's own identities
    fake = [
        he.MaskingKey.generate(identity_key=puppets.owners[n], owner_id=n, job_id=job.job.name,
                               round=1, attempt=1)[1]
        for n in ("h1", "h2")
    ]  # fmt: skip
    cohort = he.Cohort(job_id=job.job.name, round=1, attempt=1, advertisements=(ad, *fake))
    relayed = {"h0": keys.enrolment()["h0"], **puppets.enrolment()}  # what it claims they are
    SignedContext.from_payload(signed)  # the context is genuine
    context = dict(signed)

    # Execute / Assert: the pinned peers expose the invented keys; no cohort at all is refused.
    with pytest.raises(ProtocolError, match="'h1' is not signed by its enrolled identity"):
        owner.handle(task("he.contribute", Payload({**context, **cohort_fields(cohort, relayed)})))
    with pytest.raises(PolicyRefused, match="carries no cohort"):
        owner.handle(task("he.contribute", signed))
