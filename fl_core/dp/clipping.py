"""Client-level L2 clipping of a flat update (the first step of DP-FedAvg).

McMahan, Ramage, Talwar, Zhang, "Learning Differentially Private Recurrent Language Models",
ICLR 2018, Algorithm 1 (``ClipFn``, flat clipping): each client's update is scaled to L2 norm at
most ``C`` before anything else touches it, which bounds one client's influence on the sum by ``C``.

Notes:
    The guarantee is checked on the result, not assumed: the norm of the returned vector, summed
    in float64 over its float32 entries, is at most ``clip``. Multiplying by ``clip / norm`` in
    floating point can land one ulp above ``clip``; the result is then shrunk by a further factor
    ``1 - 2**-22`` until it is not (Casacuberta et al., CCS 2022, on sensitivity lost to rounding).
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

from fl_core.errors import CodecError, ConfigError

_SHRINK = 1.0 - 2.0**-22
_MAX_SHRINKS = 64


def check_clip(clip: float, *, name: str = "clip") -> float:
    """Return ``clip`` as a float if it is a finite number > 0, else raise ``ConfigError``."""
    if isinstance(clip, bool) or not isinstance(clip, int | float):
        raise ConfigError(f"{name} must be a finite number > 0, got {clip!r}")
    if not math.isfinite(clip) or clip <= 0:
        raise ConfigError(f"{name} must be a finite number > 0, got {clip}")
    return float(clip)


def check_flat(
    vector: object, *, dtype: type[np.floating], name: str = "update"
) -> npt.NDArray[np.floating]:
    """Check that ``vector`` is a finite one-dimensional numpy array of ``dtype``.

    Raises:
        CodecError: naming what is wrong (type, dtype, shape, or a NaN/inf entry).
    """
    if not isinstance(vector, np.ndarray):
        raise CodecError(f"{name} must be a numpy array, got {type(vector).__name__}")
    if vector.dtype != np.dtype(dtype):
        raise CodecError(f"{name} has dtype {vector.dtype}, expected {np.dtype(dtype)}")
    if vector.ndim != 1:
        raise CodecError(f"{name} must be one-dimensional, got shape {vector.shape}")
    if not np.isfinite(vector).all():
        raise CodecError(f"{name} contains NaN or infinite entries")
    return vector


def l2_norm(vector: npt.NDArray[np.floating]) -> float:
    """Return the L2 norm of ``vector`` accumulated in float64."""
    v = np.asarray(vector, dtype=np.float64)
    return float(math.sqrt(float(np.dot(v, v))))


def clip_update(
    update: npt.NDArray[np.float32], *, clip: float
) -> tuple[npt.NDArray[np.float32], float]:
    """Scale ``update`` to L2 norm at most ``clip``.

    Args:
        update: a flat float32 vector (new local weights minus the round's global weights).
        clip: the clipping bound C (> 0).

    Returns:
        ``(clipped, norm)``: a new float32 vector in the direction of ``update`` with L2 norm at
        most ``clip`` (the input itself, copied, when it is already within the bound), and the
        norm of the input before clipping (to report how often and how hard updates are clipped).

    Raises:
        CodecError: if ``update`` is not a finite one-dimensional float32 array.
        ConfigError: if ``clip`` is not a finite number > 0.
    """
    bound = check_clip(clip)
    check_flat(update, dtype=np.float32)
    norm = l2_norm(update)
    if norm <= bound:
        return update.copy(), norm
    clipped = (update.astype(np.float64) * (bound / norm)).astype(np.float32)
    for _ in range(_MAX_SHRINKS):
        if l2_norm(clipped) <= bound:
            return clipped, norm
        clipped = (clipped.astype(np.float64) * _SHRINK).astype(np.float32)
    raise ArithmeticError(f"could not bring the norm of the update below {bound}")  # unreachable


def clip_float64(update: npt.NDArray[np.floating], *, clip: float) -> npt.NDArray[np.float64]:
    """Clip in float64 with a relative safety margin of ``2**-20`` below ``clip``.

    Used inside the distributed pipeline, where the clipped vector is rotated and scaled in float64
    before rounding; the margin absorbs the float64 error of those steps.
    """
    bound = check_clip(clip) * (1.0 - 2.0**-20)
    v = np.asarray(update, dtype=np.float64)
    norm = l2_norm(v)
    if norm <= bound:
        return v.copy()
    return v * (bound / norm)
