"""OwnerMod inside Flower's own simulation engine (``flwr.simulation.run_simulation``).

Three Flower owners, two rounds, a Flower ServerApp with Flower's FedAvg whose fit config claims
``clipping_norm = 1e6`` (what Flower's client-side DP wrapper would send). Each owner's release
must be the owner's own clip and noise; each owner's ledger is charged per round; the owner
whose cap covers one round refuses the second, and Flower aggregates the other two.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from flwr.clientapp import ClientApp
from flwr.common import ndarrays_to_parameters, parameters_to_ndarrays
from flwr.server import ServerApp, ServerAppComponents, ServerConfig
from flwr.server.strategy import FedAvg
from flwr.simulation import run_simulation
from support import job_text
from support_flower import LinearNumPyClient

from fl_core.client.ledger import PrivacyLedger
from fl_core.config import parse_job
from fl_core.dp.central import add_central_noise
from fl_core.dp.clipping import clip_update
from fl_core.dp.noise import csprng
from fl_core.flower import OwnerMod

pytestmark = [
    pytest.mark.integration,
    pytest.mark.filterwarnings("ignore::FutureWarning:ray.*"),
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
    # Ray leaves /dev/null handles of the processes it starts to the garbage collector
    pytest.mark.filterwarnings("ignore::ResourceWarning"),
    pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning"),
]

OWNERS = 3
ROUNDS = 2
CLIP = 0.1
Z = 0.8
SEED = bytes(range(16))
DP = f'[dp]\nmode = "central"\nnoise_multiplier = {Z}\nclip = {CLIP}\n'
START = [np.full(4, 0.1, np.float32), np.zeros(1, np.float32)]


class RecordingFedAvg(FedAvg):  # type: ignore[misc]
    """Flower's FedAvg that records what it sent and what came back."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.sent: dict[int, list[np.ndarray]] = {}
        self.received: dict[int, list[tuple[np.ndarray, int]]] = {}
        self.failures: dict[int, list[str]] = {}

    def configure_fit(self, server_round, parameters, client_manager):  # type: ignore[no-untyped-def]
        self.sent[server_round] = parameters_to_ndarrays(parameters)
        return super().configure_fit(server_round, parameters, client_manager)

    def aggregate_fit(self, server_round, results, failures):  # type: ignore[no-untyped-def]
        self.received[server_round] = [
            (
                np.concatenate([a.reshape(-1) for a in parameters_to_ndarrays(r.parameters)]),
                r.num_examples,
            )
            for _, r in results
        ]
        self.failures[server_round] = [str(f) for f in failures]
        return super().aggregate_fit(server_round, results, failures)


def _flat(arrays: list[np.ndarray]) -> np.ndarray:
    return np.concatenate([a.reshape(-1) for a in arrays])


def _expected_release(index: int, start: list[np.ndarray]) -> np.ndarray:
    """What owner ``index`` must release from ``start``: its own clip, then its own noise."""
    new, _, _ = LinearNumPyClient(index).fit([a.copy() for a in start], {})
    update = (_flat(new).astype(np.float64) - _flat(start)).astype(np.float32)
    clipped, _ = clip_update(update, clip=CLIP)
    noised = add_central_noise(clipped, clip=CLIP, noise_multiplier=Z, rng=csprng(seed=SEED))
    return (_flat(start).astype(np.float64) + noised).astype(np.float32)


def test_owner_mod_in_flowers_simulation_engine(tmp_path: Path) -> None:
    # Prepare: owners 0 and 1 can afford both rounds, owner 2 only one
    job = parse_job(job_text(rounds=ROUNDS, clients=OWNERS, min_clients=OWNERS, extra=DP))
    for i, cap in enumerate([100.0, 100.0, 6.0]):
        with PrivacyLedger(tmp_path / f"owner-{i}.db") as ledger:
            ledger.set_cap("synthetic", epsilon=cap, delta=1e-5)
    ledgers = str(tmp_path)
    mod = OwnerMod(
        job=job,
        ledger=lambda ctx: Path(ledgers) / f"owner-{ctx.node_config['partition-id']}.db",
        rng=lambda: csprng(seed=SEED),  # fixed here so that the test can recompute each release
    )

    def client_fn(context):  # type: ignore[no-untyped-def]
        return LinearNumPyClient(int(context.node_config["partition-id"])).to_client()

    strategy = RecordingFedAvg(
        fraction_fit=1.0,
        fraction_evaluate=0.0,
        min_fit_clients=OWNERS,
        min_available_clients=OWNERS,
        initial_parameters=ndarrays_to_parameters(START),
        on_fit_config_fn=lambda rnd: {"clipping_norm": 1e6, "server-round": rnd},
    )

    def server_fn(context):  # type: ignore[no-untyped-def]
        return ServerAppComponents(strategy=strategy, config=ServerConfig(num_rounds=ROUNDS))

    # Execute
    run_simulation(
        server_app=ServerApp(server_fn=server_fn),
        client_app=ClientApp(client_fn=client_fn, mods=[mod]),
        num_supernodes=OWNERS,
        backend_config={
            "client_resources": {"num_cpus": 1, "num_gpus": 0.0},
            "init_args": {"num_cpus": 2, "include_dashboard": False},
        },
    )

    # Assert: round 1, every owner's release is its own clip and noise, with weight 1
    want = [_expected_release(i, strategy.sent[1]) for i in range(OWNERS)]
    got = strategy.received[1]
    assert sorted(n for _, n in got) == [1] * OWNERS
    matched = sorted(
        next(i for i, w in enumerate(want) if np.allclose(g, w, rtol=0, atol=1e-6)) for g, _ in got
    )
    assert matched == list(range(OWNERS))
    # round 2: owner 2's ledger refused; Flower averaged the two others uniformly
    assert len(strategy.received[2]) == 2 and len(strategy.failures[2]) == 1
    assert "BudgetExceeded" in strategy.failures[2][0]
    want2 = [_expected_release(i, strategy.sent[2]) for i in range(2)]
    for g, _ in strategy.received[2]:
        assert any(np.allclose(g, w, rtol=0, atol=1e-6) for w in want2)
    for i, rounds in enumerate([[1, 2], [1, 2], [1]]):
        with PrivacyLedger(tmp_path / f"owner-{i}.db") as ledger:
            assert [e.round for e in ledger.entries("synthetic")] == rounds
