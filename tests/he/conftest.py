"""Shared fixtures for the he tests: owner keys, one key holder per module, data sets."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sklearn.datasets import load_breast_cancer, load_diabetes

import he

OWNERS = tuple(f"hospital-{i}" for i in range(5))


def raw_public(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


@pytest.fixture(scope="module")
def owner_keys() -> dict[str, Ed25519PrivateKey]:
    return {owner: Ed25519PrivateKey.generate() for owner in OWNERS}


@pytest.fixture(scope="module")
def enrolment(owner_keys: dict[str, Ed25519PrivateKey]) -> dict[str, bytes]:
    return {owner: raw_public(key) for owner, key in owner_keys.items()}


@pytest.fixture(scope="module")
def keyholder(enrolment: dict[str, bytes]) -> he.KeyHolder:
    return he.KeyHolder.generate(min_contributors=3, enrolment=enrolment)


@pytest.fixture(scope="module")
def public(keyholder: he.KeyHolder) -> he.PublicContext:
    # What owners and the coordinator get: the published bytes, loaded and checked.
    return he.PublicContext.from_bytes(keyholder.public_context().to_bytes())


@pytest.fixture(scope="module")
def diabetes() -> tuple[np.ndarray, list[str]]:
    data = load_diabetes()
    table = np.column_stack([data.data, data.target])
    return table, [*data.feature_names, "y"]


@pytest.fixture(scope="module")
def breast_cancer() -> tuple[np.ndarray, list[str]]:
    data = load_breast_cancer()
    names = [n.replace(" ", "_") for n in data.feature_names]
    return np.column_stack([data.data, data.target.astype(np.float64)]), [*names, "label"]


Contribute = Callable[..., bytes]


@pytest.fixture(scope="module")
def contribute(public: he.PublicContext, owner_keys: dict[str, Ed25519PrivateKey]) -> Contribute:
    """Encrypt one owner's table for job "job-1", round 0 unless told otherwise."""

    def run(
        owner: str,
        table: np.ndarray,
        spec: he.StatsSpec,
        *,
        job_id: str = "job-1",
        round: int = 0,
        min_contributors: int = 2,
        context: he.PublicContext | None = None,
        attempt: int = 1,
    ) -> bytes:
        return he.encrypt_statistics(
            context or public,
            table,
            spec=spec,
            job_id=job_id,
            round=round,
            owner_id=owner,
            signing_key=owner_keys[owner],
            min_contributors=min_contributors,
            attempt=attempt,
        )

    return run
