"""Distributed DP with the Skellam mechanism under secure aggregation (Agarwal, Kairouz, Liu 2021).

Threat model: the coordinator is honest-but-curious and sees only the modular sum of the clients'
vectors (secure aggregation); up to ``colluders`` clients may collude with it. Each client adds its
own integer noise share before masking, so nobody trusts the coordinator to add noise. Colluding
clients know, and can subtract, their own shares: the guarantee is computed from the shares of the
other survivors only.

Pipeline (Agarwal, Kairouz, Liu, "The Skellam Mechanism for Differentially Private Federated
Learning", NeurIPS 2021, arXiv 2110.04995, Algorithm 1 and section 4; the rotation and rounding
steps come from Kairouz, Liu, Steinke, ICML 2021, section 4):

Client (:func:`skellam_encode`):
    1. Clip the update to L2 norm ``clip`` (unit CLIENT); for a DP-FedSGD gradient sum (unit
       EXAMPLE) check instead that its norm is at most ``num_examples * clip``.
    2. Pad to a power of two and rotate with the randomized Hadamard transform ``H D`` (the seed is
       public and the same for every client and the server in a round).
    3. Scale by ``scale`` (= 1/gamma, gamma being the paper's granularity).
    4. Randomized rounding to integers; with ``beta > 0`` (unit CLIENT only) conditional rounding:
       round again until the squared L2 norm is at most the bound of Kairouz et al. (section 4.1).
    5. Add Skellam(local_mu, local_mu) noise to every coordinate.
    6. Reduce modulo ``2**bits``: a ring vector (uint32 for bits <= 32, else uint64) that goes
       into secure aggregation (``mpc``'s masked sum works in Z_2^32 or Z_2^64, and 2^bits divides
       both).

Server (:func:`skellam_decode`): reduce the ring sum modulo ``2**bits``, map to the centred range
``[-2**(bits-1), 2**(bits-1))``, divide by ``scale``, rotate back, drop the padding. The result is
the sum of the clipped updates plus the aggregate noise ``Sk(n*local_mu, n*local_mu) / scale``.

Privacy (:func:`skellam_epsilon`): one round is the Skellam mechanism with aggregate rate
``local_mu * (survivors - colluders)`` and sensitivities (in the scaled domain)
``D2 = min(sqrt(c^2 s^2 + d/4 + sqrt(2 ln(1/beta)) (c s + sqrt(d)/2)), c s + sqrt(d))`` (the
second term alone when beta = 0) and ``D1 = min(D2^2, sqrt(d) D2)``, with d the padded dimension
(Kairouz et al., Theorem 2 / Agarwal et al., section 4). Its RDP is Theorem 3.5 of Agarwal et al.;
see :mod:`fl_core.dp.accounting`.

Notes:
    Neighbouring relations. CLIENT: one client's update replaced by zero, the client still taking
    part (so the number of noise shares does not depend on its data); no amplification by client
    sampling is claimed, because the coordinator sees who took part. EXAMPLE (DP-FedSGD): one
    example added to or removed from one institution's data; institutions Poisson-sample their
    examples with the same rate q, which nobody else observes, so the Zhu-Wang bound applies.
    Rounding the institution's *sum* is covered by coupling the rounding of the two neighbouring
    sums through the same uniforms: their rounded values differ by at most ``|y_i - y'_i| + 1`` per
    coordinate, so the change has L2 norm at most ``c s + sqrt(d)``; quasi-convexity of the Renyi
    divergence over the common uniforms then gives the beta = 0 sensitivity. Conditional rounding
    does not survive that argument, so EXAMPLE requires beta = 0.
"""

from __future__ import annotations

import math
import secrets
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from fl_core.dp._rotation import padded_length, rotate, unrotate
from fl_core.dp.accounting import SkellamEvent, check_delta, compose, noise_multiplier_for
from fl_core.dp.clipping import check_flat, clip_float64, l2_norm
from fl_core.dp.noise import skellam_noise
from fl_core.errors import CodecError, ConfigError

RingArray = npt.NDArray[np.unsignedinteger[Any]]
DEFAULT_MODCLIP_PROB: Final = 1e-4
"""Per-coordinate probability of a modular wrap that calibration aims for (TFF's default)."""
MAX_ROUNDING_ATTEMPTS: Final = 10_000
MU_CAP: Final = 1e12
"""Calibration keeps each client's Poisson rate near this at most (exact float64 draws)."""
MIN_BITS, MAX_BITS = 2, 52


class PrivacyUnit(StrEnum):
    """Whose privacy a Skellam config protects (the neighbouring relation)."""

    CLIENT = "client"
    EXAMPLE = "example"


def _require(ok: bool, name: str, allowed: str, value: object) -> None:
    if not ok:
        raise ConfigError(f"{name} must be {allowed}, got {value!r}")


def _int(x: object) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _num(x: object) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)


@dataclass(frozen=True, slots=True, kw_only=True)
class SkellamConfig:
    """Parameters of one distributed-DP aggregation, shared by the clients and the server.

    Attributes:
        dim: length of the flat float update.
        clip: L2 bound C (CLIENT: of the update; EXAMPLE: of each example's gradient).
        bits: modular-clipping width: vectors live in Z_{2^bits}, 2 <= bits <= 52.
        scale: s = 1/gamma, the factor applied before rounding (> 0).
        local_mu: each client's noise Sk(local_mu, local_mu) per coordinate, in scaled units.
        expected_clients: clients expected to contribute to the sum.
        min_clients: fewest survivors the round accepts (the calibration point).
        beta: conditional-rounding parameter in [0, 1); 0 is unconditional rounding.
        colluders: clients assumed to collude with the coordinator (their shares do not count).
        unit: CLIENT (DP-FedAvg) or EXAMPLE (DP-FedSGD).
        sample_rate: Poisson sampling rate of the unit (EXAMPLE); must be 1 for CLIENT.
    """

    dim: int
    clip: float
    bits: int
    scale: float
    local_mu: float
    expected_clients: int
    min_clients: int
    beta: float = 0.0
    colluders: int = 0
    unit: PrivacyUnit = PrivacyUnit.CLIENT
    sample_rate: float = 1.0

    def __post_init__(self) -> None:
        _require(self.unit in tuple(PrivacyUnit), "unit", "'client' or 'example'", self.unit)
        object.__setattr__(self, "unit", PrivacyUnit(self.unit))  # "client" -> CLIENT
        _require(_int(self.dim) and self.dim >= 1, "dim", "an integer >= 1", self.dim)
        _require(_num(self.clip) and self.clip > 0, "clip", "a finite number > 0", self.clip)
        _require(
            _int(self.bits) and MIN_BITS <= self.bits <= MAX_BITS,
            "bits",
            f"an integer in [{MIN_BITS}, {MAX_BITS}]",
            self.bits,
        )
        _require(_num(self.scale) and self.scale > 0, "scale", "a finite number > 0", self.scale)
        _require(
            _num(self.local_mu) and 0 < self.local_mu <= 1e15,
            "local_mu",
            "a number in (0, 1e15]",
            self.local_mu,
        )
        _require(
            _int(self.min_clients) and self.min_clients >= 1,
            "min_clients",
            "an integer >= 1",
            self.min_clients,
        )
        _require(
            _int(self.expected_clients) and self.expected_clients >= self.min_clients,
            "expected_clients",
            f"an integer >= min_clients ({self.min_clients})",
            self.expected_clients,
        )
        _require(
            _int(self.colluders) and 0 <= self.colluders < self.min_clients,
            "colluders",
            f"an integer in [0, min_clients) = [0, {self.min_clients})",
            self.colluders,
        )
        _require(_num(self.beta) and 0 <= self.beta < 1, "beta", "a number in [0, 1)", self.beta)
        _require(
            _num(self.sample_rate) and 0 < self.sample_rate <= 1,
            "sample_rate",
            "a number in (0, 1]",
            self.sample_rate,
        )
        if self.unit is PrivacyUnit.EXAMPLE and self.beta != 0:
            raise ConfigError("beta must be 0 for unit 'example' (conditional rounding of a sum)")
        if self.unit is PrivacyUnit.CLIENT and self.sample_rate != 1:
            raise ConfigError(
                "sample_rate must be 1 for unit 'client': the coordinator sees the cohort, so no "
                "amplification by client sampling is claimed for distributed DP"
            )

    @property
    def padded_dim(self) -> int:
        """Length of the rotated vector (and of every ring vector): a power of two >= dim."""
        return padded_length(self.dim)

    @property
    def ring_dtype(self) -> np.dtype[Any]:
        """uint32 for bits <= 32, else uint64."""
        return np.dtype(np.uint32) if self.bits <= 32 else np.dtype(np.uint64)

    @property
    def l2_sensitivity(self) -> float:
        """L2 sensitivity in the scaled integer domain (the conditional-rounding bound)."""
        cs, d = self.clip * self.scale, float(self.padded_dim)
        plain = (cs + math.sqrt(d)) ** 2
        if self.beta == 0:
            return math.sqrt(plain)
        cond = cs**2 + d / 4 + math.sqrt(2 * math.log(1 / self.beta)) * (cs + math.sqrt(d) / 2)
        return math.sqrt(min(cond, plain))

    @property
    def l1_sensitivity(self) -> float:
        """L1 sensitivity in the scaled integer domain: min(D2^2, sqrt(d) * D2)."""
        d2 = self.l2_sensitivity
        return min(d2**2, math.sqrt(self.padded_dim) * d2)

    def central_std(self, clients: int) -> float:
        """Std of the aggregate noise of ``clients`` shares, in the units of the update."""
        return math.sqrt(2.0 * self.local_mu * clients) / self.scale


def new_rotation_seed() -> bytes:
    """A fresh public rotation seed for one round (32 bytes from the OS CSPRNG)."""
    return secrets.token_bytes(32)


def _round(y: npt.NDArray[np.float64], *, rng: np.random.Generator) -> npt.NDArray[np.int64]:
    low = np.floor(y)
    up = rng.random(y.shape) < (y - low)
    return low.astype(np.int64) + up.astype(np.int64)


def skellam_encode(
    update: npt.NDArray[np.floating],
    *,
    config: SkellamConfig,
    rotation_seed: bytes,
    rng: np.random.Generator,
    num_examples: int | None = None,
) -> RingArray:
    """Client side: clip, rotate, scale, round, add Skellam noise, reduce modulo 2^bits.

    Args:
        update: flat float32/float64 vector of length ``config.dim``: the update (CLIENT) or the
            sum of clipped per-example gradients (EXAMPLE).
        config: the round's parameters.
        rotation_seed: the round's public rotation seed (>= 16 bytes, same for all parties).
        rng: the client's secret random generator (:func:`fl_core.dp.noise.csprng`).
        num_examples: EXAMPLE only: how many clipped gradients ``update`` sums.

    Returns:
        A ring vector of ``config.padded_dim`` elements in ``[0, 2**bits)``, dtype
        ``config.ring_dtype``.

    Raises:
        CodecError: if ``update`` has the wrong dtype, shape or a non-finite entry, or (EXAMPLE)
            a norm above ``num_examples * clip``.
        ConfigError: if ``num_examples`` is missing (EXAMPLE) or given (CLIENT).
    """
    if not (isinstance(update, np.ndarray) and update.dtype in (np.float32, np.float64)):
        raise CodecError(f"update must be a float32 or float64 numpy array, got {update!r:.80}")
    check_flat(update, dtype=update.dtype.type)
    if update.shape[0] != config.dim:
        raise CodecError(f"update has length {update.shape[0]}, config.dim is {config.dim}")
    if config.unit is PrivacyUnit.CLIENT:
        if num_examples is not None:
            raise ConfigError("num_examples applies to unit 'example' only")
        x = clip_float64(update, clip=config.clip)
    else:
        if not (_int(num_examples) and num_examples is not None and num_examples >= 0):
            raise ConfigError(f"num_examples must be an integer >= 0, got {num_examples!r}")
        norm = l2_norm(update)
        if norm > num_examples * config.clip:
            raise CodecError(
                f"update norm {norm} exceeds num_examples * clip = {num_examples * config.clip}: "
                "it is not a sum of clipped per-example gradients"
            )
        x = update.astype(np.float64)
    y = rotate(x, seed=rotation_seed) * config.scale
    rounded = _round(y, rng=rng)
    if config.beta > 0:
        bound = config.l2_sensitivity**2
        attempts = 1
        while float(np.dot(rounded, rounded)) > bound:
            if attempts >= MAX_ROUNDING_ATTEMPTS:
                raise ConfigError(f"conditional rounding failed {attempts} times; raise beta")
            rounded = _round(y, rng=rng)
            attempts += 1
    noised = rounded + skellam_noise(config.padded_dim, mu=config.local_mu, rng=rng)
    ring: RingArray = np.mod(noised, 1 << config.bits).astype(config.ring_dtype)
    return ring


def skellam_decode(
    ring_sum: RingArray, *, config: SkellamConfig, rotation_seed: bytes
) -> npt.NDArray[np.float32]:
    """Server side: turn the (unmasked) modular sum into the noisy sum of the clipped updates.

    Args:
        ring_sum: the sum of the clients' ring vectors modulo 2^32 (uint32) or 2^64 (uint64), or
            already modulo 2^bits; length ``config.padded_dim``.
        config: the round's parameters.
        rotation_seed: the round's public rotation seed.

    Returns:
        A float32 vector of length ``config.dim``: the sum (not the mean) of the clipped updates
        plus the aggregate noise.

    Raises:
        CodecError: for a wrong type, dtype, shape or a dtype narrower than ``config.bits``.
    """
    if not isinstance(ring_sum, np.ndarray):
        raise CodecError(f"ring_sum must be a numpy array, got {type(ring_sum).__name__}")
    if ring_sum.dtype not in (np.uint32, np.uint64):
        raise CodecError(f"ring_sum has dtype {ring_sum.dtype}, expected uint32 or uint64")
    if ring_sum.dtype.itemsize * 8 < config.bits:
        raise CodecError(f"ring_sum dtype {ring_sum.dtype} is narrower than bits={config.bits}")
    if ring_sum.shape != (config.padded_dim,):
        raise CodecError(f"ring_sum has shape {ring_sum.shape}, expected ({config.padded_dim},)")
    mask = np.uint64((1 << config.bits) - 1)
    values = (ring_sum.astype(np.uint64) & mask).astype(np.int64)
    values[values >= (1 << (config.bits - 1))] -= 1 << config.bits
    x = unrotate(values.astype(np.float64) / config.scale, seed=rotation_seed, dim=config.dim)
    return x.astype(np.float32)


def skellam_round_event(config: SkellamConfig, *, survivors: int) -> SkellamEvent:
    """The privacy event of one round in which ``survivors`` clients' shares were summed.

    Raises:
        ConfigError: if no share outside the colluders survived (no guarantee at all).
    """
    honest = survivors - config.colluders
    if not _int(survivors) or honest < 1:
        raise ConfigError(
            f"survivors must exceed colluders ({config.colluders}) for any guarantee, "
            f"got {survivors!r}"
        )
    return SkellamEvent(
        mu=config.local_mu * honest,
        l1_sensitivity=config.l1_sensitivity,
        l2_sensitivity=config.l2_sensitivity,
        sample_rate=config.sample_rate,
        steps=1,
    )


def skellam_epsilon(config: SkellamConfig, *, survivors: list[int], delta: float) -> float:
    """Epsilon at ``delta`` over rounds with the given numbers of survivors (one per round)."""
    events = [skellam_round_event(config, survivors=n) for n in survivors]
    return compose(events, delta=delta, pld=False).epsilon


def _scale_for(signal: float, noise_var: float, *, bits: int, k: float, n: int, d: int) -> float:
    """Largest s with k * sqrt(s^2 (signal^2/d + noise_var) + n/4) <= 2^(bits-1), less 0.1%."""
    budget = (2.0 ** (bits - 1) / k) ** 2 * (1 - 1e-3) - n / 4.0
    if budget <= 0:
        raise ConfigError(f"bits={bits} leaves no room for {n} clients' rounding error; raise bits")
    return math.sqrt(budget / (signal**2 / d + noise_var))


def calibrate_skellam(
    *,
    target_epsilon: float,
    delta: float,
    dim: int,
    clip: float,
    bits: int,
    expected_clients: int,
    min_clients: int,
    rounds: int,
    colluders: int = 0,
    beta: float = 0.0,
    unit: PrivacyUnit = PrivacyUnit.CLIENT,
    sample_rate: float = 1.0,
    expected_batch: float | None = None,
    modclip_prob: float = DEFAULT_MODCLIP_PROB,
) -> SkellamConfig:
    """Choose ``scale`` and ``local_mu`` for a target (epsilon, delta) over ``rounds`` rounds.

    The noise is calibrated so that ``rounds`` rounds with only ``min_clients - colluders`` honest
    shares spend at most ``target_epsilon``; the scale is the largest for which the aggregate of
    ``expected_clients`` (signal of L2 norm ``expected_clients * clip``, or ``expected_batch *
    clip`` for EXAMPLE, spread by the rotation; rounding error; noise) stays within
    ``k = sqrt(2 ln(2 / modclip_prob))`` standard deviations of ``2**(bits-1)`` (a sub-Gaussian
    tail bound, as in Kairouz et al. 2021, section 4.2).

    Args:
        target_epsilon: epsilon after ``rounds`` rounds (> 0).
        delta: the delta.
        dim: update length.
        clip: L2 bound C.
        bits: modular-clipping width.
        expected_clients: clients expected per round (CLIENT: population x client rate).
        min_clients: fewest survivors a round accepts.
        rounds: rounds a client takes part in (CLIENT) or DP-FedSGD steps (EXAMPLE).
        colluders: clients assumed to collude with the coordinator.
        beta: conditional rounding (CLIENT only; 0 disables).
        unit: CLIENT or EXAMPLE.
        sample_rate: EXAMPLE: the examples' Poisson sampling rate.
        expected_batch: EXAMPLE: expected examples per step over all institutions.
        modclip_prob: per-coordinate wrap probability to aim for.

    Returns:
        A :class:`SkellamConfig`.

    Raises:
        ConfigError: for bad arguments or when ``bits`` is too small for the cohort.
    """
    _require(_int(rounds) and rounds >= 1, "rounds", "an integer >= 1", rounds)
    _require(_num(modclip_prob) and 0 < modclip_prob < 1, "modclip_prob", "in (0, 1)", modclip_prob)
    check_delta(delta)
    if unit is PrivacyUnit.EXAMPLE:
        _require(
            expected_batch is not None and _num(expected_batch) and expected_batch > 0,
            "expected_batch",
            "a number > 0 for unit 'example'",
            expected_batch,
        )
        signal = float(expected_batch or 0.0) * clip
    else:
        signal = expected_clients * clip
    template = SkellamConfig(
        dim=dim, clip=clip, bits=bits, scale=1.0, local_mu=1.0,
        expected_clients=expected_clients, min_clients=min_clients, beta=beta,
        colluders=colluders, unit=unit, sample_rate=sample_rate,
    )  # fmt: skip
    honest_min, n, d = min_clients - colluders, expected_clients, template.padded_dim
    k = math.sqrt(2.0 * math.log(2.0 / modclip_prob))
    z = noise_multiplier_for(
        target_epsilon=target_epsilon, delta=delta, sample_rate=sample_rate, steps=rounds
    )
    noise_var = (z * clip) ** 2 * n / honest_min  # unscaled variance of n shares
    for _ in range(100):
        scale = _scale_for(signal, noise_var, bits=bits, k=k, n=n, d=d)
        # A wide ring would allow scales whose Poisson rates exceed exact integer sampling; past
        # local_mu = MU_CAP the rounding error is negligible anyway (sqrt(d) << s * C).
        scale = min(scale, math.sqrt(2.0 * n * MU_CAP / noise_var))
        try:
            config = _search_mu(template, scale, target_epsilon, delta, rounds, honest_min)
        except ConfigError:
            # The Gaussian estimate was far too optimistic for the Skellam bound (small epsilon
            # under subsampling): assume more noise, which lowers the scale and the Poisson rate.
            noise_var *= 16.0
            continue
        agg_var = scale**2 * signal**2 / d + n / 4.0 + 2.0 * n * config.local_mu
        if k * math.sqrt(agg_var) <= 2.0 ** (bits - 1):
            return config
        noise_var = config.central_std(n) ** 2
    raise ConfigError(f"calibration did not converge; bits={bits} is probably too small")


def _search_mu(
    template: SkellamConfig, scale: float, target: float, delta: float, rounds: int, honest: int
) -> SkellamConfig:
    """Smallest local_mu (to 0.01%) whose epsilon over ``rounds`` rounds is at most ``target``."""
    sensitive = replace(template, scale=scale)
    l1, l2 = sensitive.l1_sensitivity, sensitive.l2_sensitivity

    def eps(mu: float) -> float:
        event = SkellamEvent(
            mu=mu * honest,
            l1_sensitivity=l1,
            l2_sensitivity=l2,
            sample_rate=template.sample_rate,
            steps=rounds,
        )
        return compose([event], delta=delta, pld=False).epsilon

    low, high = 0.0, max(l2**2 / honest, 1e-6)
    while eps(high) > target:
        low, high = high, high * 2.0
        if high > 1e15:
            raise ConfigError("the target epsilon needs local_mu above 1e15; raise the target")
    while high - low > 1e-4 * high:
        mid = (low + high) / 2.0
        if eps(mid) <= target:
            high = mid
        else:
            low = mid
    return replace(template, scale=scale, local_mu=high)
