"""HE jobs over real loopback gRPC: statistics with five owners and a key holder, refusals, and
HE-aggregated training equal to plain FedAvg."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tenseal as ts
from support import LinearTrainer, fedavg_oracle, job_text, make_coordinator, parse
from support_he import COLUMNS, assert_matches_pooled, pooled, stats_job

from fl_core.client.policy import OwnerPolicy
from fl_core.client.runtime import Client, ClientOptions, Participant
from fl_core.coordinator.events import Event
from fl_core.coordinator.stats_job import StatsJob
from fl_core.coordinator.store import Store
from fl_core.errors import PolicyRefused
from fl_core.keyholder import SimulatedKeys
from fl_core.stats import StatsOwner, dataset_tables, stats_coordinator
from fl_core.transport.grpc_client import GrpcClientTransport
from fl_core.transport.grpc_server import serve
from he.params import Scheme

pytestmark = pytest.mark.integration

OPTIONS = ClientOptions(long_poll_s=5.0, backoff_initial_s=0.05)


def run_over_grpc(
    coordinator: Any, participants: list[Participant], on_event: Any = None
) -> tuple[Any, dict[str, Any]]:
    tasks: dict[str, asyncio.Task[Any]] = {}
    if on_event is not None:
        coordinator._events = lambda e: on_event(e, tasks)

    async def main() -> tuple[Any, dict[str, Any]]:
        handle = await serve(coordinator, address="127.0.0.1:0", limits=coordinator.job.limits)
        transports = [GrpcClientTransport(f"127.0.0.1:{handle.port}") for _ in participants]
        for p, t in zip(participants, transports, strict=True):
            tasks[p.name] = asyncio.create_task(p.run(t))
        try:
            done = await coordinator.run()
            results = await asyncio.gather(*tasks.values(), return_exceptions=True)
        finally:
            for t in transports:
                await t.close()
            await handle.stop()
        return done, dict(zip(tasks, results, strict=True))

    return asyncio.run(main())


def stats_participants(
    job: Any, tables: list[dict[str, np.ndarray]], policies: dict[str, OwnerPolicy] | None = None
) -> list[Participant]:
    names = [f"hospital-{i}" for i in range(len(tables))]
    keys = SimulatedKeys.generate(names)
    owners: list[Participant] = [
        StatsOwner(
            name=n,
            job=job,
            table=t,
            identity_key=keys.owners[n],
            policy=keys.owner_policy((policies or {}).get(n)),
            options=OPTIONS,
        )
        for n, t in zip(names, tables, strict=True)
    ]
    return [keys.keyholder_participant(job, options=OPTIONS), *owners]


def test_five_hospitals_statistics_equal_numpy_and_the_coordinator_cannot_decrypt(
    tmp_path: Path,
) -> None:
    job = stats_job()
    tables = dataset_tables(job)
    runner = StatsJob()
    store = Store(tmp_path / "s.db")
    coordinator = stats_coordinator(job, store, runner)

    done, results = run_over_grpc(coordinator, stats_participants(job, tables))

    assert done.status == "completed", done.reason
    assert all(r.status == "completed" for r in results.values())
    assert runner.result is not None
    assert_matches_pooled(runner.result, pooled(tables))
    assert store.metrics(job.job.name)[0]["statistics"] == runner.result
    # The coordinator held the public context only: no secret key, no way to decrypt its sum.
    public, aggregate = runner.public, runner.aggregate
    assert public is not None and aggregate is not None
    assert not hasattr(public, "decrypt")
    reals = Scheme.CKKS if Scheme.CKKS in {p.scheme for p in public.params} else Scheme.BFV
    for scheme, blobs in ((Scheme.BFV, aggregate.bfv), (reals, aggregate.ckks)):
        ctx = public.tenseal(scheme)
        assert not ctx.has_secret_key() and not ctx.is_private()
        load = ts.bfv_vector_from if scheme is Scheme.BFV else ts.ckks_vector_from
        with pytest.raises(ValueError, match="secret"):
            load(ctx, blobs[0]).decrypt()
    store.close()


@pytest.mark.parametrize("how", ["refusing", "dropping"])
def test_fewer_than_k_contributors_fail_with_the_key_holders_reason(
    tmp_path: Path, how: str
) -> None:
    job = stats_job(k=4, timeout=4.0, out_of_range="refuse")
    tables = dataset_tables(job)
    if how == "refusing":  # two hospitals hold values outside the job's published ranges
        for t in tables[3:]:
            t["bmi"] = t["bmi"].copy()
            t["bmi"][0] = 75.0
    store = Store(tmp_path / "s.db")
    coordinator = stats_coordinator(job, store, StatsJob())
    victims = ["hospital-3", "hospital-4"]

    def on_event(event: Event, tasks: dict[str, asyncio.Task[Any]]) -> None:
        data = event.data
        if how == "dropping" and event.kind == "stage_progress" and data["stage"] == "he.context":
            for name in victims:  # "kill -9": the task dies, its connection with it
                tasks[name].cancel()

    done, results = run_over_grpc(coordinator, stats_participants(job, tables), on_event)

    # Masked (the default): every owner of the cohort must contribute. Two that refuse after
    # advertising their keys stop the attempt at he.contribute with their reasons; two that died
    # before he.keys leave a cohort of 3, which the key holder refuses (k = 4).
    assert done.status == "failed"
    if how == "refusing":
        assert "he.contribute': 3 of 5 clients answered, quorum is 5" in done.reason
        assert "hospital-3: protocol_abort: encrypting the owner's statistics" in done.reason
    else:
        assert "keyholder: policy: key holder refuses: BindingError" in done.reason
        assert "the cohort has 3 owners; at least 4 needed" in done.reason
    events = store.events(job.job.name)
    if how == "refusing":
        refusals = [e for e in events if e["kind"] == "refusal"]
        assert {e["client"] for e in refusals} == set(victims)
        assert any("outside its range [10.0, 60.0]" in str(e["detail"]) for e in refusals)
    else:
        assert all(isinstance(results[v], asyncio.CancelledError) for v in victims)
    store.close()


def test_an_owner_that_needs_a_higher_k_stays_out(tmp_path: Path) -> None:
    job = stats_job(k=3, min_clients=4)
    tables = dataset_tables(job)
    runner = StatsJob()
    store = Store(tmp_path / "s.db")
    coordinator = stats_coordinator(job, store, runner)
    participants = stats_participants(job, tables, {"hospital-2": OwnerPolicy(min_cohort=5)})

    done, results = run_over_grpc(coordinator, participants)

    assert done.status == "completed", done.reason
    assert isinstance(results["hospital-2"], PolicyRefused)
    assert "below the owner's minimum cohort of 5" in str(results["hospital-2"])
    assert runner.result is not None
    assert "hospital-2" not in runner.result["contributors"]
    assert_matches_pooled(runner.result, pooled([t for i, t in enumerate(tables) if i != 2]))
    assert len(COLUMNS) == len(runner.result["mean"])
    store.close()


def test_he_aggregated_training_equals_plain_fedavg_within_ckks_tolerance(tmp_path: Path) -> None:
    extra = "[aggregation]\nkind = 'he'\n[he]\nclip = 10.0\nmax_weight = 1000\n"
    job = parse(job_text(rounds=2, clients=5, min_clients=5, extra=extra))
    trainers = [LinearTrainer(i) for i in range(5)]
    names = [f"client-{i}" for i in range(5)]
    keys = SimulatedKeys.generate(names)
    store = Store(tmp_path / "s.db")
    coordinator = make_coordinator(job, store, trainers[0])
    clients = [  # enrolled identities, and trust in this key holder only
        Client(
            name=n,
            job=job,
            trainer=t,
            identity_key=keys.owners[n],
            policy=keys.owner_policy(),
            options=OPTIONS,
        )
        for n, t in zip(names, trainers, strict=True)
    ]
    keyholder = keys.keyholder_participant(job, options=OPTIONS)

    done, _ = run_over_grpc(coordinator, [keyholder, *clients])

    assert done.status == "completed", done.reason
    metrics = store.metrics(job.job.name)
    assert [m["num_clients"] for m in metrics] == [5, 5]
    for rnd, m in enumerate(metrics, start=1):
        oracle = fedavg_oracle(trainers, rnd)
        start = store.checkpoint(job.job.name, rnd - 1)
        mean = np.abs(oracle.astype(np.float64) - start).max()
        tol, weight = float(str(m["he_tolerance"])), float(str(m["total_weight"]))
        bound = (
            tol * (1 + mean) / (weight - tol) + 4 * np.finfo(np.float32).eps * np.abs(oracle).max()
        )
        np.testing.assert_allclose(store.checkpoint(job.job.name, rnd), oracle, rtol=0, atol=bound)
    assert len(keyholder.decryption_log) == 2
    store.close()
