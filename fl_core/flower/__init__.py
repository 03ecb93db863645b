"""Flower interop: Flower clients as Bulwark data owners; Bulwark's owner protections in Flower.

- :class:`NumPyClientTrainer` (``adapter.py``) runs an existing Flower ``NumPyClient`` as a
  Bulwark :class:`~fl_core.types.Trainer`, so the client joins Bulwark jobs (policy, secure
  aggregation, DP, ledger) without rewriting.
- :class:`OwnerMod` (``mod.py``) is a Flower client mod that gives a Flower app the owner's
  policy check, its privacy-ledger charge and client-level DP computed from the owner's own job.

Flower itself (``pip install 'bulwark[flower]'``) is imported only where a Flower object is built
or called, so ``import fl_core.flower`` works without it.
"""

from __future__ import annotations

from .adapter import CONFIG_KEYS, FlowerConfig, NumPyClientLike, NumPyClientTrainer, flower_config
from .clientapp import ClientAppClient, client_app_trainer
from .mod import DP_MODES, RELEASES_KEY, OwnerMod

__all__ = [
    "CONFIG_KEYS",
    "DP_MODES",
    "ClientAppClient",
    "RELEASES_KEY",
    "FlowerConfig",
    "NumPyClientLike",
    "NumPyClientTrainer",
    "OwnerMod",
    "client_app_trainer",
    "flower_config",
]
