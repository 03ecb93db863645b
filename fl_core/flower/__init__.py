"""Flower interop: Flower clients as Bulwark data owners; Bulwark's owner protections in Flower.

- :class:`NumPyClientTrainer` runs an existing Flower ``NumPyClient`` as a Bulwark
  :class:`~fl_core.types.Trainer`, so the client joins Bulwark jobs (policy, secure aggregation,
  DP, ledger) without rewriting.

Flower itself (``pip install 'bulwark[flower]'``) is imported only where a Flower object is built
or called, so ``import fl_core.flower`` works without it.
"""

from __future__ import annotations

from .adapter import CONFIG_KEYS, FlowerConfig, NumPyClientTrainer, flower_config

__all__ = ["CONFIG_KEYS", "FlowerConfig", "NumPyClientTrainer", "flower_config"]
