"""DP-SGD randomness for torch tensors from the AES-CTR stream of :func:`~fl_core.dp.noise.csprng`.

Opacus draws its noise with ``torch.normal`` and its Poisson batches with ``torch.rand`` from a
``torch.Generator`` (a Mersenne Twister on CPU). Its ``secure_mode`` would swap in torchcsprng,
which has no torch 2.x release. :mod:`fl_core.dp.dpsgd` therefore plugs these two pieces into
Opacus instead, both fed from one numpy ``Generator`` over randomgen's ``AESCounter`` (AES-128 in
counter mode, key of 128 bits from ``os.urandom``):

- :func:`gaussian_like`: N(0, std^2) noise shaped like a gradient. The normal variates are
  numpy's ziggurat over the AES-CTR words (an exact transform of uniform bits up to float64
  rounding); with ``secure=True`` they are combined by the Holohan-Braghin construction that
  Opacus's ``secure_mode`` uses (discard one draw, add four N(0, std^2) draws, halve; ESORICS
  2021, arXiv 2107.10138, section 5.1 with n = 2), see :func:`fl_core.dp.noise.gaussian_noise`.
  The sum is formed in float64 and rounded once to the gradient's dtype.
- :class:`PoissonBatchSampler`: the batch sampler of Opacus's Poisson data loader, each example
  kept independently with probability q (what the accountants assume), from the same stream.

Notes:
    The key is 128 bits from the OS and the stream is AES-128-CTR: predicting any noise value from
    other outputs is as hard as distinguishing AES from a random permutation (STYLE.md section
    10; DESIGN.md security rule 5: a CSPRNG stream seeded with at least 128 bits). The floating-
    point caveat of ``fl_core/dp/README.md`` (Mironov 2012; Jin et al. 2022) still applies.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
import torch

from fl_core.dp.noise import gaussian_noise
from fl_core.dp.sampling import poisson_indices
from fl_core.errors import ConfigError


def gaussian_like(
    reference: torch.Tensor, *, std: float, rng: np.random.Generator, secure: bool = True
) -> torch.Tensor:
    """N(0, std^2) noise with ``reference``'s shape, dtype and device, from ``rng``.

    Args:
        reference: the tensor the noise will be added to (only its shape, dtype, device are read).
        std: the standard deviation (>= 0; 0 gives zeros).
        rng: the CSPRNG stream (:func:`fl_core.dp.noise.csprng`).
        secure: use the Holohan-Braghin construction (Opacus's ``secure_mode``).

    Raises:
        ConfigError: if ``std`` is negative or not finite.
    """
    if not (math.isfinite(std) and std >= 0):
        raise ConfigError(f"std must be a finite number >= 0, got {std}")
    size = reference.numel()
    if secure:
        values = gaussian_noise(size, std=std, rng=rng)
    else:
        values = rng.standard_normal(size) * std
    noise = torch.from_numpy(values).reshape(reference.shape)
    return noise.to(dtype=reference.dtype, device=reference.device)


class PoissonBatchSampler:
    """Batches of a Poisson sample of ``range(num_samples)``, ``steps`` times, from ``rng``.

    A drop-in for Opacus's ``UniformWithReplacementSampler`` (same length, same batches in
    distribution, empty batches included) whose coins come from the CSPRNG stream.

    Args:
        num_samples: the data set's size (>= 1).
        sample_rate: the inclusion probability q of each example, in (0, 1].
        steps: batches per pass over the loader (>= 1).
        rng: the CSPRNG stream.
    """

    def __init__(
        self, *, num_samples: int, sample_rate: float, steps: int, rng: np.random.Generator
    ) -> None:
        if num_samples < 1:
            raise ConfigError(f"num_samples must be an integer >= 1, got {num_samples}")
        if not (math.isfinite(sample_rate) and 0 < sample_rate <= 1):
            raise ConfigError(f"sample_rate must be a number in (0, 1], got {sample_rate}")
        if steps < 1:
            raise ConfigError(f"steps must be an integer >= 1, got {steps}")
        self.num_samples = num_samples
        self.sample_rate = sample_rate
        self.steps = steps
        self._rng = rng

    def __len__(self) -> int:
        """Batches per pass."""
        return self.steps

    def __iter__(self) -> Iterator[list[int]]:
        """Yield ``steps`` Poisson batches of indices (each possibly empty)."""
        for _ in range(self.steps):
            chosen = poisson_indices(self.num_samples, rate=self.sample_rate, rng=self._rng)
            yield chosen.tolist()
