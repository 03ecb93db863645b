"""Shared test configuration: Hypothesis profiles and a clean environment."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci",
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    print_blob=True,
)
settings.register_profile(
    "dev",
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture(autouse=True)
def clean_environ(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Remove variables that could change behaviour (proxies, gRPC tracing, BULWARK_*)."""
    for name in list(os.environ):
        if name.startswith(("BULWARK_", "GRPC_")) or name.lower().endswith("_proxy"):
            monkeypatch.delenv(name, raising=False)
    yield
