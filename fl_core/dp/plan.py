"""DP around the aggregators: the job's DP plan, the owner's side of each mode, central noise.

Every party derives the same :class:`DPPlan` from the job file it agreed to (noise multiplier or
Skellam parameters calibrated to ``dp.epsilon`` over ``job.rounds``), so an owner can check the
parameters the coordinator sends in each task against its own plan and refuse a task that
carries less noise than agreed.

Modes (see :class:`fl_core.config.DPSection`):

- ``dpsgd``: each owner runs DP-SGD (:class:`fl_core.client.dp_trainer.DPSGDTrainer`); its
  ledger is charged with the round's subsampled-Gaussian event before training.
- ``central``: the owner clips its update to ``clip`` and sends it with weight 1; the
  coordinator adds N(0, (z C)^2) to the sum and divides by the expected cohort (McMahan et al.,
  ICLR 2018). The coordinator is trusted with the noise; the report says so.
- ``distributed``: the owner clips and encodes its update with the Skellam pipeline
  (:mod:`fl_core.dp.skellam`) before masking; the coordinator only ever sees the noised sum.
- ``fedsgd``: the owner sends the Skellam encoding of its sum of clipped per-example gradients
  over a Poisson sample; the coordinator takes one SGD step on the noised mean gradient.

In every DP mode updates are weighted uniformly: an owner's example count is data too.
The ledger is charged before anything leaves the owner; for the Skellam modes the charge assumes
the fewest survivors the round accepts (the calibration point), an upper bound on what the round
really spends, while the coordinator reports the epsilon of the survivors that were summed.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from ..config import JobConfig, dp_survivor_floor, expected_cohort
from ..errors import CodecError, PolicyRefused
from ..payload import Payload
from .accounting import GaussianEvent, PrivacyEvent, compose, noise_multiplier_for
from .central import add_central_noise
from .noise import csprng
from .skellam import PrivacyUnit, SkellamConfig, calibrate_skellam, skellam_round_event

if TYPE_CHECKING:  # the aggregators import this module: only their types here
    from ..aggregators.base import AggregateUpdate, Aggregator, RoundContext, ServerRound

FloatVector = npt.NDArray[np.float32]

MECHANISMS = {
    "dpsgd": "dpsgd",
    "central": "dp-fedavg-central",
    "distributed": "dp-fedavg-skellam",
    "fedsgd": "dp-fedsgd-skellam",
}


@dataclass(frozen=True, slots=True, kw_only=True)
class DPPlan:
    """The DP parameters of a job, as every party computes them from the job file.

    Attributes:
        mode: ``dpsgd``, ``central``, ``distributed`` or ``fedsgd``.
        delta: the delta of every guarantee.
        clip: the L2 bound.
        noise_multiplier: central: sigma of the noise on the sum, over ``clip``.
        client_rate: central: the client sampling rate the accounting uses (1: none claimed).
        expected_clients: clients expected per round (central divides the sum by it).
        expected_batch: fedsgd: expected examples per step over all institutions (the noisy
            gradient sum is divided by it).
        skellam: distributed/fedsgd: the calibrated Skellam parameters.
    """

    mode: str
    delta: float
    clip: float
    noise_multiplier: float = 0.0
    client_rate: float = 1.0
    expected_clients: int = 1
    expected_batch: float = 0.0
    skellam: SkellamConfig | None = None

    @property
    def mechanism(self) -> str:
        """The ledger's label for this mode."""
        return MECHANISMS[self.mode]

    def owner_event(self) -> PrivacyEvent:
        """What one round costs an owner, as charged before it sends (central/Skellam modes)."""
        if self.mode == "central":
            return GaussianEvent(
                noise_multiplier=self.noise_multiplier, sample_rate=self.client_rate, steps=1
            )
        if self.skellam is None:
            raise PolicyRefused(f"dp.mode {self.mode!r} charges its owners' ledgers itself")
        return skellam_round_event(self.skellam, survivors=self.skellam.min_clients)

    def round_event(self, survivors: int) -> PrivacyEvent:
        """What a round whose sum holds ``survivors`` contributions really spent."""
        if self.skellam is not None:
            return skellam_round_event(self.skellam, survivors=survivors)
        return self.owner_event()

    def epsilon(self, survivors: Sequence[int]) -> float:
        """The guarantee after rounds with these numbers of survivors (coordinator's view)."""
        if not survivors:
            return 0.0
        return compose([self.round_event(n) for n in survivors], delta=self.delta).epsilon


def make_plan(job: JobConfig, *, dim: int) -> DPPlan | None:
    """The job's DP plan for a model of ``dim`` parameters (``None`` without DP).

    Calibration searches the noise with the accountant (seconds for Skellam), so plans are
    cached per job file and dimension: every owner in a simulation shares one computation.

    Raises:
        ConfigError: the parameters cannot be calibrated (the message says which).
    """
    if job.dp.mode == "none":
        return None
    return _plan(job.source, job, dim)


@functools.lru_cache(maxsize=32)
def _plan(source: str, job: JobConfig, dim: int) -> DPPlan | None:
    dp = job.dp
    if dp.mode == "none":
        return None
    expected = expected_cohort(job)
    floor = dp_survivor_floor(job)
    if dp.mode == "dpsgd":
        return DPPlan(mode="dpsgd", delta=dp.delta, clip=dp.clip, expected_clients=expected)
    if dp.mode == "central":
        # No amplification by sampling: the coordinator alone draws the cohort, so an owner
        # cannot tell whether it was sampled with probability q or picked every round; it
        # charges (and the noise is calibrated) as if it took part in every round (q = 1).
        rate = 1.0
        z = dp.noise_multiplier or noise_multiplier_for(
            target_epsilon=dp.epsilon,
            delta=dp.delta,
            sample_rate=rate,
            steps=job.job.rounds,
            accountant="pld" if dp.accountant == "pld" else "rdp",
        )
        return DPPlan(
            mode="central",
            delta=dp.delta,
            clip=dp.clip,
            noise_multiplier=z,
            client_rate=rate,
            expected_clients=expected,
        )
    example = dp.mode == "fedsgd"
    skellam = calibrate_skellam(
        target_epsilon=dp.epsilon,
        delta=dp.delta,
        dim=dim,
        clip=dp.clip,
        bits=dp.bits,
        expected_clients=max(expected, floor),
        min_clients=floor,
        rounds=job.job.rounds,
        colluders=dp.colluders,
        beta=dp.beta,
        unit=PrivacyUnit.EXAMPLE if example else PrivacyUnit.CLIENT,
        sample_rate=dp.sample_rate if example else 1.0,
        expected_batch=dp.expected_batch if example else None,
    )
    return DPPlan(
        mode=dp.mode,
        delta=dp.delta,
        clip=dp.clip,
        expected_clients=expected,
        expected_batch=dp.expected_batch if example else 0.0,
        skellam=skellam,
    )


# --- the plan on the wire: the coordinator states it, the owner checks it ---------------------


def plan_fields(plan: DPPlan) -> dict[str, object]:
    """``dp.*`` fields that state the noise a task is computed with."""
    out: dict[str, object] = {"dp.mode": plan.mode, "dp.clip": plan.clip}
    if plan.mode == "central":
        out["dp.noise_multiplier"] = plan.noise_multiplier
    if plan.skellam is not None:
        out["dp.scale"] = plan.skellam.scale
        out["dp.local_mu"] = plan.skellam.local_mu
        out["dp.bits"] = plan.skellam.bits
    return out


def check_plan(plan: DPPlan, payload: Payload) -> None:
    """Refuse a task whose stated DP parameters differ from the owner's own plan.

    Raises:
        PolicyRefused: naming the parameter that differs.
    """
    if payload.get_str("dp.mode", max_len=32) != plan.mode:
        raise PolicyRefused(f"the task's dp.mode is not the job's {plan.mode!r}")
    for name, value in plan_fields(plan).items():
        if name == "dp.mode":
            continue
        want = float(value) if isinstance(value, int | float) else math.nan
        got = float(payload.get_int(name) if isinstance(value, int) else payload.get_float(name))
        if not math.isclose(got, want, rel_tol=1e-9, abs_tol=0.0):
            raise PolicyRefused(
                f"the coordinator asked for {name} = {got!r}; the job agreed to {value!r}"
            )


def read_owner_epsilon(payload: Payload) -> float | None:
    """The owner's reported ledger total (``privacy.epsilon``), if the result carries one."""
    if "privacy.epsilon" not in payload:
        return None
    value = payload.get_float("privacy.epsilon", lo=0.0, hi=1e9)
    if not math.isfinite(value):
        raise CodecError("privacy.epsilon is not finite")
    return value


def add_noise_to_mean(mean: FloatVector, *, plan: DPPlan, contributors: int) -> FloatVector:
    """Central mode: the mean of the clipped updates, noised as sum + N(0, (zC)^2) over E.

    ``mean`` is the average over ``contributors``; the result is (sum + noise) / E with E the
    expected cohort, as McMahan et al. divide by the expected number of clients.
    """
    total = (mean.astype(np.float64) * contributors).astype(np.float32)
    noised = add_central_noise(
        total, clip=plan.clip, noise_multiplier=plan.noise_multiplier, rng=csprng()
    )
    return (noised.astype(np.float64) / plan.expected_clients).astype(np.float32)


class CentralNoiseRound:
    """Wraps a round whose clients sent clipped, uniformly weighted updates; noises its mean."""

    def __init__(self, inner: ServerRound, plan: DPPlan) -> None:
        self._inner = inner
        self._plan = plan
        self.stages: tuple[str, ...] = inner.stages

    def tasks(self, stage: str, alive: Sequence[str]) -> dict[str, Payload]:
        """The inner tasks, with the plan stated in the first stage's tasks."""
        tasks = self._inner.tasks(stage, alive)
        if stage != self.stages[0]:
            return tasks
        extra = plan_fields(self._plan)
        return {c: p if "dp.mode" in p else p.merged(extra) for c, p in tasks.items()}

    def quorum(self, stage: str, sent: int) -> int:
        """The inner round's quorum."""
        return self._inner.quorum(stage, sent)

    def check(self, stage: str, client_id: str, payload: Payload) -> object:
        """The inner round's check."""
        return self._inner.check(stage, client_id, payload)

    def collect(self, stage: str, results: Mapping[str, object], dropped: Sequence[str]) -> None:
        """The inner round's collect."""
        self._inner.collect(stage, results, dropped)

    def finish(self) -> AggregateUpdate:
        """The inner mean, noised as (sum + N(0, (zC)^2)) / expected cohort."""
        aggregate = self._inner.finish()
        noised = add_noise_to_mean(
            aggregate.mean_update, plan=self._plan, contributors=len(aggregate.contributors)
        )
        return dataclasses.replace(
            aggregate,
            mean_update=noised,
            details={**aggregate.details, "dp_survivors": len(aggregate.contributors)},
        )


class CentralNoiseAggregator:
    """Central DP-FedAvg around an inner aggregator (plain mean or secure sum)."""

    def __init__(self, inner: Aggregator, job: JobConfig) -> None:
        self.name = inner.name
        self._inner = inner
        self._job = job
        self._plans: dict[int, DPPlan | None] = {}

    def server_round(self, ctx: RoundContext) -> ServerRound:
        """The inner round, wrapped."""
        dim = int(ctx.global_weights.shape[0])
        if dim not in self._plans:
            self._plans[dim] = make_plan(self._job, dim=dim)
        plan = self._plans[dim]
        inner = self._inner.server_round(ctx)
        return inner if plan is None else CentralNoiseRound(inner, plan)
