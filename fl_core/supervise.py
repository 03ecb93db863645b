"""Run a coordinator's job beside the processes or tasks of its members, and stop it early.

A simulation starts every data owner (and the key holder) itself, so it knows when one dies: a
client process that exits with an error (its data set is missing, its model unknown) is reported
at once, and when too few owners are left for the job's ``sampling.min_clients`` the job is
cancelled instead of waiting ``sampling.wait_for_clients_s`` for clients that will not come.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Mapping
from typing import Any

from .config import JobConfig
from .errors import ConfigError
from .transport.base import JobDone

log = logging.getLogger("bulwark.simulation")


async def supervise(
    job: JobConfig,
    run: Awaitable[JobDone],
    members: Mapping[str, asyncio.Future[str | None]],
    *,
    owners: set[str],
    errors: dict[str, str],
) -> JobDone:
    """Run the coordinator's job beside its members; stop early when the job cannot go on.

    Each member future resolves to ``None`` (it ended normally) or to its error text, which is
    added to ``errors`` at once. When so many owners failed that fewer than
    ``sampling.min_clients`` are left, or any member that is not an owner (the key holder)
    failed, the job is cancelled instead of waiting ``sampling.wait_for_clients_s`` for clients
    that will not come. A coordinator that raises (a state file holding another job, say)
    raises here at once.

    Raises:
        ConfigError: the job cannot run because members failed (names the first and its error).
    """
    job_task = asyncio.ensure_future(run)
    pending: set[asyncio.Future[Any]] = {job_task, *members.values()}
    names: dict[asyncio.Future[Any], str] = {future: name for name, future in members.items()}
    while not job_task.done():
        finished, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
        for future in finished:
            if future is not job_task and not future.cancelled() and future.result():
                errors[names[future]] = str(future.result())
                log.warning("%s failed: %s", names[future], future.result())
        lost = [n for n in errors if n in owners]
        fatal = [n for n in errors if n not in owners]
        left = len(owners) - len(lost)
        if not job_task.done() and (fatal or left < job.sampling.min_clients):
            job_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await job_task
            first = (fatal or lost)[0]
            raise ConfigError(
                f"{first} failed: {errors[first]} ({left} of the {job.sampling.min_clients} "
                "owners the job needs are left)"
            )
    return job_task.result()
