"""Privacy accounting: epsilon for local, central and distributed DP, and the ledger's composition.

Every mechanism Bulwark runs is described by an event (a frozen dataclass that the ledger stores as
JSON):

- :class:`GaussianEvent`: ``steps`` compositions of the Poisson-subsampled Gaussian mechanism with
  noise multiplier ``sigma`` (noise std / L2 sensitivity) and sampling rate ``q``. Example-level
  DP-SGD (Abadi et al., CCS 2016) with ``q`` = batch / data-set size, and central DP-FedAvg
  (McMahan et al., ICLR 2018) with ``q`` = client sampling rate (1 where nothing is claimed for
  client sampling).
- :class:`SkellamEvent`: ``steps`` compositions of the multi-dimensional Skellam mechanism of
  Agarwal, Kairouz, Liu (NeurIPS 2021, Theorem 3.5 and section 4), optionally Poisson-subsampled.

Guarantees are (epsilon, delta) under the add/remove-one neighbouring relation of the event's unit
(an example for DP-SGD and DP-FedSGD, a client's update for DP-FedAvg; see
``fl_core/dp/README.md``).

Accountants:

- RDP (Mironov, CSF 2017), with the subsampled-Gaussian RDP of Opacus's accountant (Mironov,
  Talwar, Zhang 2019) and the RDP-to-DP conversion of Balle et al. (AISTATS 2020, Theorem 21),
  which is the one Opacus 1.6 uses. The order grid is Opacus's plus large orders, as in
  ``dp_accounting``'s default grid.
- PLD (privacy-loss distributions; Koskela et al. 2020, Doroshenko et al. 2022) through Google's
  ``dp_accounting``, pessimistic discretization on a grid refined until it converges (see
  :mod:`fl_core.dp._pld`). The default for ledgers and reports: within 1% of a fine grid and
  never below it, under 1 s for 5,000 steps. Only Gaussian events have a PLD here.
- Skellam: the RDP bound of Agarwal et al. Theorem 3.5, evaluated at integer orders (a fractional
  order uses the next integer, which is valid because RDP grows with the order), and for Poisson
  subsampling the general upper bound of Zhu and Wang (ICML 2019, Theorem 6).

The reported epsilon is the smaller of the valid upper bounds available (RDP always, the fast
bound; PLD for histories whose every event has one, composed over the whole history, every job
of a ledger included). Opacus (for its RDP) is used through :mod:`fl_core.dp.dpsgd` (the only
module that imports it) and ``dp_accounting`` through :mod:`fl_core.dp._pld`, each loaded on
first use, so that importing this module stays light.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final, Literal

import numpy as np
import numpy.typing as npt
from scipy import special

from fl_core.dp import _pld
from fl_core.errors import ConfigError

ORDERS: Final[tuple[float, ...]] = (
    tuple(1 + x / 10.0 for x in range(1, 100))
    + tuple(float(a) for a in range(12, 64))
    + (64.0, 80.0, 96.0, 128.0, 192.0, 256.0, 512.0, 1024.0)
)
"""RDP orders: Opacus's default grid (1.1..10.9, 12..63) plus the large orders of dp_accounting."""

Accountant = Literal["rdp", "pld"]
ACCOUNTANTS: Final[tuple[str, ...]] = ("rdp", "pld")
"""Accountants that can certify a calibration target."""


def _require(ok: bool, name: str, allowed: str, value: object) -> None:
    if not ok:
        raise ConfigError(f"{name} must be {allowed}, got {value!r}")


def _is_number(x: object) -> bool:
    return not isinstance(x, bool) and isinstance(x, int | float) and math.isfinite(x)


def _is_count(x: object) -> bool:
    return not isinstance(x, bool) and isinstance(x, int) and x >= 0


def check_delta(delta: float) -> float:
    """Return ``delta`` if it lies in (0, 1), else raise ``ConfigError``."""
    _require(_is_number(delta) and 0 < delta < 1, "delta", "a number in (0, 1)", delta)
    return float(delta)


@dataclass(frozen=True, slots=True, kw_only=True)
class GaussianEvent:
    """``steps`` runs of the Poisson-subsampled Gaussian mechanism.

    Attributes:
        noise_multiplier: noise standard deviation divided by the L2 sensitivity (> 0).
        sample_rate: Poisson sampling probability q in [0, 1] (1: no sampling claimed).
        steps: number of compositions (>= 0).
    """

    noise_multiplier: float
    sample_rate: float = 1.0
    steps: int = 1

    def __post_init__(self) -> None:
        z = self.noise_multiplier
        _require(_is_number(z) and 0 < z <= 1e6, "noise_multiplier", "a number in (0, 1e6]", z)
        q = self.sample_rate
        _require(_is_number(q) and 0 <= q <= 1, "sample_rate", "a number in [0, 1]", q)
        _require(_is_count(self.steps), "steps", "an integer >= 0", self.steps)


@dataclass(frozen=True, slots=True, kw_only=True)
class SkellamEvent:
    """``steps`` runs of the Skellam mechanism Sk(mu, mu) with the given sensitivities.

    All quantities are in the integer (scaled) domain in which the noise is added.

    Attributes:
        mu: Poisson rate of each side of the aggregate noise per coordinate (variance 2*mu), > 0.
        l1_sensitivity: L1 bound on the change of one unit's contribution (> 0).
        l2_sensitivity: L2 bound on the change of one unit's contribution (> 0).
        sample_rate: Poisson sampling probability q of the unit in [0, 1] (1: none claimed).
        steps: number of compositions (>= 0).
    """

    mu: float
    l1_sensitivity: float
    l2_sensitivity: float
    sample_rate: float = 1.0
    steps: int = 1

    def __post_init__(self) -> None:
        _require(_is_number(self.mu) and self.mu > 0, "mu", "a finite number > 0", self.mu)
        for name in ("l1_sensitivity", "l2_sensitivity"):
            v = getattr(self, name)
            _require(_is_number(v) and v > 0, name, "a finite number > 0", v)
        q = self.sample_rate
        _require(_is_number(q) and 0 <= q <= 1, "sample_rate", "a number in [0, 1]", q)
        _require(_is_count(self.steps), "steps", "an integer >= 0", self.steps)


PrivacyEvent = GaussianEvent | SkellamEvent
_KINDS: Final = {"gaussian": GaussianEvent, "skellam": SkellamEvent}


def event_to_dict(event: PrivacyEvent) -> dict[str, float | int | str]:
    """Return a JSON-ready description of ``event`` (inverse of :func:`event_from_dict`)."""
    if isinstance(event, GaussianEvent):
        return {
            "kind": "gaussian",
            "noise_multiplier": event.noise_multiplier,
            "sample_rate": event.sample_rate,
            "steps": event.steps,
        }
    return {
        "kind": "skellam",
        "mu": event.mu,
        "l1_sensitivity": event.l1_sensitivity,
        "l2_sensitivity": event.l2_sensitivity,
        "sample_rate": event.sample_rate,
        "steps": event.steps,
    }


def event_from_dict(data: Mapping[str, object]) -> PrivacyEvent:
    """Rebuild an event from :func:`event_to_dict` output, checking every field.

    Raises:
        ConfigError: for an unknown kind, a missing or extra field, or a value out of range.
    """
    kind = data.get("kind")
    if kind not in _KINDS:
        raise ConfigError(f"event kind must be one of {sorted(_KINDS)}, got {kind!r}")
    cls = _KINDS[str(kind)]
    fields = {f.name for f in dataclasses.fields(cls)}
    given = set(data) - {"kind"}
    if given != fields:
        raise ConfigError(f"{kind} event needs fields {sorted(fields)}, got {sorted(given)}")
    values = {k: data[k] for k in fields}
    for key in ("steps",):
        if not _is_count(values[key]):
            raise ConfigError(f"{key} must be an integer >= 0, got {values[key]!r}")
    for key, value in values.items():
        if key != "steps" and not _is_number(value):
            raise ConfigError(f"{key} must be a finite number, got {value!r}")
    event: PrivacyEvent = cls(**values)
    return event


def skellam_rdp(
    orders: npt.ArrayLike, *, mu: float, l1_sensitivity: float, l2_sensitivity: float
) -> npt.NDArray[np.float64]:
    """RDP of one run of the Skellam mechanism (Agarwal, Kairouz, Liu 2021, Theorem 3.5).

    ``eps(a) = a*D2^2/(4*mu) + min(((2a - 1)*D2^2 + 6*D1) / (16*mu^2), 3*D1/(4*mu))``, with the
    order rounded up to an integer.
    """
    a = np.ceil(np.asarray(orders, dtype=np.float64))
    l1, l2 = float(l1_sensitivity), float(l2_sensitivity)
    gauss = a * l2**2 / (4.0 * mu)
    extra = np.minimum(((2.0 * a - 1.0) * l2**2 + 6.0 * l1) / (16.0 * mu**2), 3.0 * l1 / (4.0 * mu))
    out: npt.NDArray[np.float64] = gauss + extra
    return out


def subsampled_rdp_upper_bound(
    base_rdp_at: npt.NDArray[np.float64], *, sample_rate: float, orders: Sequence[float]
) -> npt.NDArray[np.float64]:
    """Zhu and Wang (ICML 2019) Theorem 6: RDP of a Poisson-subsampled mechanism, any mechanism.

    Args:
        base_rdp_at: the base mechanism's RDP at integer orders 2, 3, ..., A (index ``l - 2``),
            where A >= ceil(max(orders)).
        sample_rate: Poisson sampling probability q.
        orders: the orders at which to bound the subsampled mechanism; a fractional order uses the
            next integer.

    Returns:
        The bound at each order, never above the base mechanism's own RDP (subsampling does not
        hurt, by the quasi-convexity of the Renyi divergence).
    """
    q = float(sample_rate)
    out = np.empty(len(orders), dtype=np.float64)
    done: dict[int, float] = {}  # fractional orders share their integer order's bound
    for i, order in enumerate(orders):
        a = max(2, math.ceil(order))
        if a in done:
            out[i] = done[a]
            continue
        base_a = float(base_rdp_at[a - 2])
        if q == 0.0:
            out[i] = done[a] = 0.0
            continue
        if q == 1.0 or not math.isfinite(base_a):
            out[i] = done[a] = base_a
            continue
        log_q, log_1q = math.log(q), math.log1p(-q)
        ls = np.arange(3, a + 1, dtype=np.float64)
        log_binom = special.gammaln(a + 1) - special.gammaln(ls + 1) - special.gammaln(a - ls + 1)
        terms = [
            (a - 1) * log_1q + math.log1p((a - 1) * q),
            math.log(a * (a - 1) / 2.0) + 2 * log_q + (a - 2) * log_1q + float(base_rdp_at[0]),
        ]
        rest = math.log(3.0) + log_binom + ls * log_q + (a - ls) * log_1q
        rest = rest + (ls - 1) * base_rdp_at[ls.astype(np.int64) - 2]
        bound = float(special.logsumexp(np.concatenate([np.asarray(terms), rest]))) / (a - 1)
        out[i] = done[a] = min(max(bound, 0.0), base_a)
    return out


def _opacus_rdp(sigma: float, q: float, orders: tuple[float, ...]) -> npt.NDArray[np.float64]:
    from fl_core.dp.dpsgd import opacus_gaussian_rdp

    return opacus_gaussian_rdp(noise_multiplier=sigma, sample_rate=q, orders=orders)


@functools.lru_cache(maxsize=256)
def _gaussian_step_rdp(sigma: float, q: float) -> npt.NDArray[np.float64]:
    """One step's RDP on :data:`ORDERS`, cached: ledgers and reports recompose the same events."""
    curve = _opacus_rdp(sigma, q, ORDERS)
    curve.flags.writeable = False
    return curve


@functools.lru_cache(maxsize=1024)
def _skellam_step_rdp(mu: float, l1: float, l2: float, q: float) -> npt.NDArray[np.float64]:
    """One Skellam step's RDP on :data:`ORDERS`, cached like the Gaussian one."""
    top = max(2, math.ceil(max(ORDERS)))
    base = skellam_rdp(np.arange(2, top + 1), mu=mu, l1_sensitivity=l1, l2_sensitivity=l2)
    curve = subsampled_rdp_upper_bound(base, sample_rate=q, orders=ORDERS)
    curve.flags.writeable = False
    return curve


def rdp_curve(event: PrivacyEvent, orders: Sequence[float] = ORDERS) -> npt.NDArray[np.float64]:
    """Return the RDP of ``event`` (all its steps) at ``orders``."""
    if event.steps == 0 or event.sample_rate == 0.0:
        return np.zeros(len(orders), dtype=np.float64)
    if isinstance(event, GaussianEvent):
        if tuple(orders) == ORDERS:
            per_step = _gaussian_step_rdp(event.noise_multiplier, event.sample_rate)
        else:
            per_step = _opacus_rdp(event.noise_multiplier, event.sample_rate, tuple(orders))
    elif tuple(orders) == ORDERS:
        per_step = _skellam_step_rdp(
            event.mu, event.l1_sensitivity, event.l2_sensitivity, event.sample_rate
        )
    else:
        top = max(2, math.ceil(max(orders)))
        base = skellam_rdp(
            np.arange(2, top + 1),
            mu=event.mu,
            l1_sensitivity=event.l1_sensitivity,
            l2_sensitivity=event.l2_sensitivity,
        )
        per_step = subsampled_rdp_upper_bound(base, sample_rate=event.sample_rate, orders=orders)
    return per_step * event.steps


def rdp_to_epsilon(orders: Sequence[float], rdp: npt.ArrayLike, *, delta: float) -> float:
    """Convert an RDP curve to epsilon at ``delta`` (Balle et al. 2020, Theorem 21)."""
    check_delta(delta)
    a = np.asarray(orders, dtype=np.float64)
    r = np.asarray(rdp, dtype=np.float64)
    if r.size and not np.any(r):
        return 0.0  # nothing released (q = 0 or no steps)
    with np.errstate(invalid="ignore"):
        eps = r - (math.log(delta) + np.log(a)) / (a - 1) + np.log((a - 1) / a)
    eps = eps[~np.isnan(eps)]
    if eps.size == 0:
        return math.inf
    return max(0.0, float(eps.min()))


def rdp_to_delta(orders: Sequence[float], rdp: npt.ArrayLike, *, epsilon: float) -> float:
    """The smallest delta at which the RDP curve gives ``epsilon`` (inverse of rdp_to_epsilon)."""
    _require(_is_number(epsilon) and epsilon >= 0, "epsilon", "a finite number >= 0", epsilon)
    a = np.asarray(orders, dtype=np.float64)
    r = np.asarray(rdp, dtype=np.float64)
    with np.errstate(invalid="ignore", over="ignore"):
        log_delta = (a - 1) * (r - epsilon + np.log((a - 1) / a)) - np.log(a)
    log_delta = log_delta[~np.isnan(log_delta)]
    if log_delta.size == 0:
        return 1.0
    return float(min(1.0, math.exp(min(0.0, float(log_delta.min())))))


def epsilon_rdp(events: Iterable[PrivacyEvent], *, delta: float) -> float:
    """Epsilon at ``delta`` of the composition of ``events``, by RDP."""
    total = np.zeros(len(ORDERS), dtype=np.float64)
    for event in events:
        total += rdp_curve(event)
    return rdp_to_epsilon(ORDERS, total, delta=delta)


def _gaussian_history(events: Iterable[PrivacyEvent]) -> list[tuple[float, float, int]] | None:
    merged: dict[tuple[float, float], int] = {}
    for event in events:
        if not isinstance(event, GaussianEvent):
            return None
        if event.steps == 0 or event.sample_rate == 0.0:
            continue
        key = (event.noise_multiplier, event.sample_rate)
        merged[key] = merged.get(key, 0) + event.steps
    return [(z, q, steps) for (z, q), steps in merged.items()]


def epsilon_pld(events: Iterable[PrivacyEvent], *, delta: float) -> float:
    """Epsilon at ``delta`` of the composition of Gaussian ``events``, by PLD (``dp_accounting``).

    The whole history is one privacy-loss distribution: events with the same (sigma, q) are merged
    and self-composed, distinct ones composed with each other, and epsilon read off the result.

    Raises:
        ConfigError: if an event is not a :class:`GaussianEvent` (the PLD here is Gaussian only).
    """
    check_delta(delta)
    events = list(events)
    history = _gaussian_history(events)
    if history is None:
        raise ConfigError("the PLD accountant covers Gaussian events only")
    if not history:
        return 0.0
    upper = epsilon_rdp(events, delta=delta)
    return _pld.gaussian_history_epsilon(tuple(sorted(history)), float(delta), upper)


@dataclass(frozen=True, slots=True)
class EpsilonReport:
    """Epsilon of a composition by each accountant that applies, at one delta.

    Attributes:
        rdp: the RDP accountant's epsilon (always available; the fast bound).
        pld: the PLD accountant's upper bound, or ``None`` where it does not apply (Skellam
            events) or was not asked for.
        delta: the delta both refer to.
    """

    rdp: float
    pld: float | None
    delta: float

    @property
    def epsilon(self) -> float:
        """The tightest valid bound: the smaller of the two (each is an upper bound)."""
        return self.rdp if self.pld is None else min(self.rdp, self.pld)


def compose(events: Sequence[PrivacyEvent], *, delta: float, pld: bool = True) -> EpsilonReport:
    """Compose heterogeneous events (the ledger's question: what has this data set spent?).

    Args:
        events: the events, in any order (a ledger passes every job's events of one data set).
        delta: the delta at which epsilon is reported.
        pld: also run the PLD accountant when every event is Gaussian (the default; well under a
            second for thousands of steps). ``False`` gives the RDP bound alone.

    Returns:
        An :class:`EpsilonReport`.
    """
    check_delta(delta)
    rdp = epsilon_rdp(events, delta=delta)
    pld_eps: float | None = None
    history = _gaussian_history(events) if pld else None
    if history is not None:
        pld_eps = _pld.gaussian_history_epsilon(tuple(sorted(history)), float(delta), rdp)
    return EpsilonReport(rdp=rdp, pld=pld_eps, delta=delta)


def dpsgd_epsilon(
    *, noise_multiplier: float, sample_rate: float, steps: int, delta: float
) -> EpsilonReport:
    """Epsilon of DP-SGD (or central DP-FedAvg) by RDP and PLD."""
    event = GaussianEvent(noise_multiplier=noise_multiplier, sample_rate=sample_rate, steps=steps)
    return compose([event], delta=delta)


def noise_multiplier_for(
    *,
    target_epsilon: float,
    delta: float,
    sample_rate: float,
    steps: int,
    accountant: Accountant = "rdp",
) -> float:
    """The smallest noise multiplier (to 0.1%) whose epsilon is at most ``target_epsilon``.

    Args:
        target_epsilon: the epsilon to reach after ``steps`` steps (> 0).
        delta: the delta (0 < delta < 1).
        sample_rate: Poisson sampling rate q (0 < q <= 1).
        steps: number of steps (>= 1).
        accountant: ``"rdp"`` or ``"pld"``: which accountant must certify the target (the PLD
            search starts from the RDP answer, which is always feasible, and bisects below it).

    Returns:
        sigma with ``epsilon(sigma) <= target_epsilon`` by the chosen accountant.

    Raises:
        ConfigError: for arguments out of range, or a target that needs sigma above 1e6.
    """
    _require(
        _is_number(target_epsilon) and target_epsilon > 0,
        "target_epsilon",
        "a finite number > 0",
        target_epsilon,
    )
    check_delta(delta)
    _require(
        _is_number(sample_rate) and 0 < sample_rate <= 1, "sample_rate", "in (0, 1]", sample_rate
    )
    _require(_is_count(steps) and steps >= 1, "steps", "an integer >= 1", steps)
    _require(accountant in ACCOUNTANTS, "accountant", "'rdp' or 'pld'", accountant)

    def rdp_eps(sigma: float) -> float:
        events = [GaussianEvent(noise_multiplier=sigma, sample_rate=sample_rate, steps=steps)]
        return epsilon_rdp(events, delta=delta)

    def eps(sigma: float) -> float:
        events = [GaussianEvent(noise_multiplier=sigma, sample_rate=sample_rate, steps=steps)]
        return compose(events, delta=delta, pld=accountant == "pld").epsilon

    low, high = 0.0, 1.0
    while rdp_eps(high) > target_epsilon:
        low, high = high, 2.0 * high
        if high > 1e6:
            raise ConfigError(f"target_epsilon {target_epsilon} needs a noise multiplier above 1e6")
    if accountant == "pld":
        # The PLD epsilon is at most the RDP one, so the RDP answer is feasible: search below it.
        while high - low > 1e-3 * high:
            mid = (low + high) / 2.0
            if rdp_eps(mid) <= target_epsilon:
                high = mid
            else:
                low = mid
        low = high / 2.0
        while eps(low) <= target_epsilon:
            high, low = low, low / 2.0
    while high - low > 1e-3 * high:
        mid = (low + high) / 2.0
        if eps(mid) <= target_epsilon:
            high = mid
        else:
            low = mid
    return high
