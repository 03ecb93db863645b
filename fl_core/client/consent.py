"""Consent and erasure at the data owner: withdrawn records stay out of every later task.

An owner withdraws records by id (``bulwark data withdraw --ids FILE --ledger LEDGER``); the
withdrawal is kept in its privacy ledger's hash chain as keyed digests of the ids
(:meth:`fl_core.client.ledger.PrivacyLedger.withdraw`). Here the owner's side applies it:

- :func:`withdrawn_mask` turns the ledger's withdrawals of a data set into a predicate over
  record ids, used when the owner loads its data (:func:`fl_core.owner.load_owner_data`), so a
  trainer or a statistics owner never holds a withdrawn row;
- :class:`DataUse` records, once per round and before the result is sent, that a task read the
  data set (so a later withdrawal names the rounds that used the records), and refuses the task
  when records the owner holds in memory were withdrawn after it loaded them (fail closed: the
  owner restarts and loads without them).

The owner computes, the task claims: nothing here reads a task's payload; the data set name,
the ids and the ledger are the owner's own.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from ..data.federated import WithdrawnMask
from ..errors import PolicyRefused
from ._record_ids import Withdrawal, record_digests
from .ledger import PrivacyLedger


def withdrawn_mask(ledger: str | os.PathLike[str], dataset: str) -> WithdrawnMask | None:
    """A predicate marking the record ids of ``dataset`` that the ledger holds as withdrawn.

    Returns:
        The predicate, or ``None`` when nothing of ``dataset`` was withdrawn.

    Raises:
        LedgerTampered: the ledger fails verification (the owner then reads no data).
    """
    with PrivacyLedger(ledger) as book:
        digests = book.withdrawn(dataset)
        key = book.record_key() if digests else b""
    if not digests:
        return None

    def mask(ids: npt.NDArray[np.str_]) -> npt.NDArray[np.bool_]:
        return np.array(
            [d in digests for d in record_digests(key, dataset, ids.tolist())], dtype=np.bool_
        )

    return mask


def count_withdrawn(ledger: str | os.PathLike[str], dataset: str, ids: Sequence[str]) -> int:
    """How many of ``ids`` the ledger holds as withdrawn from ``dataset``."""
    mask = withdrawn_mask(ledger, dataset)
    return 0 if mask is None else int(mask(np.array(ids, dtype=np.str_)).sum())


@dataclass(slots=True, kw_only=True)
class DataUse:
    """What an owner's tasks read: recorded in its ledger, checked against withdrawals.

    Args:
        ledger: the owner's privacy ledger.
        dataset: the ledger's name for the data.
        ids: the record ids the owner loaded (after the withdrawals known then; empty when its
            data has none).
        rows: how many rows the owner loaded.
    """

    ledger: str | os.PathLike[str]
    dataset: str
    ids: tuple[str, ...]
    rows: int
    _recorded: set[tuple[str, int]] = field(default_factory=set, repr=False)

    def check(self) -> None:
        """Refuse when a record held in memory was withdrawn after the owner loaded its data.

        Raises:
            PolicyRefused: naming how many were withdrawn since.
        """
        late = count_withdrawn(self.ledger, self.dataset, self.ids)
        if late:
            raise PolicyRefused(
                f"{late} records of data set {self.dataset!r} were withdrawn after this owner "
                "loaded its data: restart the owner to exclude them"
            )

    def record(self, *, job: str, round: int) -> None:
        """Record in the ledger that this round's answer was computed from the data (once)."""
        if (job, round) in self._recorded:
            return
        with PrivacyLedger(self.ledger) as book:
            book.record_use(job=job, round=round, dataset=self.dataset, rows=self.rows)
        self._recorded.add((job, round))


def render_withdrawals(withdrawals: Sequence[Withdrawal]) -> str:
    """Render withdrawals as the plain-text table ``bulwark data show`` prints."""
    if not withdrawals:
        return "no withdrawals"
    header = (
        f"{'#':>4} {'time (UTC)':<26} {'data set':<24} {'ids':>6} {'new':>6}  rounds used before"
    )
    lines = [header, "-" * len(header)]
    for w in withdrawals:
        rounds = ", ".join(f"{j}:{r}" for j, r in w.rounds_used) or "none"
        lines.append(
            f"{w.id:>4} {w.created_at[:26]:<26} {w.dataset[:24]:<24} {w.requested:>6} "
            f"{w.new:>6}  {rounds}"
        )
    return "\n".join(lines)
