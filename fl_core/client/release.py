"""What an owner has released in a job: every release counted, retries included.

A coordinator that retries a round can difference what it gets: two honest sums over six and
then five owners give away the sixth owner's update. :class:`Releases` is the owner's memory of
its releases in this job (kept in memory for the life of the owner process):

- a round's number must lie in ``1..job.rounds`` of the owner's own job file;
- an owner computes a release in at most ``round.max_attempts`` attempts of a round;
- behind secure aggregation or HE *without* DP an owner releases at most once per round, and
  at most once per global model (a "new" round that reuses an old model is a retry in
  disguise): a retry after that is refused. With DP every release is charged to the ledger
  before it leaves, so a retry is allowed and paid for again;
- the owner's policy may cap the releases of a job (``policy.max_releases``): training
  releases and evaluation answers both count.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from ..config import JobConfig
from ..errors import PolicyRefused


@dataclass
class Releases:
    """The owner's count of its releases in one job (thread-safe: tasks run in worker threads)."""

    job: JobConfig
    max_releases: int = 0
    """The owner's ``policy.max_releases`` (0: no limit)."""
    attempts: dict[int, set[int]] = field(default_factory=dict)
    once: dict[int, bytes] = field(default_factory=dict)
    total: int = 0
    """Releases made so far in this job (training releases and evaluation answers)."""
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def _count(self) -> None:
        """Count one release, or refuse one beyond ``max_releases`` (hold the lock)."""
        if self.max_releases and self.total >= self.max_releases:
            raise PolicyRefused(
                f"this owner already made {self.total} releases in this job; its policy allows "
                f"at most {self.max_releases} (policy.max_releases)"
            )
        self.total += 1

    def evaluation(self, *, round: int) -> None:
        """Count one evaluation answer (it tells the coordinator about the owner's data too)."""
        self.check_round(round)
        with self._lock:
            self._count()

    def check_round(self, round: int) -> None:
        """Refuse a task for a round the owner's job does not have."""
        if not 1 <= round <= self.job.job.rounds:
            raise PolicyRefused(
                f"round {round} is not in this job; the job file has {self.job.job.rounds} rounds"
            )

    def release(self, *, round: int, attempt: int, model_hash: bytes, once: bool) -> None:
        """Count one release (call it before anything is computed); refuse one too many.

        Args:
            round: the task's round.
            attempt: the task's attempt.
            model_hash: SHA-256 of the global model the release is computed from.
            once: the release hides in an aggregate without DP: one per round and per model.

        Raises:
            PolicyRefused: naming the rule.
        """
        self.check_round(round)
        cap = self.job.round.max_attempts
        with self._lock:
            if self.max_releases and self.total >= self.max_releases:
                self._count()  # raises, naming the limit
            seen = self.attempts.setdefault(round, set())
            if attempt not in seen and len(seen) >= cap:
                raise PolicyRefused(
                    f"round {round}: this owner already released in {len(seen)} attempts "
                    f"(round.max_attempts = {cap})"
                )
            if once:
                if round in self.once:
                    raise PolicyRefused(
                        f"round {round}: this owner already released its masked update once; "
                        "a retry without DP would let the sums be differenced"
                    )
                if model_hash in self.once.values():
                    raise PolicyRefused(
                        f"round {round}: this owner already released an update computed from "
                        "this global model in an earlier round"
                    )
                self.once[round] = model_hash
            seen.add(attempt)
            self._count()
