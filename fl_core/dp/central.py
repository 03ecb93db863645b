"""Client-level DP-FedAvg with central noise: the coordinator adds the Gaussian noise.

McMahan, Ramage, Talwar, Zhang, "Learning Differentially Private Recurrent Language Models",
ICLR 2018, Algorithm 1 with flat clipping: every client update is clipped to L2 norm ``C`` before
anything else (:func:`fl_core.dp.clipping.clip_update`, run by the client), the coordinator sums the
clipped updates and adds N(0, (sigma C)^2) to the sum, and divides by the *expected* number of
clients (not the realised one; otherwise the sensitivity of the mean is unbounded).

Threat model: the coordinator is trusted to add the noise and to keep the noiseless sum to itself.
Clients get no guarantee against the coordinator from this placement (the job's report says so);
outside parties that see only released models get ``(epsilon, delta)`` from
:func:`fl_core.dp.accounting.dpsgd_epsilon` with ``sample_rate`` = client rate under Poisson client
sampling (:func:`fl_core.dp.sampling.poisson_sample`), or 1.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from fl_core.dp.clipping import check_clip, clip_update
from fl_core.dp.noise import gaussian_noise
from fl_core.errors import CodecError, ConfigError


def add_central_noise(
    total: npt.NDArray[np.float32],
    *,
    clip: float,
    noise_multiplier: float,
    rng: np.random.Generator,
) -> npt.NDArray[np.float32]:
    """Coordinator step: add N(0, (noise_multiplier * clip)^2) to every coordinate of ``total``.

    Args:
        total: the sum of the clipped client updates (float32, one-dimensional).
        clip: the clipping bound C the clients applied.
        noise_multiplier: sigma (> 0).
        rng: the coordinator's random generator (:func:`fl_core.dp.noise.csprng`).

    Returns:
        A new float32 vector: ``total`` plus the noise.
    """
    check_clip(clip)
    if not (np.isfinite(noise_multiplier) and noise_multiplier > 0):
        raise ConfigError(f"noise_multiplier must be a finite number > 0, got {noise_multiplier}")
    if not (isinstance(total, np.ndarray) and total.dtype == np.float32 and total.ndim == 1):
        raise CodecError("total must be a one-dimensional float32 numpy array")
    noise = gaussian_noise(total.shape[0], std=noise_multiplier * clip, rng=rng)
    return (total.astype(np.float64) + noise).astype(np.float32)


def gaussian_sum(
    updates: Sequence[npt.NDArray[np.float32]],
    *,
    clip: float,
    noise_multiplier: float,
    rng: np.random.Generator,
) -> npt.NDArray[np.float32]:
    """Reference central DP-FedAvg aggregation: clip each update, sum, add noise once.

    In a deployment the clipping runs at each client and the noise at the coordinator; this
    function chains the same two steps for simulations and for the privacy audit.

    Args:
        updates: the client updates (flat float32 vectors of one length); at least one.
        clip: L2 bound C.
        noise_multiplier: sigma; the noise std on the sum is ``sigma * C``.
        rng: random generator for the noise.

    Returns:
        The noisy sum (float32). Divide by the expected cohort size for the mean.
    """
    if not updates:
        raise ConfigError("updates must hold at least one client update")
    total = np.zeros(updates[0].shape, dtype=np.float64)
    for update in updates:
        clipped, _ = clip_update(update, clip=clip)
        if clipped.shape != total.shape:
            raise CodecError(f"update has shape {clipped.shape}, expected {total.shape}")
        total += clipped
    return add_central_noise(
        total.astype(np.float32), clip=clip, noise_multiplier=noise_multiplier, rng=rng
    )
