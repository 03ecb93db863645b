"""The owner's side of a DP job: its plan, and the ledger charge before anything leaves.

:class:`OwnerPrivacy` holds the owner's :class:`~fl_core.aggregators.dp.DPPlan` (computed from the
job file the owner agreed to) and the path of its privacy ledger. :meth:`OwnerPrivacy.charge`
commits the round's privacy event to the ledger, or raises
:class:`~fl_core.errors.BudgetExceeded` with the reason, before the caller computes or sends the
release; a crash after sending therefore never loses spent budget. SQLite connections belong to
one thread, and the runtime answers tasks in worker threads, so each thread opens its own
connection to the same ledger file.
"""

from __future__ import annotations

import threading
from pathlib import Path

from ..aggregators.dp import DPPlan
from ..dp.accounting import PrivacyEvent
from ..errors import BudgetExceeded
from .ledger import PrivacyLedger


class OwnerPrivacy:
    """An owner's DP plan and ledger.

    Args:
        job_id: the job's id (recorded with every charge).
        plan: the owner's own DP plan for the job.
        ledger_path: the owner's ledger file (``None``: the owner keeps no ledger and refuses
            every release that spends privacy budget).
        dataset: the name of the data set in the ledger (its cap applies).
    """

    def __init__(
        self, *, job_id: str, plan: DPPlan, ledger_path: str | Path | None, dataset: str
    ) -> None:
        self.job_id = job_id
        self.plan = plan
        self.ledger_path = Path(ledger_path) if ledger_path is not None else None
        self.dataset = dataset
        self._local = threading.local()

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

    def charge(self, *, round: int, event: PrivacyEvent) -> float:
        """Charge one release; return the data set's total epsilon after it.

        Raises:
            BudgetExceeded: the cap would be exceeded, there is no cap, or no ledger.
        """
        entry = self._ledger().charge(
            job=self.job_id,
            round=round,
            dataset=self.dataset,
            mechanism=self.plan.mechanism,
            event=event,
        )
        return float(entry.epsilon_total)
