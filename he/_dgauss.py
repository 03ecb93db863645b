"""Exact discrete Gaussian and discrete Laplace sampling from the OS CSPRNG.

Implements Algorithms 1-3 of Canonne, Kamath and Steinke, "The Discrete Gaussian for Differential
Privacy", NeurIPS 2020 (arXiv 2004.00010), with exact rational arithmetic and `secrets` as the only
source of randomness, so the output distribution is exactly the discrete Gaussian (no
floating-point artefacts, Mironov CCS 2012). Running time is data-independent only in expectation
(their Section 5.3); the key holder samples after decryption, away from the owners.
"""

from __future__ import annotations

import math
import secrets
from fractions import Fraction


def _bernoulli(p: Fraction) -> bool:
    """True with probability p (0 <= p <= 1)."""
    return secrets.randbelow(p.denominator) < p.numerator


def _bernoulli_exp_small(gamma: Fraction) -> bool:
    """True with probability exp(-gamma) for 0 <= gamma <= 1 (CKS20 Algorithm 1)."""
    k = 1
    while _bernoulli(gamma / k):
        k += 1
    return k % 2 == 1


def bernoulli_exp(gamma: Fraction) -> bool:
    """True with probability exp(-gamma) for gamma >= 0 (CKS20 Algorithm 1)."""
    while gamma > 1:
        if not _bernoulli_exp_small(Fraction(1)):
            return False
        gamma -= 1
    return _bernoulli_exp_small(gamma)


def discrete_laplace(t: int) -> int:
    """A sample of P(x) proportional to exp(-|x|/t) on the integers (CKS20 Algorithm 2, s=1)."""
    if t < 1:
        raise ValueError("discrete Laplace scale t must be a positive integer")
    while True:
        u = secrets.randbelow(t)
        if not bernoulli_exp(Fraction(u, t)):
            continue
        v = 0
        while bernoulli_exp(Fraction(1)):
            v += 1
        x = u + t * v
        negative = secrets.randbelow(2) == 1
        if negative and x == 0:
            continue
        return -x if negative else x


def discrete_gaussian(sigma: float) -> int:
    """A sample of P(x) proportional to exp(-x^2 / (2 sigma^2)) (CKS20 Algorithm 3)."""
    if not (math.isfinite(sigma) and sigma > 0):
        raise ValueError("discrete Gaussian sigma must be a finite number > 0")
    sigma2 = Fraction(sigma) ** 2
    t = math.floor(sigma) + 1
    while True:
        y = discrete_laplace(t)
        gamma = (abs(y) - sigma2 / t) ** 2 / (2 * sigma2)
        if bernoulli_exp(gamma):
            return y
