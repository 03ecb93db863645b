"""A Flower ``NumPyClient`` as a Bulwark data owner: :class:`NumPyClientTrainer`.

Flower client code (``get_parameters``, ``fit``, ``evaluate`` on lists of numpy arrays) moves to
Bulwark without rewriting: wrap the client in :class:`NumPyClientTrainer` and pass it as the
``trainer`` of a :class:`fl_core.Client`. The client then takes part in Bulwark jobs under the
owner's protections (its policy, secure aggregation, DP and its privacy ledger), which run on the
Bulwark side of the adapter, on what ``fit`` returned, exactly as for any other
:class:`fl_core.types.Trainer`.

Conversions, both ways checked:

- Flower's parameters are an ordered list of arrays; Bulwark's ``Weights`` are named float32
  arrays. Names are ``names`` when given (for example a torch model's ``state_dict`` keys),
  else ``param_0``, ``param_1``, ... in list order.
- Parameters that the client hands out in another real dtype (float64, float16, integer
  buffers such as BatchNorm's ``num_batches_tracked``) travel as float32 and are handed back to
  the client in the dtype of its own initial parameters (integers rounded to the nearest).
- The round's :class:`fl_core.types.FitConfig` reaches ``fit`` as Flower's config dictionary
  with the keys of :data:`CONFIG_KEYS` (``server-round``, ``local-epochs``, ...), plus the
  fixed ``config`` given to the adapter.
- Metrics that are not real numbers (Flower allows strings and bytes) are not reported: Bulwark's
  metrics are floats.

Whatever the client returns is checked before Bulwark uses it (count, shapes, finite values, an
example count >= 0), and a mismatch raises :class:`fl_core.errors.ConfigError` naming what is
wrong; a non-finite result raises ``LocalTrainingFailed`` so nothing leaves the owner.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from ..client.pipeline import LocalTrainingFailed
from ..errors import ConfigError
from ..types import EvaluateResult, FitConfig, FitResult, Metrics, Weights

__all__ = ["CONFIG_KEYS", "FlowerConfig", "NumPyClientLike", "NumPyClientTrainer", "flower_config"]

FlowerConfig = dict[str, bool | bytes | float | int | str]
"""Flower's config dictionary (``dict[str, Scalar]``)."""


class NumPyClientLike(Protocol):
    """The three methods of :class:`flwr.client.NumPyClient` that training uses."""

    def get_parameters(self, config: FlowerConfig) -> Any:
        """The initial parameters, a list of numpy arrays."""
        ...

    def fit(self, parameters: list[npt.NDArray[Any]], config: FlowerConfig) -> Any:
        """``(new parameters, num_examples, metrics)``."""
        ...

    def evaluate(self, parameters: list[npt.NDArray[Any]], config: FlowerConfig) -> Any:
        """``(loss, num_examples, metrics)``."""
        ...


CONFIG_KEYS = {
    "server-round": "round",
    "local-epochs": "epochs",
    "batch-size": "batch_size",
    "learning-rate": "learning_rate",
    "momentum": "momentum",
    "weight-decay": "weight_decay",
    "optimizer": "optimizer",
    "proximal-mu": "proximal_mu",
    "seed": "seed",
    "max-steps": "max_steps",
}
"""Flower config key -> :class:`fl_core.types.FitConfig` field, as ``fit`` receives them."""


def flower_config(config: FitConfig) -> FlowerConfig:
    """The round's training settings as a Flower config dictionary (keys of :data:`CONFIG_KEYS`)."""
    out: FlowerConfig = {}
    for key, attr in CONFIG_KEYS.items():
        value = getattr(config, attr)
        out[key] = value
    return out


class NumPyClientTrainer:
    """Runs a Flower ``NumPyClient`` as a Bulwark :class:`~fl_core.types.Trainer`.

    Args:
        client: the Flower client object (any object with ``get_parameters``, ``fit`` and
            ``evaluate`` as :class:`flwr.client.NumPyClient` defines them).
        names: parameter names in the order of the client's parameter list (default
            ``param_0``, ``param_1``, ...).
        config: extra Flower config entries passed to every ``get_parameters``, ``fit`` and
            ``evaluate`` call (the owner's own settings; the round's keys take precedence).
        fit_config: builds the Flower config of a round from Bulwark's ``FitConfig`` (default
            :func:`flower_config`), for clients that expect other keys.

    Raises:
        ConfigError: ``names`` do not match the client's parameters, or the client's initial
            parameters are not real-valued arrays with finite values.
    """

    def __init__(
        self,
        client: NumPyClientLike,
        *,
        names: Sequence[str] | None = None,
        config: Mapping[str, bool | bytes | float | int | str] | None = None,
        fit_config: Callable[[FitConfig], FlowerConfig] = flower_config,
    ) -> None:
        self._client = client
        self._extra: FlowerConfig = dict(config or {})
        self._fit_config = fit_config
        initial = _as_list(client.get_parameters(config=dict(self._extra)), "get_parameters")
        if names is None:
            names = [f"param_{i}" for i in range(len(initial))]
        names = list(names)
        if len(names) != len(initial) or len(set(names)) != len(names):
            raise ConfigError(
                f"names: {len(initial)} distinct names needed for the client's {len(initial)} "
                f"parameters, got {names[:8]}"
            )
        self._names = tuple(names)
        self._dtypes = tuple(a.dtype for a in initial)
        self._shapes = tuple(a.shape for a in initial)
        self._initial = self._to_weights(initial, "get_parameters")

    @property
    def client(self) -> NumPyClientLike:
        """The wrapped Flower client."""
        return self._client

    @property
    def names(self) -> tuple[str, ...]:
        """Parameter names, in the client's list order."""
        return self._names

    def initial_weights(self) -> Weights:
        """The client's ``get_parameters()``, as float32 copies."""
        return {name: array.copy() for name, array in self._initial.items()}

    def fit(self, weights: Weights, config: FitConfig) -> FitResult:
        """Call the client's ``fit`` from ``weights``; return its new weights and example count.

        Raises:
            ConfigError: ``weights`` do not have the client's layout, or ``fit`` returned
                something that is not (parameters of that layout, an int >= 0, a dict).
            LocalTrainingFailed: ``fit`` returned NaN or infinite parameters.
        """
        parameters = self._to_client(weights)
        cfg = {**self._extra, **self._fit_config(config)}
        out = self._client.fit(parameters, cfg)
        if not isinstance(out, tuple | list) or len(out) != 3:
            raise ConfigError("NumPyClient.fit must return (parameters, num_examples, metrics)")
        new, num_examples, metrics = out
        arrays = _as_list(new, "fit")
        return FitResult(
            weights=self._to_weights(arrays, "fit"),
            num_examples=_count(num_examples, "fit"),
            metrics=_metrics(metrics, "fit"),
        )

    def evaluate(self, weights: Weights) -> EvaluateResult:
        """Call the client's ``evaluate`` on ``weights``.

        Raises:
            ConfigError: ``evaluate`` returned something that is not (a finite float loss, an
                int >= 0, a dict).
        """
        out = self._client.evaluate(self._to_client(weights), dict(self._extra))
        if not isinstance(out, tuple | list) or len(out) != 3:
            raise ConfigError("NumPyClient.evaluate must return (loss, num_examples, metrics)")
        loss, num_examples, metrics = out
        if isinstance(loss, bool) or not isinstance(loss, int | float | np.floating):
            raise ConfigError(f"NumPyClient.evaluate returned a loss of type {type(loss)}")
        if not math.isfinite(float(loss)):
            raise ConfigError(f"NumPyClient.evaluate returned a non-finite loss {loss}")
        return EvaluateResult(
            num_examples=_count(num_examples, "evaluate"),
            loss=float(loss),
            metrics=_metrics(metrics, "evaluate"),
        )

    def _to_weights(self, arrays: list[npt.NDArray[Any]], where: str) -> Weights:
        """Check a parameter list against the client's layout and convert it to float32."""
        if len(arrays) != len(self._names):
            raise ConfigError(
                f"NumPyClient.{where} returned {len(arrays)} arrays; the model has "
                f"{len(self._names)}"
            )
        out: Weights = {}
        for name, shape, array in zip(self._names, self._shapes, arrays, strict=True):
            if array.shape != shape:
                raise ConfigError(
                    f"NumPyClient.{where} returned {name!r} with shape {array.shape}; "
                    f"the model has {shape}"
                )
            value = array.astype(np.float32)
            if not bool(np.isfinite(value).all()):
                raise LocalTrainingFailed(
                    f"NumPyClient.{where} returned NaN or infinite values in {name!r}"
                )
            out[name] = value
        return out

    def _to_client(self, weights: Weights) -> list[npt.NDArray[Any]]:
        """Bulwark weights as the client's list, in its own dtypes."""
        if set(weights) != set(self._names):
            raise ConfigError(
                f"weights have names {sorted(weights)[:8]}; the client has {list(self._names)[:8]}"
            )
        out: list[npt.NDArray[Any]] = []
        for name, shape, dtype in zip(self._names, self._shapes, self._dtypes, strict=True):
            array = np.asarray(weights[name])
            if array.shape != shape:
                raise ConfigError(f"weights[{name!r}] has shape {array.shape}; expected {shape}")
            if np.issubdtype(dtype, np.integer):
                array = np.rint(array)
            out.append(array.astype(dtype, copy=True))
        return out


def _as_list(arrays: object, where: str) -> list[npt.NDArray[Any]]:
    """Check that ``arrays`` is a list of real-valued numpy arrays."""
    if not isinstance(arrays, list | tuple):
        raise ConfigError(f"NumPyClient.{where} must return a list of numpy arrays")
    out = []
    for i, array in enumerate(arrays):
        if not isinstance(array, np.ndarray):
            raise ConfigError(
                f"NumPyClient.{where} returned item {i} of type {type(array).__name__}, "
                "not a numpy array"
            )
        if not (np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)):
            raise ConfigError(
                f"NumPyClient.{where} returned item {i} of dtype {array.dtype}; "
                "only real numbers can be aggregated"
            )
        out.append(array)
    return out


def _count(value: object, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 0:
        raise ConfigError(f"NumPyClient.{where} returned num_examples {value!r}; expected int >= 0")
    return int(value)


def _metrics(value: object, where: str) -> Metrics:
    """The real-valued, finite entries of a Flower metrics dictionary."""
    if not isinstance(value, dict):
        raise ConfigError(f"NumPyClient.{where} returned metrics of type {type(value).__name__}")
    out: Metrics = {}
    for key, item in value.items():
        if isinstance(item, bool) or not isinstance(item, int | float | np.number):
            continue  # strings and bytes are valid Flower metrics, but not Bulwark ones
        number = float(item)
        if math.isfinite(number):
            out[str(key)] = number
    return out
