"""The owner's side of a DP job: its plan, and the ledger charge before anything leaves.

:class:`OwnerPrivacy` holds the owner's :class:`~fl_core.dp.plan.DPPlan` (computed from the
job file the owner agreed to) and the path of its privacy ledger. :meth:`OwnerPrivacy.charge`
commits the round's privacy event to the ledger, or raises
:class:`~fl_core.errors.BudgetExceeded` with the reason, before the caller computes or sends the
release; a crash after sending therefore never loses spent budget. SQLite connections belong to
one thread, and the runtime answers tasks in worker threads, so each thread opens its own
connection to the same ledger file.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np
import numpy.typing as npt

from ..client.ledger import PrivacyLedger
from ..errors import BudgetExceeded, ConfigError
from ..types import FitConfig, Metrics, Trainer
from .accounting import PrivacyEvent, compose, event_from_dict
from .clipping import clip_update
from .plan import DPPlan

FloatVector = npt.NDArray[np.float32]


class OwnerPrivacy:
    """An owner's DP plan and ledger.

    Args:
        job_id: the job's id (recorded with every charge).
        plan: the owner's own DP plan for the job.
        ledger_path: the owner's ledger file (``None``: the owner keeps no ledger and refuses
            every release that spends privacy budget).
        dataset: the name of the data set in the ledger (its cap applies).
        max_epsilon: the owner's policy limit on this job's epsilon (0: none).
        max_round_epsilon: the owner's policy limit on one release's epsilon (0: none).
    """

    def __init__(
        self,
        *,
        job_id: str,
        plan: DPPlan,
        ledger_path: str | Path | None,
        dataset: str,
        max_epsilon: float = 0.0,
        max_round_epsilon: float = 0.0,
    ) -> None:
        self.job_id = job_id
        self.max_epsilon = max_epsilon
        self.max_round_epsilon = max_round_epsilon
        self.plan = plan
        self.ledger_path = Path(ledger_path) if ledger_path is not None else None
        self.dataset = dataset
        self._local = threading.local()
        self.last_charge: tuple[int, float] | None = None
        """(charges made by this process, this job's epsilon after the last): for audit entries."""

    def _ledger(self) -> PrivacyLedger:
        ledger = getattr(self._local, "ledger", None)
        if ledger is None:
            if self.ledger_path is None:
                raise BudgetExceeded(
                    "this job spends privacy budget and the owner keeps no privacy ledger"
                )
            ledger = PrivacyLedger(self.ledger_path)
            self._local.ledger = ledger
        return ledger

    def check_first_round(self) -> None:
        """Refuse the job before joining when its first release cannot fit the cap.

        Such a refusal is certain from the start: without it the owner would join, be selected,
        train and refuse at its first release, round after round.

        Raises:
            BudgetExceeded: naming the cap, what is spent and what one round costs.
        """
        if self.plan.mode == "dpsgd":
            return  # its per-round event depends on the trainer: checked at the first release
        ledger = self._ledger()
        cap = ledger.cap(self.dataset)
        if cap is None:
            raise BudgetExceeded(
                f"no privacy cap is set for data set {self.dataset!r} in {self.ledger_path}"
            )
        after = ledger.preview(dataset=self.dataset, event=self.plan.owner_event())
        if after > cap.epsilon:
            raise BudgetExceeded(
                f"job {self.job_id!r}: one round would bring data set {self.dataset!r} to "
                f"epsilon {after:.3f}, above its cap {cap.epsilon:g} (spent "
                f"{ledger.spent(self.dataset):.3f}); refusing the job before joining"
            )

    def charge(self, *, round: int, event: PrivacyEvent) -> float:
        """Charge one release; return this job's epsilon after it (composed at the cap's delta).

        The value reported with a release is this job's spend only: the owner's other jobs, and
        what it has spent on them, are none of the coordinator's business.

        Raises:
            BudgetExceeded: the cap would be exceeded, there is no cap, or no ledger; or the
                release would break the policy's ``max_round_epsilon`` or ``max_epsilon``
                (computed by the owner from its own plan, nothing is charged then).
        """
        if self.max_epsilon or self.max_round_epsilon:
            self._check_limits(round, event)
        entry = self._ledger().charge(
            job=self.job_id,
            round=round,
            dataset=self.dataset,
            mechanism=self.plan.mechanism,
            event=event,
        )
        entries = self._ledger().entries(self.dataset)
        mine = [event_from_dict(e.parameters) for e in entries if e.job == self.job_id]
        epsilon = float(compose(mine, delta=entry.delta).epsilon)
        count = 1 + (self.last_charge[0] if self.last_charge is not None else 0)
        self.last_charge = (count, epsilon)
        return epsilon

    def _check_limits(self, round: int, event: PrivacyEvent) -> None:
        ledger = self._ledger()
        cap = ledger.cap(self.dataset)
        if cap is None:
            return  # the ledger's charge refuses it, naming the missing cap
        alone = float(compose([event], delta=cap.delta).epsilon)
        if self.max_round_epsilon and alone > self.max_round_epsilon:
            raise BudgetExceeded(
                f"round {round}'s release would spend epsilon {alone:.4g} at delta "
                f"{cap.delta:g}; the owner allows at most {self.max_round_epsilon:g} per round "
                "(policy.max_round_epsilon)"
            )
        mine = [
            event_from_dict(e.parameters)
            for e in ledger.entries(self.dataset)
            if e.job == self.job_id
        ]
        total = float(compose([*mine, event], delta=cap.delta).epsilon)
        if self.max_epsilon and total > self.max_epsilon:
            raise BudgetExceeded(
                f"round {round}'s release would bring this job to epsilon {total:.4g} at delta "
                f"{cap.delta:g}; the owner allows at most {self.max_epsilon:g} per job "
                "(policy.max_epsilon)"
            )

    def release(
        self,
        trainer: Trainer,
        *,
        raw_update: Callable[[FloatVector, FitConfig], tuple[FloatVector, int, Metrics]],
        global_weights: FloatVector,
        fit: FitConfig,
    ) -> tuple[FloatVector, int, Metrics]:
        """The update an owner may release in a ``dpsgd`` or ``central`` job, charged first.

        ``dpsgd``: the round's DP-SGD event is charged, then the owner trains. ``central``: the
        owner trains, clips to ``dp.clip`` and charges the round before returning. Either way the
        example count is not released (it is data too): the update goes out with weight 1, and
        ``metrics["epsilon"]`` is this job's spend (not the owner's other jobs).
        """
        plan = self.plan
        if plan.mode == "dpsgd":
            next_event = getattr(trainer, "next_round_event", None)
            if next_event is None:
                raise ConfigError("dp.mode = 'dpsgd' needs a DP-SGD trainer at the owner")
            epsilon = self.charge(round=fit.round, event=next_event())
            update, _, metrics = raw_update(global_weights, fit)
            return update, 1, {**metrics, "epsilon": epsilon}
        if plan.mode == "central":
            update, _, metrics = raw_update(global_weights, fit)
            clipped, norm = clip_update(update, clip=plan.clip)
            epsilon = self.charge(round=fit.round, event=plan.owner_event())
            return clipped, 1, {**metrics, "epsilon": epsilon, "update_norm": norm}
        raise ConfigError(f"dp.mode = {plan.mode!r} is encoded by secure aggregation itself")
