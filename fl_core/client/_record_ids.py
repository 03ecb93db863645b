"""Record ids in an owner's ledger: the withdrawal record and the ids' keyed digests."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Withdrawal:
    """One withdrawal of records (by id) from a data set, as the ledger recorded it.

    Attributes:
        id: its audit row.
        dataset: the data set.
        requested: how many ids were given.
        new: how many of them were not withdrawn before.
        rounds_used: ``(job, round)`` of every round that read the data set before.
        created_at: when (UTC).
    """

    id: int
    dataset: str
    requested: int
    new: int
    rounds_used: tuple[tuple[str, int], ...]
    created_at: str


def record_digests(key: bytes, dataset: str, ids: Iterable[str]) -> list[str]:
    """HMAC-SHA256 under ``key`` of each record id of ``dataset`` (hex): what a ledger stores."""
    prefix = dataset.encode() + b"\x00"
    return [hmac.new(key, prefix + i.encode(), hashlib.sha256).hexdigest() for i in ids]
