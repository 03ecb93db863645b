"""What every configuration table shares: the rule helper and the named choices."""

from __future__ import annotations

from ..errors import ConfigError

DEFAULT_ROUNDS = 3
DEFAULT_STAGE_TIMEOUT_S = 120.0
DEFAULT_CHUNK_BYTES = 1 << 20
DEFAULT_MAX_PAYLOAD_BYTES = 2 << 30
DEFAULT_MAX_HEADER_BYTES = 8 << 20

JOB_KINDS = ("train", "stats")
STRATEGIES = ("fedavg", "fedavgm", "fedprox", "fedadam", "fedyogi", "fedadagrad")
AGGREGATIONS = ("mean", "secagg", "he")
PARTITIONS = ("iid", "dirichlet", "quantity_skew")
OPTIMIZERS = ("sgd", "adam")


def _require(ok: bool, where: str, allowed: str, value: object) -> None:
    if not ok:
        raise ConfigError(f"{where} = {value!r} is not allowed; expected {allowed}")
