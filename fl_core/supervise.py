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


async def _exit_error(proc: asyncio.subprocess.Process) -> str | None:
    """Wait for ``proc``; ``None`` when it exited 0, else its status and last stderr lines."""
    _, stderr = await proc.communicate()
    if not proc.returncode:
        return None
    tail = (stderr or b"").decode(errors="replace").strip().splitlines()[-3:]
    return f"exit {proc.returncode}: " + " | ".join(tail)


async def supervise_processes(
    job: JobConfig,
    run: Awaitable[JobDone],
    procs: Mapping[str, asyncio.subprocess.Process],
    *,
    owners: set[str],
    errors: dict[str, str],
    grace_s: float = 30.0,
) -> JobDone:
    """:func:`supervise` over member processes (started with ``stderr=PIPE``), then clean up.

    After a job that ended, the processes learn it and exit; they get ``grace_s`` seconds. After
    one that could not run (the coordinator raised, or too many members died), the others are
    killed at once instead of waiting for their own timeouts. Every process is waited for.
    """
    members = {name: asyncio.ensure_future(_exit_error(proc)) for name, proc in procs.items()}
    ended = False
    try:
        done = await supervise(job, run, members, owners=owners, errors=errors)
        ended = True
    finally:
        if ended:
            await asyncio.wait(members.values(), timeout=grace_s)
        for proc in procs.values():
            if proc.returncode is None:
                proc.kill()
        outcomes = await asyncio.gather(*members.values(), return_exceptions=True)
        for name, outcome in zip(members, outcomes, strict=True):
            if ended and isinstance(outcome, str):
                errors.setdefault(name, outcome)
    return done
