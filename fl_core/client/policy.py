"""The data owner's policy: what it agrees to before anything leaves its premises.

The owner's policy is checked against the job when the client joins and against every task when
it arrives; a violation raises :class:`~fl_core.errors.PolicyRefused` naming the rule, the client
refuses the task with that reason, and nothing is sent. Privacy-budget caps live in the owner's
ledger (:mod:`fl_core.client.ledger`) and are checked there.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config import AGGREGATIONS, JobConfig
from ..errors import ConfigError, PolicyRefused

PLAIN_STAGES = ("fit",)
"""Stages in which the owner's update leaves in the clear."""


@dataclass(frozen=True, slots=True, kw_only=True)
class OwnerPolicy:
    """Rules a data owner enforces on every job and task.

    Attributes:
        allowed_purposes: purposes the owner agrees to (empty: any); the job's ``job.purpose``
            must be one of them.
        required_aggregation: aggregation kinds the owner accepts for its updates (empty: any),
            e.g. ``("secagg", "he")`` so that no update ever leaves in the clear.
        min_cohort: the fewest clients whose updates the owner's update may be summed with
            (checked where the protocol tells the cohort, e.g. secure aggregation).
        max_rounds: the most rounds the owner takes part in (0: no limit).
        allow_evaluation: whether the owner scores global models on its test data.
        trusted_keyholders: hex Ed25519 public keys of the HE key holders whose public context
            the owner encrypts under (empty: the job file's ``he.keyholder_key``, or whatever
            key holder the coordinator relays when neither names one).
        budget_epsilon: the privacy-budget cap (epsilon) the owner sets on its data set in its
            ledger (0: leave the ledger's cap as it is).
        budget_delta: the delta of that cap (0: the job's delta).
        peer_keys: ``"owner-name=hex Ed25519 public key"`` of the other owners whose masking
            keys the owner accepts in an HE cohort (empty: the identities the coordinator relays,
            which a malicious coordinator could invent; pin them, or the roster's owner keys).
    """

    allowed_purposes: tuple[str, ...] = ()
    required_aggregation: tuple[str, ...] = ()
    min_cohort: int = 0
    max_rounds: int = 0
    allow_evaluation: bool = True
    budget_epsilon: float = 0.0
    budget_delta: float = 0.0
    trusted_keyholders: tuple[str, ...] = ()
    peer_keys: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for entry in self.peer_keys:
            name, _, key = entry.partition("=")
            if not name or len(key) != 64 or any(ch not in "0123456789abcdef" for ch in key):
                raise ConfigError(
                    f"policy.peer_keys: {entry[:80]!r} is not 'owner-name=<64 lower-case hex "
                    "digits>' (a raw Ed25519 public key)"
                )
        for key in self.trusted_keyholders:
            if len(key) != 64 or any(ch not in "0123456789abcdef" for ch in key):
                raise ConfigError(
                    f"policy.trusted_keyholders: {key[:70]!r} is not 64 lower-case hex digits "
                    "(a raw Ed25519 public key)"
                )
        bad = [k for k in self.required_aggregation if k not in AGGREGATIONS]
        if bad:
            raise ConfigError(
                f"policy.required_aggregation: {bad} unknown; allowed: {list(AGGREGATIONS)}"
            )
        if self.min_cohort < 0:
            raise ConfigError(f"policy.min_cohort = {self.min_cohort}; expected an integer >= 0")
        if not self.budget_epsilon >= 0:
            raise ConfigError(f"policy.budget_epsilon = {self.budget_epsilon}; expected >= 0")
        if not 0 <= self.budget_delta < 1:
            raise ConfigError(f"policy.budget_delta = {self.budget_delta}; expected in [0, 1)")
        if self.max_rounds < 0:
            raise ConfigError(f"policy.max_rounds = {self.max_rounds}; expected an integer >= 0")

    def pinned_peers(self) -> dict[str, bytes]:
        """``peer_keys`` as owner name -> raw Ed25519 public key."""
        return {
            name: bytes.fromhex(key)
            for name, _, key in (entry.partition("=") for entry in self.peer_keys)
        }

    def check_job(self, job: JobConfig) -> None:
        """Refuse a job whose purpose or protections the owner does not accept."""
        if self.allowed_purposes and job.job.purpose not in self.allowed_purposes:
            raise PolicyRefused(
                f"the job's purpose {job.job.purpose!r} is not one the owner allows "
                f"({list(self.allowed_purposes)})"
            )
        kind = _protection(job)
        if self.required_aggregation and kind not in self.required_aggregation:
            raise PolicyRefused(
                f"the job aggregates with {kind!r}; the owner requires one of "
                f"{list(self.required_aggregation)}"
            )
        if self.max_rounds and job.job.rounds > self.max_rounds:
            raise PolicyRefused(
                f"the job has {job.job.rounds} rounds; the owner allows at most {self.max_rounds}"
            )
        if kind == "he" and self.min_cohort > job.he.min_contributors:
            raise PolicyRefused(
                f"the job's k (he.min_contributors = {job.he.min_contributors}) is below the "
                f"owner's minimum cohort of {self.min_cohort}"
            )

    def check_task(self, job: JobConfig, *, stage: str, round: int) -> None:
        """Refuse a task that the job or the policy does not allow."""
        if self.max_rounds and round > self.max_rounds:
            raise PolicyRefused(f"round {round} exceeds the owner's limit of {self.max_rounds}")
        if stage == "evaluate" and job.job.kind != "stats":
            if not self.allow_evaluation:
                raise PolicyRefused("the owner does not take part in evaluation")
            return
        kind = _protection(job)
        if job.job.kind == "stats" and stage not in ("he.keys", "he.contribute"):
            raise PolicyRefused(f"stage {stage!r} is not part of a statistics job")
        if stage in PLAIN_STAGES and kind != "mean":
            raise PolicyRefused(
                f"the coordinator asked for an update in the clear (stage {stage!r}) but the job "
                f"aggregates with {kind!r}"
            )
        prefix = stage.split(".", 1)[0]
        if stage not in PLAIN_STAGES and prefix != kind:
            raise PolicyRefused(f"stage {stage!r} is not part of this job ({kind!r} aggregation)")

    @classmethod
    def from_toml(cls, path: str | Path) -> OwnerPolicy:
        """Read a policy file with a ``[policy]`` table.

        Raises:
            ConfigError: unreadable file, unknown field or bad value (named).
        """
        try:
            raw = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"cannot read policy file {path}: {exc}") from exc
        table = raw.get("policy", {})
        allowed = set(cls.__dataclass_fields__)
        for key in table:
            if key not in allowed:
                raise ConfigError(f"policy.{key} is not a known field; allowed: {sorted(allowed)}")
        kwargs: dict[str, Any] = {
            k: tuple(v) if isinstance(v, list) else v for k, v in table.items()
        }
        return cls(**kwargs)


def _protection(job: JobConfig) -> str:
    """How the job protects what leaves the owner: a statistics job always encrypts (``he``)."""
    return "he" if job.job.kind == "stats" else job.aggregation.kind
