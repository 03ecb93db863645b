"""Empirical privacy audit of a mechanism: canary, many trials, Clopper-Pearson lower bound.

Jagielski, Ullman, Oprea, NeurIPS 2020; Nasr et al., S&P 2021 (the strongest adversary sees the
aggregate and knows everything but the canary). World 0 runs the mechanism without the canary
client, world 1 with one canary client whose update is a fixed vector of norm at least the clip
bound. The adversary scores each output (its projection on the canary direction) and guesses
"canary" above a threshold. Any (epsilon, delta)-DP mechanism satisfies, for that guess,
``1 - FNR <= e^eps * FPR + delta`` and ``1 - FPR <= e^eps * FNR + delta``, so Clopper-Pearson upper
bounds on FPR and FNR give a lower bound on epsilon that holds with the chosen confidence:

    eps_LB = max(ln((1 - delta - FNR_hi) / FPR_hi), ln((1 - delta - FPR_hi) / FNR_hi)).

The threshold is chosen on one half of the trials and evaluated on the other half, so choosing it
does not bias the bound. A correct mechanism must give ``eps_LB <= eps_claimed``; a bound above the
claim refutes the claim (REFERENCES.md section 3.5, test tier 1).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy import special

from fl_core.errors import ConfigError


@dataclass(frozen=True, slots=True)
class AuditResult:
    """Outcome of an audit.

    Attributes:
        epsilon_lower_bound: epsilon that the mechanism provably exceeds with probability at most
            ``1 - confidence`` (0 when there is no evidence).
        threshold: the score threshold chosen on the calibration half.
        fpr_upper: Clopper-Pearson upper bound on the false-positive rate (held-out half).
        fnr_upper: Clopper-Pearson upper bound on the false-negative rate (held-out half).
        trials: trials per world in the held-out half.
    """

    epsilon_lower_bound: float
    threshold: float
    fpr_upper: float
    fnr_upper: float
    trials: int


def clopper_pearson_upper(errors: int, trials: int, *, confidence: float) -> float:
    """One-sided Clopper-Pearson upper bound on a binomial rate."""
    if not 0 <= errors <= trials or trials < 1:
        raise ConfigError(f"need 0 <= errors <= trials and trials >= 1, got {errors}/{trials}")
    if errors == trials:
        return 1.0
    return float(special.betaincinv(errors + 1, trials - errors, confidence))


def _epsilon_bound(fpr: float, fnr: float, delta: float) -> float:
    best = 0.0
    for a, b in ((fnr, fpr), (fpr, fnr)):
        num = 1.0 - delta - a
        if num > 0 and b > 0:
            best = max(best, math.log(num / b))
    return best


def _bound_at(
    threshold: float,
    without: npt.NDArray[np.float64],
    with_: npt.NDArray[np.float64],
    *,
    delta: float,
    confidence: float,
) -> tuple[float, float, float]:
    fp = int(np.count_nonzero(without > threshold))
    fn = int(np.count_nonzero(with_ <= threshold))
    # Two bounds are used at once: split the failure probability between them.
    level = 1.0 - (1.0 - confidence) / 2.0
    fpr = clopper_pearson_upper(fp, len(without), confidence=level)
    fnr = clopper_pearson_upper(fn, len(with_), confidence=level)
    return _epsilon_bound(fpr, fnr, delta), fpr, fnr


def audit_scores(
    scores_without: npt.NDArray[np.float64],
    scores_with: npt.NDArray[np.float64],
    *,
    delta: float,
    confidence: float = 0.95,
    candidates: int = 200,
) -> AuditResult:
    """Lower-bound epsilon from the adversary's scores in the two worlds.

    Args:
        scores_without: scores of outputs without the canary (world 0).
        scores_with: scores of outputs with the canary (world 1); same length.
        delta: the delta of the claim being audited.
        confidence: confidence of the bound (e.g. 0.95).
        candidates: number of thresholds tried on the calibration half (quantiles).

    Returns:
        An :class:`AuditResult` measured on the held-out half.
    """
    if len(scores_without) != len(scores_with) or len(scores_with) < 4:
        raise ConfigError("need the same number (>= 4) of scores in both worlds")
    if not 0 < confidence < 1:
        raise ConfigError(f"confidence must be in (0, 1), got {confidence}")
    half = len(scores_with) // 2
    cal0, hold0 = np.asarray(scores_without[:half]), np.asarray(scores_without[half:])
    cal1, hold1 = np.asarray(scores_with[:half]), np.asarray(scores_with[half:])
    pooled = np.concatenate([cal0, cal1])
    thresholds = np.unique(np.quantile(pooled, np.linspace(0.0, 1.0, candidates)))
    best_t, best_eps = float(thresholds[0]), -1.0
    for t in thresholds:
        eps, _, _ = _bound_at(float(t), cal0, cal1, delta=delta, confidence=confidence)
        if eps > best_eps:
            best_t, best_eps = float(t), eps
    eps, fpr, fnr = _bound_at(best_t, hold0, hold1, delta=delta, confidence=confidence)
    return AuditResult(
        epsilon_lower_bound=eps, threshold=best_t, fpr_upper=fpr, fnr_upper=fnr, trials=len(hold1)
    )


def audit_mechanism(
    run: Callable[[bool], float],
    *,
    trials: int,
    delta: float,
    confidence: float = 0.95,
) -> AuditResult:
    """Run ``run(False)`` and ``run(True)`` ``trials`` times each and audit their scores.

    Args:
        run: one execution of the mechanism without (False) or with (True) the canary, returning
            the adversary's score of the output; it draws its own fresh randomness.
        trials: executions per world (half calibrate the threshold, half measure).
        delta: the delta of the claim.
        confidence: confidence of the bound.

    Returns:
        An :class:`AuditResult`.
    """
    if trials < 4:
        raise ConfigError(f"trials must be >= 4, got {trials}")
    without = np.fromiter((run(False) for _ in range(trials)), dtype=np.float64, count=trials)
    with_ = np.fromiter((run(True) for _ in range(trials)), dtype=np.float64, count=trials)
    return audit_scores(without, with_, delta=delta, confidence=confidence)
