"""Privacy accounting: time and epsilon of Bulwark's PLD and RDP against dp_accounting and Opacus.

For Poisson-subsampled Gaussian histories (sigma, q, steps) it measures, side by side in one run:

- ``pld``: Bulwark's default accountant (``fl_core.dp.accounting.epsilon_pld``: dp_accounting's
  pessimistic PLD on a grid refined until it converges), caches cleared before every repeat;
- ``rdp``: Bulwark's RDP bound (the fast bound);
- ``dpa 1e-4``: dp_accounting's ``PLDAccountant`` at its default grid (1e-4), the baseline;
- ``reference``: the same at a grid of epsilon / 2^16 (once, not timed): the "fine" value that
  the accuracy claim refers to (at most 2^-10);
- ``opacus prv`` (``--prv`` only): Opacus's PRV accountant, the path the ledger used before; on
  main it takes minutes and returns inf at sigma 0.6 and 0.9, q = 0.5, 5,000 steps.

Times are medians over ``--repeats`` repeats, in seconds, on whatever machine runs it (a shared
2-core machine for the figures in fl_core/dp/README.md). The table goes to stdout and the
figures to benchmarks/results/accounting.json.

    python benchmarks/accounting.py                 # 5 repeats
    python benchmarks/accounting.py --prv           # also Opacus's PRV (slow)

Target (issue 14): at most 1 s for 5,000 steps; within 1% of the fine grid and never below it.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import dp_accounting as dpa
from dp_accounting import pld

from fl_core.dp import _pld
from fl_core.dp.accounting import GaussianEvent, _gaussian_step_rdp, epsilon_pld, epsilon_rdp

DELTA = 1e-5
CASES: list[tuple[float, float, int]] = [
    (1.0, 0.01, 5000),
    (0.8, 0.001, 5000),
    (2.0, 0.01, 5000),
    (0.6, 0.5, 5000),
    (0.9, 0.5, 5000),
    (1.1, 256 / 60000, 14062),
    (1.96, 2048 / 60000, 1170),
    (5.0, 1.0, 100),
]


def dpa_epsilon(sigma: float, q: float, steps: int, interval: float) -> float:
    accountant = pld.PLDAccountant(value_discretization_interval=interval)
    inner = dpa.GaussianDpEvent(sigma)
    event = inner if q == 1.0 else dpa.PoissonSampledDpEvent(q, inner)
    accountant.compose(dpa.SelfComposedDpEvent(event, steps))
    return float(accountant.get_epsilon(DELTA))


def prv_epsilon(sigma: float, q: float, steps: int) -> float:
    import warnings

    import numpy as np
    from opacus.accountants import PRVAccountant

    accountant = PRVAccountant()
    accountant.history = [(sigma, q, steps)]
    with np.errstate(divide="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(accountant.get_epsilon(delta=DELTA))


def timed(fn: Callable[[], float], repeats: int, before: Callable[[], None]) -> tuple[float, float]:
    times, value = [], math.nan
    for _ in range(repeats):
        before()
        start = time.perf_counter()
        value = fn()
        times.append(time.perf_counter() - start)
    return value, statistics.median(times)


def clear() -> None:
    _pld.gaussian_history_epsilon.cache_clear()
    _gaussian_step_rdp.cache_clear()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--prv", action="store_true", help="also run Opacus's PRV accountant")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/accounting.json"))
    args = parser.parse_args()
    epsilon_rdp([GaussianEvent(noise_multiplier=1.0, sample_rate=0.5)], delta=DELTA)  # imports
    dpa_epsilon(1.0, 0.5, 1, 1e-2)
    rows = []
    header = (
        f"{'sigma':>5} {'q':>8} {'steps':>6} | {'pld eps':>10} {'s':>6} | {'rdp eps':>10} {'s':>6}"
        f" | {'dpa1e-4 eps':>11} {'s':>6} | {'reference':>10} {'pld/ref-1':>9}"
        + (f" | {'prv eps':>10} {'s':>7}" if args.prv else "")
    )
    print(header)
    print("-" * len(header))
    for sigma, q, steps in CASES:
        events = [GaussianEvent(noise_multiplier=sigma, sample_rate=q, steps=steps)]
        pld_eps, pld_s = timed(lambda e=events: epsilon_pld(e, delta=DELTA), args.repeats, clear)
        rdp_eps, rdp_s = timed(lambda e=events: epsilon_rdp(e, delta=DELTA), args.repeats, clear)
        base_eps, base_s = timed(
            lambda s=sigma, r=q, t=steps: dpa_epsilon(s, r, t, 1e-4), args.repeats, clear
        )
        fine = 2.0 ** math.floor(math.log2(min(rdp_eps / 2.0**16, 2.0**-10)))
        reference = dpa_epsilon(sigma, q, steps, fine)
        row: dict[str, float | int | None] = {
            "sigma": sigma,
            "sample_rate": q,
            "steps": steps,
            "delta": DELTA,
            "pld_epsilon": pld_eps,
            "pld_seconds": pld_s,
            "rdp_epsilon": rdp_eps,
            "rdp_seconds": rdp_s,
            "dpa_1e-4_epsilon": base_eps,
            "dpa_1e-4_seconds": base_s,
            "reference_epsilon": reference,
            "reference_interval": fine,
            "pld_over_reference": pld_eps / reference - 1.0,
        }
        line = (
            f"{sigma:5.2f} {q:8.5f} {steps:6d} | {pld_eps:10.5g} {pld_s:6.3f} |"
            f" {rdp_eps:10.5g} {rdp_s:6.3f} | {base_eps:11.5g} {base_s:6.3f} |"
            f" {reference:10.5g} {pld_eps / reference - 1.0:9.2e}"
        )
        if args.prv:
            prv_eps, prv_s = timed(lambda s=sigma, r=q, t=steps: prv_epsilon(s, r, t), 1, clear)
            row.update(prv_epsilon=prv_eps, prv_seconds=prv_s)
            line += f" | {prv_eps:10.5g} {prv_s:7.1f}"
        rows.append(row)
        print(line, flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"delta": DELTA, "repeats": args.repeats, "unit": "seconds (median)"}
    args.out.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
