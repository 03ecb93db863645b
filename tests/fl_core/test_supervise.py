"""A simulated job stops as soon as it cannot go on, instead of waiting for its clients."""

from __future__ import annotations

import asyncio

import pytest
from support import job_text, parse

from fl_core.errors import ConfigError
from fl_core.supervise import supervise
from fl_core.transport.base import JobDone

JOB = parse(job_text(rounds=1, clients=3, min_clients=2))


async def _never() -> JobDone:
    await asyncio.sleep(3600)  # a coordinator waiting for clients that will not come
    raise AssertionError("not reached")


async def _fails_after(delay: float, text: str | None) -> str | None:
    await asyncio.sleep(delay)
    return text


def _run(run: object, results: dict[str, tuple[float, str | None]]) -> tuple[object, dict]:
    errors: dict[str, str] = {}

    async def main() -> object:
        members = {n: asyncio.ensure_future(_fails_after(*r)) for n, r in results.items()}
        try:
            return await asyncio.wait_for(
                supervise(JOB, run, members, owners={"a", "b", "c"}, errors=errors),  # type: ignore[arg-type]
                timeout=10,
            )
        finally:
            for m in members.values():
                m.cancel()

    return asyncio.run(main()), errors


def test_the_job_is_cancelled_when_too_few_owners_are_left() -> None:
    with pytest.raises(ConfigError, match=r"a failed: no data \(1 of the 2 owners"):
        _run(_never(), {"a": (0.0, "no data"), "b": (0.01, "no data"), "c": (60, None)})


def test_one_failed_owner_above_the_minimum_only_is_reported() -> None:
    async def job() -> JobDone:
        await asyncio.sleep(0.05)
        return JobDone(status="completed")

    done, errors = _run(job(), {"a": (0.0, "no data"), "b": (60, None), "c": (60, None)})

    assert isinstance(done, JobDone) and done.status == "completed"
    assert errors == {"a": "no data"}


def test_a_failed_keyholder_is_fatal_and_a_raising_coordinator_raises_at_once() -> None:
    async def broken() -> JobDone:
        raise ConfigError("the state file holds another job")

    with pytest.raises(ConfigError, match="keyholder failed: exit 2"):
        _run(_never(), {"keyholder": (0.0, "exit 2"), "a": (60, None)})
    with pytest.raises(ConfigError, match="holds another job"):
        _run(broken(), {"a": (60, None), "b": (60, None)})
