"""Test harness: runs a SecAgg(+) round in process with scripted dropouts, and an oracle.

The oracle recomputes, with plain set logic, what the protocol must do for a dropout pattern: at
which stage it aborts, or which clients' inputs the sum contains.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from mpc import (
    ProtocolAbort,
    RingVector,
    SecAggClient,
    SecAggParams,
    SecAggResult,
    SecAggServer,
    SessionInfo,
    Stage,
)
from mpc.keys import identity_public_bytes

STAGES = tuple(Stage)
MODEL_HASH = hashlib.sha256(b"global model of round 1").digest()


@dataclass
class Round:
    """Everything one in-process round needs; responses are recorded per stage."""

    params: SecAggParams
    session: SessionInfo
    server: SecAggServer
    clients: dict[int, SecAggClient]
    identity_keys: dict[int, Ed25519PrivateKey]
    vector_length: int
    requests: dict[Stage, dict[int, Any]] = field(default_factory=dict)
    responses: dict[Stage, dict[int, Any]] = field(default_factory=dict)
    client_aborts: dict[int, ProtocolAbort] = field(default_factory=dict)


def make_round(
    params: SecAggParams,
    *,
    vector_length: int,
    seed: int = 0,
    attempt: int = 0,
    min_cohort: int = 0,
    identity_keys: dict[int, Ed25519PrivateKey] | None = None,
    server_cls: type[SecAggServer] = SecAggServer,
) -> Round:
    """Create a server and one client per participant 1..n."""
    n = params.num_clients
    keys = identity_keys or {i: Ed25519PrivateKey.generate() for i in range(1, n + 1)}
    session = SessionInfo("job-1", 1, attempt, MODEL_HASH)
    server = server_cls(
        params,
        session,
        vector_length=vector_length,
        identities={i: identity_public_bytes(k) for i, k in keys.items()},
        rng=np.random.default_rng(seed),
    )
    clients = {
        i: SecAggClient(index=i, identity_key=k, min_cohort=min_cohort) for i, k in keys.items()
    }
    return Round(params, session, server, clients, keys, vector_length)


def run_round(
    rnd: Round,
    inputs: Mapping[int, npt.NDArray[Any]],
    drop_stage: Mapping[int, int] | None = None,
) -> SecAggResult:
    """Run all five stages; client i stays silent from stage drop_stage[i] on.

    A client that aborts its part (``ProtocolAbort``) is treated as a dropout, as the stage driver
    would. Server aborts propagate.
    """
    drop = dict(drop_stage or {})
    requests: dict[int, Any] = rnd.server.start(list(rnd.clients))
    for position, stage in enumerate(STAGES):
        rnd.requests[stage] = requests
        responses: dict[int, Any] = {}
        for i, request in requests.items():
            if drop.get(i, len(STAGES)) <= position:
                continue
            client = rnd.clients[i]
            try:
                if stage is Stage.MASKED_INPUT:
                    responses[i] = client.masked_input(
                        request, vector=RingVector(inputs[i]), model_hash=rnd.session.model_hash
                    )
                else:
                    responses[i] = getattr(client, stage.value)(request)
            except ProtocolAbort as exc:
                rnd.client_aborts[i] = exc
        rnd.responses[stage] = responses
        for i, response in responses.items():
            rnd.server.check(stage, i, response)
        requests = getattr(rnd.server, stage.value)(responses)
    result: SecAggResult = requests  # type: ignore[assignment]
    return result


@dataclass(frozen=True)
class Outcome:
    """What a round must do: abort at a stage, or sum ``members``; who drops at each stage."""

    abort_stage: Stage | None
    members: tuple[int, ...]
    dropped: dict[Stage, tuple[int, ...]]


def expected_outcome(
    params: SecAggParams,
    graph: Mapping[int, tuple[int, ...]],
    drop_stage: Mapping[int, int],
) -> Outcome:
    """Return what the round must do for this dropout pattern (set logic, no cryptography)."""
    t, full = params.threshold, params.is_full_graph

    def holders(u: int, alive: set[int]) -> int:
        return len((set(graph[u]) | ({u} if full else set())) & alive)

    def alive_after(previous: set[int], position: int) -> set[int]:
        return {u for u in previous if drop_stage.get(u, len(STAGES)) > position}

    dropped: dict[Stage, tuple[int, ...]] = {}

    def outcome(stage: Stage | None, members: set[int]) -> Outcome:
        return Outcome(stage, tuple(sorted(members)), dropped)

    u0 = set(graph)
    u1 = alive_after(u0, 0)
    dropped[Stage.ADVERTISE_KEYS] = tuple(sorted(u0 - u1))
    if len(u1) < t:
        return outcome(Stage.ADVERTISE_KEYS, set())
    # Clients with fewer than t live holders refuse to share (they abort their part).
    u2 = {u for u in alive_after(u1, 1) if holders(u, u1) >= t}
    dropped[Stage.SHARE_KEYS] = tuple(sorted(u1 - u2))
    if len(u2) < t or any(holders(u, u2) < t for u in u2):
        return outcome(Stage.SHARE_KEYS, set())
    q = params.consistency_threshold
    u3 = alive_after(u2, 2)
    dropped[Stage.MASKED_INPUT] = tuple(sorted(u2 - u3))
    needed = u3 | {v for v in u2 - u3 if set(graph[v]) & u3}
    if len(u3) < max(t, q) or any(holders(u, u3) < t for u in needed):
        return outcome(Stage.MASKED_INPUT, set())
    # The consistency check needs a quorum of signers, and t holders among them for each secret.
    u4 = alive_after(u3, 3)
    dropped[Stage.CONSISTENCY_CHECK] = tuple(sorted(u3 - u4))
    if len(u4) < max(t, q) or any(holders(u, u4) < t for u in needed):
        return outcome(Stage.CONSISTENCY_CHECK, set())
    u5 = alive_after(u4, 4)
    dropped[Stage.UNMASK] = tuple(sorted(u4 - u5))
    if len(u5) < t or any(holders(u, u5) < t for u in needed):
        return outcome(Stage.UNMASK, set())
    return outcome(None, u3)


def plain_sum(
    inputs: Mapping[int, npt.NDArray[Any]], members: tuple[int, ...], ring_bits: int
) -> npt.NDArray[Any]:
    """Oracle: sum of the members' vectors as Python ints modulo 2^ring_bits."""
    length = len(next(iter(inputs.values())))
    totals = [0] * length
    for u in members:
        for j, value in enumerate(inputs[u].tolist()):
            totals[j] += int(value)
    dtype = np.uint32 if ring_bits == 32 else np.uint64
    return np.array([v % (1 << ring_bits) for v in totals], dtype=dtype)


def advance(
    rnd: Round,
    until: Stage,
    inputs: Mapping[int, npt.NDArray[Any]] | None = None,
    drop_stage: Mapping[int, int] | None = None,
) -> dict[int, Any]:
    """Run the honest stages before ``until`` and return the coordinator's requests for it."""
    drop = dict(drop_stage or {})
    vectors = inputs or {
        i: np.zeros(rnd.vector_length, dtype=np.uint32 if rnd.params.ring_bits == 32 else np.uint64)
        for i in rnd.clients
    }
    requests: dict[int, Any] = rnd.server.start(list(rnd.clients))
    for position, stage in enumerate(STAGES):
        if stage is until:
            return requests
        responses: dict[int, Any] = {}
        for i, request in requests.items():
            if drop.get(i, len(STAGES)) <= position:
                continue
            client = rnd.clients[i]
            if stage is Stage.MASKED_INPUT:
                responses[i] = client.masked_input(
                    request, vector=RingVector(vectors[i]), model_hash=rnd.session.model_hash
                )
            else:
                responses[i] = getattr(client, stage.value)(request)
        rnd.responses[stage] = responses
        requests = getattr(rnd.server, stage.value)(responses)
    raise AssertionError("unreachable: `until` is a stage")
