"""Flower clients for the interop tests: real ``flwr.client.NumPyClient`` subclasses."""

from __future__ import annotations

from typing import Any

import numpy as np
from flwr.client import NumPyClient
from flwr.server.strategy.aggregate import aggregate

TRUE_W = np.array([1.0, -2.0, 3.0, 0.5], np.float32)


class LinearNumPyClient(NumPyClient):  # type: ignore[misc]
    """Flower-style least squares: full-batch gradient descent, deterministic.

    Written as a Flower user would (parameters as a list ``[w, b]``, the learning rate and the
    epochs from the config), and it records the configs it was given.
    """

    def __init__(self, index: int) -> None:
        rng = np.random.default_rng(index)
        self.index = index
        self.examples = 20 + 7 * index
        self.x = rng.normal(size=(self.examples, 4)).astype(np.float32)
        noise = 0.1 * rng.normal(size=self.examples).astype(np.float32)
        self.y = (self.x @ TRUE_W + 0.3 * index + noise).astype(np.float32)
        self.configs: list[dict[str, Any]] = []

    def get_parameters(self, config: dict[str, Any]) -> list[np.ndarray]:
        return [np.zeros(4, np.float32), np.zeros(1, np.float32)]

    def fit(self, parameters: list[np.ndarray], config: dict[str, Any]):
        self.configs.append(dict(config))
        w, b = parameters[0].copy(), parameters[1].copy()
        lr = float(config.get("learning-rate", 0.05))
        for _ in range(5 * int(config.get("local-epochs", 1))):
            err = self.x @ w + b - self.y
            w = (w - lr * (self.x.T @ err) / len(err)).astype(np.float32)
            b = (b - lr * err.mean(keepdims=True)).astype(np.float32)
        loss = float(((self.x @ w + b - self.y) ** 2).mean())
        return [w, b], self.examples, {"loss": loss, "note": "flower allows strings"}

    def evaluate(self, parameters: list[np.ndarray], config: dict[str, Any]):
        err = self.x @ parameters[0] + parameters[1] - self.y
        return float((err**2).mean()), self.examples, {"mae": float(np.abs(err).mean())}


def flower_fedavg(
    clients: list[LinearNumPyClient], rounds: int, config: dict[str, Any]
) -> list[list[np.ndarray]]:
    """An independent FedAvg of the same clients: Flower's own weighted ``aggregate``.

    Returns the global parameters after each round.
    """
    params = clients[0].get_parameters({})
    history = []
    for rnd in range(1, rounds + 1):
        results = [
            c.fit([p.copy() for p in params], {**config, "server-round": rnd}) for c in clients
        ]
        params = aggregate([(p, n) for p, n, _ in results])
        history.append([np.asarray(p) for p in params])
    return history


def numpy_client_app(mods: list[Any] | None = None):  # -> flwr.clientapp.ClientApp
    """A legacy Flower ClientApp of LinearNumPyClients, one per ``partition-id``."""
    from flwr.clientapp import ClientApp

    def client_fn(context):
        return LinearNumPyClient(int(context.node_config["partition-id"])).to_client()

    return ClientApp(client_fn=client_fn, mods=mods or [])
