"""A hostile coordinator in process: real server-side round objects, tasks it may alter.

It drives real :class:`fl_core.client.runtime.Client` objects through their public ``answer``
(what the runtime calls for every task that arrives over gRPC: ``handle``, recorded in the
owner's audit log when it keeps one), so a test can play a dishonest
coordinator: change any field of any task, retry rounds, pick cohorts, send evaluations.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np

from fl_core.aggregators import create_aggregator
from fl_core.aggregators.base import RoundContext, ServerRound
from fl_core.client.runtime import Client
from fl_core.config import JobConfig
from fl_core.errors import FlCoreError
from fl_core.payload import Payload
from fl_core.transport.base import Task, TaskHeader
from fl_core.types import FitConfig

Tamper = Callable[[str, dict[str, Payload]], dict[str, Payload]]


def fit_of(job: JobConfig, round: int, **changes: object) -> FitConfig:
    """The honest training settings of ``round`` (what the job file says), with ``changes``."""
    seed = int(np.random.default_rng([job.job.seed or 0, round]).integers(0, 2**62))
    values: dict[str, object] = {
        "round": round,
        "epochs": job.train.epochs,
        "batch_size": job.train.batch_size,
        "learning_rate": job.train.learning_rate,
        "momentum": job.train.momentum,
        "weight_decay": job.train.weight_decay,
        "optimizer": job.train.optimizer,
        "max_steps": job.train.max_steps,
        "seed": seed,
    }
    values.update(changes)
    return FitConfig(**values)  # type: ignore[arg-type]


def server_round(
    job: JobConfig,
    clients: Sequence[Client],
    *,
    round: int = 1,
    attempt: int = 1,
    weights: np.ndarray | None = None,
    fit: FitConfig | None = None,
) -> ServerRound:
    """The coordinator's real round object for ``clients``."""
    ctx = RoundContext(
        job_id=job.job.name,
        round=round,
        attempt=attempt,
        global_weights=weights if weights is not None else np.zeros(5, np.float32),
        fit=fit or fit_of(job, round),
        cohort=tuple(c.name for c in clients),
        identities={c.name: c.public_key for c in clients},
        rng=np.random.default_rng(round * 100 + attempt),
    )
    return create_aggregator(job).server_round(ctx)


def task(job: JobConfig, stage: str, payload: Payload, *, round: int = 1, attempt: int = 1) -> Task:
    """A task as the runtime hands it to ``Client.handle``."""
    header = TaskHeader(
        job_id=job.job.name, round=round, attempt=attempt, stage=stage, task_id=f"{stage}-{round}"
    )
    return Task(header=header, payload=payload)


def replace_field(tasks: Mapping[str, Payload], name: str, value: object) -> dict[str, Payload]:
    """Every task with field ``name`` set to ``value``."""
    return {c: Payload({**dict(p.items()), name: value}) for c, p in tasks.items()}


def drive(
    job: JobConfig,
    server: ServerRound,
    clients: Sequence[Client],
    *,
    round: int = 1,
    attempt: int = 1,
    tamper: Tamper | None = None,
) -> tuple[object | None, dict[str, FlCoreError]]:
    """Run every stage; return (the aggregate or None, each refusing client's error)."""
    by_name = {c.name: c for c in clients}
    alive = [c.name for c in clients]
    refusals: dict[str, FlCoreError] = {}
    for stage in server.stages:
        tasks = server.tasks(stage, alive)
        if tamper is not None:
            tasks = tamper(stage, tasks)
        results: dict[str, object] = {}
        for name, payload in tasks.items():
            try:
                answer = by_name[name].answer(
                    task(job, stage, payload, round=round, attempt=attempt)
                )
            except FlCoreError as exc:
                refusals[name] = exc
                continue
            results[name] = server.check(stage, name, answer)
        if len(results) < server.quorum(stage, len(tasks)):
            return None, refusals
        server.collect(stage, results, [c for c in alive if c not in results])
        alive = list(results)
    return server.finish(), refusals
