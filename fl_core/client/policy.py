"""The data owner's policy: what it agrees to before anything leaves its premises.

The owner's policy is checked against the job when the client joins and against every task when
it arrives; a violation raises :class:`~fl_core.errors.PolicyRefused` naming the rule, the client
refuses the task with that reason (recorded in its audit log), and nothing is sent.
Privacy-budget caps live in the owner's ledger (:mod:`fl_core.client.ledger`) and are checked
there; the policy's per-job and per-round epsilon limits are checked against the owner's own
accounting of each release before it is charged (:mod:`fl_core.dp.owner`).

Rules (each empty or zero value means "no rule"):

- purpose, protections: ``allowed_purposes``, ``required_aggregation``, ``min_cohort``;
- parties, by roster name: ``allowed_coordinators``, ``allowed_keyholders`` (resolved to keys
  through the signed roster the owner pinned, never through the coordinator);
- a minimum of DP: ``max_epsilon`` (per job), ``max_round_epsilon``, ``min_noise_multiplier``;
- transport: ``require_tls``;
- data: ``allowed_datasets``, ``allowed_columns`` (every column the job reads must be listed);
- volume: ``max_rounds``, ``max_releases``; ``allow_evaluation``;
- de-identification before use (:mod:`fl_core.client.deidentify`): ``pseudonymize_columns``,
  ``drop_columns``, ``quasi_identifiers`` and ``min_k_anonymity``.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..config import AGGREGATIONS, JobConfig
from ..errors import ConfigError, FlCoreError, PolicyRefused

if TYPE_CHECKING:
    from ..federation import Roster
    from .deidentify import Deidentifier

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
        allowed_coordinators: roster names of the coordinators the owner works with (empty:
            any); the coordinator must name itself and be a coordinator on the roster.
        allowed_keyholders: roster names of the HE key holders the owner encrypts for (empty:
            see ``trusted_keyholders``); needs the owner's roster to resolve their keys.
        max_epsilon: the most epsilon one job may spend on the owner's data (0: no limit); a
            job without DP is refused when it is set.
        max_round_epsilon: the most epsilon one round's release may spend (0: no limit).
        min_noise_multiplier: the least Gaussian noise multiplier a DP-SGD or central-DP job
            may use (0: no limit); a job without Gaussian noise is refused when it is set.
        require_tls: refuse to take part over a connection that is not TLS.
        allowed_datasets: data sets (the job's ``data.dataset``) a job may read (empty: any).
        allowed_columns: columns a job may read (empty: any); a job that reads a column not
            listed, or unnamed features (images), is refused.
        max_releases: the most releases (training updates, masked or encrypted contributions,
            evaluation answers) the owner makes in one job (0: no limit).
        pseudonymize_columns: identifier columns of the owner's table replaced by HMAC-SHA256
            pseudonyms under its key before any task reads the table.
        drop_columns: direct identifiers dropped from the table when it is read.
        quasi_identifiers: the columns k-anonymity is checked over.
        min_k_anonymity: refuse a table whose smallest equivalence class over
            ``quasi_identifiers`` has fewer rows (0: no check).
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
    allowed_coordinators: tuple[str, ...] = ()
    allowed_keyholders: tuple[str, ...] = ()
    max_epsilon: float = 0.0
    max_round_epsilon: float = 0.0
    min_noise_multiplier: float = 0.0
    require_tls: bool = False
    allowed_datasets: tuple[str, ...] = ()
    allowed_columns: tuple[str, ...] = ()
    max_releases: int = 0
    pseudonymize_columns: tuple[str, ...] = ()
    drop_columns: tuple[str, ...] = ()
    quasi_identifiers: tuple[str, ...] = ()
    min_k_anonymity: int = 0
    peer_keys: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for name in _NAME_LISTS:
            value = getattr(self, name)
            if not isinstance(value, tuple) or not all(isinstance(v, str) and v for v in value):
                raise ConfigError(f"policy.{name} must be a list of non-empty strings")
        for entry in self.peer_keys:
            name, _, key = entry.partition("=")
            if not name or len(key) != 64 or any(ch not in "0123456789abcdef" for ch in key):
                raise ConfigError(
                    f"policy.peer_keys: {entry[:80]!r} is not 'owner-name=<64 lower-case hex "
                    "digits>' (a raw Ed25519 public key)"
                )
        for name in ("max_epsilon", "max_round_epsilon", "min_noise_multiplier"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not value >= 0:
                raise ConfigError(f"policy.{name} = {value!r}; expected a number >= 0")
        for name in ("require_tls", "allow_evaluation"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"policy.{name} must be true or false")
        for name in ("max_releases", "min_k_anonymity"):
            value = getattr(self, name)
            if isinstance(value, bool) or not (isinstance(value, int) and value >= 0):
                raise ConfigError(f"policy.{name} = {value!r}; expected an integer >= 0")
        if self.min_k_anonymity and not self.quasi_identifiers:
            raise ConfigError("policy.min_k_anonymity needs policy.quasi_identifiers")
        both = set(self.pseudonymize_columns) & set(self.drop_columns)
        if both:
            raise ConfigError(
                f"policy: columns {sorted(both)} are in both pseudonymize_columns and drop_columns"
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

    @property
    def deidentifies(self) -> bool:
        """Whether the policy declares any de-identification of the owner's table."""
        return bool(self.pseudonymize_columns or self.drop_columns or self.min_k_anonymity)

    def deidentifier(self, key: bytes = b"") -> Deidentifier:
        """The policy's de-identification rules with the owner's pseudonym ``key``."""
        from .deidentify import Deidentifier

        return Deidentifier(
            pseudonymize_columns=self.pseudonymize_columns,
            drop_columns=self.drop_columns,
            quasi_identifiers=self.quasi_identifiers,
            min_k=self.min_k_anonymity,
            key=key,
        )

    @property
    def wants_dp(self) -> bool:
        """Whether the policy requires DP (it sets an epsilon limit or a noise floor)."""
        return bool(self.max_epsilon or self.max_round_epsilon or self.min_noise_multiplier)

    def check_job(
        self,
        job: JobConfig,
        *,
        coordinator: str = "",
        tls: bool | None = None,
        roster: Roster | None = None,
        columns: tuple[str, ...] | None = None,
    ) -> None:
        """Refuse a job whose purpose, parties, protections or data the owner does not accept.

        Args:
            job: the owner's pinned job file.
            coordinator: the roster name the coordinator goes by (empty: it did not say).
            tls: whether the owner's connection to it is TLS (``None``: not known: refused
                when ``require_tls`` is set).
            roster: the signed roster the owner pinned (resolves party names).
            columns: the columns the job reads (``None``: computed from the job when
                ``allowed_columns`` is set, see :func:`job_columns`).

        Raises:
            PolicyRefused: naming the rule and the value that breaks it.
        """
        self._check_parties(job, coordinator=coordinator, roster=roster)
        if self.require_tls and tls is not True:
            raise PolicyRefused(
                "the owner requires TLS (policy.require_tls) and this connection is not TLS"
            )
        self._check_dp(job)
        self._check_data(job, columns)
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

    def check_coordinator(self, coordinator: str, roster: Roster | None) -> None:
        """Refuse a coordinator not on ``allowed_coordinators`` (nor, with a roster, on it).

        Raises:
            PolicyRefused: naming the coordinator and the rule.
        """
        if not self.allowed_coordinators:
            return
        if coordinator not in self.allowed_coordinators:
            who = repr(coordinator[:128]) if coordinator else "an unnamed coordinator"
            raise PolicyRefused(
                f"the job is run by {who}; the owner works only with coordinators "
                f"{list(self.allowed_coordinators)} (policy.allowed_coordinators)"
            )
        if roster is not None:
            roster.member(coordinator, "coordinator")

    def _check_parties(self, job: JobConfig, *, coordinator: str, roster: Roster | None) -> None:
        # With a roster and no configured name, the coordinator proves its name at join and
        # is checked then (Participant.check_coordinator).
        if coordinator or roster is None:
            self.check_coordinator(coordinator, roster)
        if not self.allowed_keyholders or _protection(job) != "he":
            return
        if roster is None:
            raise PolicyRefused(
                "policy.allowed_keyholders names roster members, and the owner has no signed "
                "roster to find their keys"
            )
        allowed = {roster.member(n, "keyholder").key.hex() for n in self.allowed_keyholders}
        if job.he.keyholder_key and job.he.keyholder_key not in allowed:
            raise PolicyRefused(
                f"the job names key holder {job.he.keyholder_key[:16]}..., which is not one of "
                f"the owner's key holders {list(self.allowed_keyholders)} "
                "(policy.allowed_keyholders)"
            )

    def _check_dp(self, job: JobConfig) -> None:
        if not self.wants_dp:
            return
        if job.dp.mode == "none":
            raise PolicyRefused(
                "the job has no differential privacy (dp.mode = 'none'); the owner requires it "
                "(policy.max_epsilon, max_round_epsilon or min_noise_multiplier)"
            )
        if self.max_epsilon and job.dp.epsilon > self.max_epsilon:
            raise PolicyRefused(
                f"the job targets epsilon {job.dp.epsilon:g}; the owner allows at most "
                f"{self.max_epsilon:g} per job (policy.max_epsilon)"
            )
        if self.min_noise_multiplier and job.dp.mode not in GAUSSIAN_MODES:
            raise PolicyRefused(
                f"dp.mode {job.dp.mode!r} adds no Gaussian noise; the owner requires a noise "
                f"multiplier of at least {self.min_noise_multiplier:g} "
                "(policy.min_noise_multiplier)"
            )
        if job.dp.noise_multiplier and job.dp.noise_multiplier < self.min_noise_multiplier:
            raise PolicyRefused(self.noise_refusal(job.dp.noise_multiplier))

    def noise_refusal(self, noise_multiplier: float) -> str:
        """The reason for refusing a noise multiplier below ``min_noise_multiplier``."""
        return (
            f"the job's noise multiplier {noise_multiplier:.4g} is below the owner's minimum "
            f"{self.min_noise_multiplier:g} (policy.min_noise_multiplier)"
        )

    def check_noise(self, noise_multiplier: float) -> None:
        """Refuse a noise multiplier (as the owner computed it) below the minimum."""
        if self.min_noise_multiplier and noise_multiplier < self.min_noise_multiplier:
            raise PolicyRefused(self.noise_refusal(noise_multiplier))

    def _check_data(self, job: JobConfig, columns: tuple[str, ...] | None) -> None:
        if self.allowed_datasets and job.data.dataset not in self.allowed_datasets:
            raise PolicyRefused(
                f"the job reads data set {job.data.dataset!r}; the owner allows only "
                f"{list(self.allowed_datasets)} (policy.allowed_datasets)"
            )
        if not self.allowed_columns:
            return
        try:
            read = job_columns(job) if columns is None else columns
        except FlCoreError as exc:
            raise PolicyRefused(
                f"the owner cannot tell which columns the job reads ({exc}); it allows only "
                f"columns {list(self.allowed_columns)[:20]} (policy.allowed_columns)"
            ) from exc
        if not read:
            raise PolicyRefused(
                f"the job reads unnamed features of data set {job.data.dataset!r}; the owner "
                f"allows only columns {list(self.allowed_columns)} (policy.allowed_columns)"
            )
        extra = [c for c in read if c not in self.allowed_columns]
        if extra:
            raise PolicyRefused(
                f"the job reads columns {extra[:20]} that the owner does not allow "
                f"(policy.allowed_columns: {list(self.allowed_columns)[:20]})"
            )

    def resolved(self, roster: Roster | None) -> OwnerPolicy:
        """This policy with ``allowed_keyholders`` turned into the keys the roster gives them.

        The owner then trusts only those keys' signed contexts (``trusted_keyholders``); names it
        cannot resolve stay unresolved, and :meth:`check_job` refuses the HE job.
        """
        if not self.allowed_keyholders or roster is None:
            return self
        keys = []
        for name in self.allowed_keyholders:
            try:
                keys.append(roster.member(name, "keyholder").key.hex())
            except PolicyRefused:
                continue
        return replace(self, trusted_keyholders=tuple(dict.fromkeys(keys)))

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


_NAME_LISTS = (
    "allowed_purposes", "required_aggregation", "trusted_keyholders", "allowed_coordinators",
    "allowed_keyholders", "allowed_datasets", "allowed_columns", "pseudonymize_columns",
    "drop_columns", "quasi_identifiers", "peer_keys",
)  # fmt: skip

GAUSSIAN_MODES = ("dpsgd", "central")
"""DP modes with a Gaussian noise multiplier (``min_noise_multiplier`` applies to these)."""


def job_columns(job: JobConfig) -> tuple[str, ...]:
    """The columns a job reads: a statistics job's spec columns, or the data set's features.

    A training job reads every feature of its data set (and the label); a data set without
    named features (images) gives ``()``.

    Raises:
        ConfigError: the data set is unavailable.
    """
    if job.stats is not None:
        return tuple(job.stats.spec().columns)
    from ..data import load_dataset

    data = load_dataset(job.data.dataset, path=job.data.path or None)
    return tuple(data.feature_names)


def _protection(job: JobConfig) -> str:
    """How the job protects what leaves the owner: a statistics job always encrypts (``he``)."""
    return "he" if job.job.kind == "stats" else job.aggregation.kind
