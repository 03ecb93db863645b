"""SecAgg / SecAgg+ benchmark: Bulwark's ``mpc`` against Flower 1.42's SecAgg+ and the bare PRG.

For each cell (vector length d, cohort n, graph, dropout rate) this script measures, in one
process and side by side:

* ``bulwark``: a complete round of ``mpc.SecAggServer`` with n real ``mpc.SecAggClient`` objects
  (X25519, Ed25519 signatures, HKDF, AES-GCM envelopes, Shamir over GF(2^256 + 297), AES-256-CTR
  masks). Clients that drop do so after sharing keys (they send no masked input), the worst case
  for the coordinator. The unmasked sum is checked to be exact in every round. Coordinator time
  is the sum of ``start`` and the five stage methods; client time is quantization plus the five
  stage methods of one client, the median over the clients that ran all five stages (clients are
  symmetric; every client has to run anyway to give the coordinator real inputs). The
  consistency check (Bonawitz et al. 2017, round 3 of the active variant) is one of those stages:
  ``cc coord`` is the coordinator's CONSISTENCY_CHECK stage (verifying the signatures and
  building the unmask requests), ``cc client`` a client's signing of U3 plus its verification of
  the relayed signatures (which runs inside UNMASK; replayed and timed apart on one client's
  request), and ``cc %`` their share of coordinator plus client time.
* ``flower``: the same per-client and per-coordinator work rebuilt from
  ``flwr.common.secure_aggregation`` and ``flwr.supercore.primitives.asymmetric`` as
  ``secaggplus_mod.py`` and ``secaggplus_workflow.py`` (flwr 1.42) call them: P-384 ECDH key
  pairs, pycryptodome Shamir shares of the seed and of the PEM private key, Fernet envelopes,
  ``pseudo_rand_gen`` masks, quantization, int64 vectors. One client is run per (n, d, graph)
  (its work does not depend on the dropout rate). The coordinator gets real shares of real keys;
  its masked vectors are random int64 arrays of the right shape, since its work does not depend on
  their values. Its unmasking follows the workflow exactly, including combining *all* collected
  shares and expanding masks for every neighbour of a dropped client. Cells where Flower would
  take more than ``--flower-budget`` seconds (estimated from a calibration at start) are skipped
  and marked so.
* ``bare PRG``: the AES-256-CTR keystream of (neighbours + 1) masks of d words, written into one
  warm cache-sized buffer and discarded: the floor for a client's masking. ``mask s`` is
  ``mpc.masks.apply_masks`` as a client runs it (fresh expander, self mask and signed pairwise
  masks added into a new vector); ``m/PRG`` is their ratio. ``stage2 s`` is the whole
  MASKED_INPUT stage of a client (also opening its envelopes and checking the request).

Columns: coord s = coordinator seconds per round; client s = one client's seconds per round
(median); x coord, x client = Flower's time over Bulwark's. Rounds that take longer than
``--max-round-seconds`` run once, others ``--repeats`` times (median).

Parameters: the complete graph uses t = ceil(0.7 n) (fcp's full-graph rule for a 30% dropout
tolerance); "finder" uses ``find_parameters(num_clients=n, dropout_rate=0.3, corrupt_rate=0.05)``.
Quantization: clip 1.0, 16 bits for Bulwark (n * (2^16 - 1) < 2^32); Flower's defaults
(clipping range 8.0, quantization range 2^22, modulus 2^32).

Run:  .venv/bin/python benchmarks/secagg.py --quick     (a few minutes)
      .venv/bin/python benchmarks/secagg.py             (full grid, well under an hour)
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import json
import math
import os
import platform
import secrets
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey  # noqa: E402
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes  # noqa: E402

from mpc import (  # noqa: E402
    RingVector,
    SecAggClient,
    SecAggParams,
    SecAggServer,
    SessionInfo,
    Stage,
    find_parameters,
    quantize,
)
from mpc.keys import compute_session_id, identity_public_bytes  # noqa: E402
from mpc.masks import apply_masks  # noqa: E402
from mpc.prg import CHUNK_WORDS, MaskExpander  # noqa: E402
from mpc.secagg._checks import check_consistency_signatures  # noqa: E402
from mpc.secagg.messages import session_context  # noqa: E402

DEFAULT_OUTPUT = ROOT / "benchmarks" / "results" / "secagg.json"
QUICK_OUTPUT = ROOT / "benchmarks" / "results" / "secagg_quick.json"
DROPOUT_TOLERANCE = 0.3
CORRUPT_RATE = 0.05
BITS, CLIP = 16, 1.0
PAPER_JAVA = {"n": 500, "d": 100_000, "dropout": 0.3, "client_s": 0.85, "server_s": 143.0}
FLOWER_ANCHOR = {"n": 50, "d": 1_000_000, "graph": "full", "client_s": 0.54, "server_s": 10.8}


def _now() -> float:
    return time.perf_counter()


def params_for(n: int, graph: str) -> SecAggParams:
    """The round parameters of a cell: complete graph or the finder's sparse graph."""
    if graph == "full":
        return SecAggParams(
            num_clients=n,
            threshold=math.ceil((1 - DROPOUT_TOLERANCE) * n),
            degree=n - 1,
            dropout_rate=DROPOUT_TOLERANCE,
            corrupt_rate=CORRUPT_RATE,
        )
    return find_parameters(num_clients=n, dropout_rate=DROPOUT_TOLERANCE, corrupt_rate=CORRUPT_RATE)


# -- Bulwark ---------------------------------------------------------------------------------------


def _completes(params: SecAggParams, graph: dict[int, tuple[int, ...]], dropped: set[int]) -> bool:
    """Whether a round whose clients ``dropped`` leave after sharing keys can finish."""
    t, full = params.threshold, params.is_full_graph
    survivors = set(graph) - dropped
    needed = survivors | {v for v in dropped if set(graph[v]) & survivors}
    return len(survivors) >= t and all(
        len((set(graph[u]) | ({u} if full else set())) & survivors) >= t for u in needed
    )


def bulwark_round(params: SecAggParams, d: int, dropout: float, seed: int) -> dict[str, Any]:
    """Run one complete round with n real clients; return coordinator and client timings."""
    n = params.num_clients
    wall = _now()
    identity_keys = {i: Ed25519PrivateKey.generate() for i in range(1, n + 1)}
    identities = {i: identity_public_bytes(k) for i, k in identity_keys.items()}
    session = SessionInfo("bench", 1, seed, hashlib.sha256(b"model %d" % seed).digest())
    server = SecAggServer(
        params,
        session,
        vector_length=d,
        identities=identities,
    )
    clients = {i: SecAggClient(index=i, identity_key=k) for i, k in identity_keys.items()}
    update = np.random.default_rng(seed).normal(0.0, 0.1, d).astype(np.float32)
    rounding = np.random.default_rng(secrets.randbits(128))
    started = _now()
    x = quantize(update, clip=CLIP, bits=BITS, ring_bits=32, rng=rounding)
    quantize_s = _now() - started
    client_s: dict[int, float] = dict.fromkeys(clients, quantize_s)
    client_stage_s: dict[str, dict[int, float]] = {stage.value: {} for stage in Stage}
    mask_s: list[float] = []
    server_s: dict[str, float] = {}
    gc.collect()
    started = _now()
    requests: dict[int, Any] = server.start(list(clients))
    server_s["start"] = _now() - started
    dropped: set[int] = set()
    draws = 0
    adverts: dict[int, Any] = {}
    verify_s = 0.0
    for stage in Stage:
        if stage is Stage.MASKED_INPUT:
            rng = np.random.default_rng(seed)
            while True:  # a dropout pattern the parameters tolerate (sparse graphs can be unlucky)
                draws += 1
                dropped = set(
                    rng.choice(sorted(clients), size=round(dropout * n), replace=False).tolist()
                )
                if _completes(params, dict(server.neighbours), dropped):
                    break
        if stage is Stage.UNMASK:
            verify_s = _client_signature_check(params, session, d, identities, adverts, requests)
        responses: dict[int, Any] = {}
        for i, request in requests.items():
            if i in dropped:
                continue
            started = _now()
            if stage is Stage.MASKED_INPUT:
                responses[i] = clients[i].masked_input(
                    request, vector=x, model_hash=session.model_hash
                )
                mask_s.append(_now() - started)
            else:
                responses[i] = getattr(clients[i], stage.value)(request)
            client_stage_s[stage.value][i] = _now() - started
            client_s[i] += _now() - started
        if stage is Stage.ADVERTISE_KEYS:
            adverts = dict(responses)
        started = _now()
        requests = getattr(server, stage.value)(responses)
        server_s[stage.value] = _now() - started
        if stage is Stage.MASKED_INPUT:
            upload = next(iter(responses.values())).masked.nbytes / d
            del responses
            gc.collect()
    result: Any = requests
    expected = (x.astype(np.uint64) * len(result.survivors) % (1 << 32)).astype(np.uint32)
    if not np.array_equal(result.total, expected) or set(result.survivors) & dropped:
        raise AssertionError("the unmasked sum is wrong")
    survivors = [i for i in clients if i not in dropped]
    client_stages = {
        stage: statistics.median(times[i] for i in survivors if i in times)
        for stage, times in client_stage_s.items()
        if any(i in times for i in survivors)
    }
    return {
        "server_s": sum(server_s.values()),
        "server_stages_s": server_s,
        "client_stages_s": client_stages,
        "consistency_server_s": server_s.get("consistency_check", 0.0),
        "consistency_client_s": client_stages.get("consistency_check", 0.0),
        "consistency_verify_s": verify_s,
        "client_s": statistics.median(client_s[i] for i in survivors),
        "client_masked_input_stage_s": statistics.median(mask_s),
        "upload_bytes_per_param": upload,
        "dropped": len(dropped),
        "dropout_draws": draws,
        "exact": True,
        "wall_s": _now() - wall,
    }


def _client_signature_check(
    params: SecAggParams,
    session: SessionInfo,
    d: int,
    identities: dict[int, bytes],
    adverts: dict[int, Any],
    requests: dict[int, Any],
) -> float:
    """Seconds one client spends verifying the relayed consistency signatures (inside UNMASK).

    Replays the check on the first unmask request with the session id and identities recomputed
    from public values, the median of three runs.
    """
    n = params.num_clients
    context = session_context(
        session,
        num_clients=n,
        threshold=params.threshold,
        degree=params.degree,
        ring_bits=params.ring_bits,
        vector_length=d,
        participants=tuple(range(1, n + 1)),
        consistency_threshold=params.consistency_threshold,
    )
    session_id = compute_session_id(
        context=context,
        public_keys={u: (a.encryption_key, a.masking_key) for u, a in adverts.items()},
    )
    request = requests[min(requests)]
    times = []
    for _ in range(3):
        started = _now()
        check_consistency_signatures(
            request.signatures,
            cohort=request.cohort,
            session_id=session_id,
            context=context,
            identities=identities,
            quorum=params.consistency_threshold,
        )
        times.append(_now() - started)
    return statistics.median(times)


def masking_and_bare_prg(neighbours: int, d: int, repeats: int = 7) -> dict[str, float]:
    """Client masking against the bare PRG for (neighbours + 1) masks of d words, alternately.

    ``masking_s`` is ``mpc.masks.apply_masks`` as a client runs it: a fresh expander (buffer
    allocation), the self mask and the signed pairwise masks added into a new vector.
    ``bare_prg_s`` is only the AES-256-CTR keystream of the same number of keys, written chunk by
    chunk into one warm cache-sized buffer (no additions): the floor. The two alternate
    ``repeats`` times; the ratio is the median of the paired ratios, so
    that load from other processes on the machine affects both sides of each pair alike.
    """
    x = RingVector(np.zeros(d, dtype=np.uint32))
    keys = [secrets.token_bytes(32) for _ in range(neighbours + 1)]
    pairwise = dict(enumerate(keys[1:], start=2))
    chunk = min(CHUNK_WORDS, d) * 4
    zeros, buffer = bytes(chunk), bytearray(chunk + 15)
    masking, bare = [], []
    for _ in range(repeats):
        started = _now()
        for key in keys:
            encryptor = Cipher(algorithms.AES(key), modes.CTR(bytes(16))).encryptor()
            for _ in range(0, d * 4, chunk):
                encryptor.update_into(zeros, buffer)
        bare.append(_now() - started)
        started = _now()
        apply_masks(
            x,
            index=1,
            self_key=keys[0],
            pairwise_keys=pairwise,
            expander=MaskExpander(length=d, ring_bits=32),
        )
        masking.append(_now() - started)
    return {
        "masking_s": statistics.median(masking),
        "bare_prg_s": statistics.median(bare),
        "ratio": statistics.median(m / b for m, b in zip(masking, bare, strict=True)),
    }


# -- Flower ----------------------------------------------------------------------------------------


class Flower:
    """Flower 1.42's SecAgg+ client and coordinator work, from its own functions."""

    CLIPPING_RANGE = 8.0
    QUANTIZATION_RANGE = 1 << 22
    MODULUS_RANGE = 1 << 32
    MAX_WEIGHT = 1000.0

    def __init__(self) -> None:
        from flwr.common import (
            bytes_to_ndarray,
            ndarray_to_bytes,
            ndarrays_to_parameters,
            parameters_to_ndarrays,
        )
        from flwr.common.secure_aggregation import (
            ndarrays_arithmetic,
            quantization,
            secaggplus_utils,
        )
        from flwr.common.secure_aggregation.crypto import shamir, symmetric_encryption
        from flwr.supercore.primitives import asymmetric

        self.sh, self.se, self.ar = shamir, symmetric_encryption, ndarrays_arithmetic
        self.qz, self.su, self.asym = quantization, secaggplus_utils, asymmetric
        self.to_bytes, self.from_bytes = ndarray_to_bytes, bytes_to_ndarray
        self.to_params, self.from_params = ndarrays_to_parameters, parameters_to_ndarrays
        self.calibration: dict[str, float] = {}

    def keypair(self) -> tuple[bytes, bytes]:
        sk, pk = self.asym.generate_key_pairs()
        return self.asym.private_key_to_bytes(sk), self.asym.public_key_to_bytes(pk)

    def calibrate(self) -> None:
        """Time the operations whose counts decide whether a cell fits the budget."""
        sk1, _ = self.keypair()
        seed = os.urandom(32)
        c: dict[str, float] = {}
        started = _now()
        pem_shares = self.sh.create_shares(sk1, 10, 40)
        c["split_pem_per_tk"] = (_now() - started) / (10 * 40)
        started = _now()
        seed_shares = self.sh.create_shares(seed, 10, 40)
        c["split_seed_per_tk"] = (_now() - started) / (10 * 40)
        for name, shares in (("pem", pem_shares), ("seed", seed_shares)):
            small, large = 10, 40
            started = _now()
            self.sh.combine_shares(shares[:small])
            t_small = _now() - started
            started = _now()
            self.sh.combine_shares(shares[:large])
            t_large = _now() - started
            c[f"combine_{name}_exponent"] = math.log(t_large / t_small) / math.log(large / small)
            c[f"combine_{name}_at_40"] = t_large
        started = _now()
        self.su.pseudo_rand_gen(os.urandom(32), self.MODULUS_RANGE, [(100_000,)])
        c["prg_per_word"] = (_now() - started) / 100_000
        self.calibration = c

    def estimate(self, n: int, holders: int, t: int, d: int, dropout: float) -> float:
        """Rough seconds for one cell: share preparation, one client, and the coordinator."""
        c = self.calibration
        split = (c["split_pem_per_tk"] + c["split_seed_per_tk"]) * t * holders
        dead = round(dropout * n)
        alive_holders = max(2, round(holders * (1 - dropout)))

        def combine(name: str) -> float:
            return (
                c[f"combine_{name}_at_40"] * (alive_holders / 40) ** c[f"combine_{name}_exponent"]
            )

        prg = c["prg_per_word"] * d
        client = split + holders * prg * 1.5
        server = (n - dead) * (combine("seed") + prg) + dead * (combine("pem") + holders * prg)
        return n * split + client + server

    # -- one client (secaggplus_mod.py: _setup, _share_keys, _collect_masked_vectors, _unmask) --

    def client(self, holders: int, t: int, d: int) -> dict[str, float]:
        """Run one client with ``holders - 1`` neighbours; return seconds per stage."""
        se, asym, su, ar = self.se, self.asym, self.su, self.ar
        nid, times = 1, {}
        started = _now()
        sk1, pk1 = self.keypair()
        sk2, pk2 = self.keypair()
        times["setup"] = _now() - started
        # Neighbours' public keys and, for stage 2, the envelopes they sealed to this client
        # (prepared outside the timed region).
        peers = list(range(2, holders + 1))
        peer_keys = {p: (self.keypair(), self.keypair()) for p in peers}
        started = _now()
        rd_seed = os.urandom(32)
        b_shares = self.sh.create_shares(rd_seed, t, holders)
        sk1_shares = self.sh.create_shares(sk1, t, holders)
        ss2, ciphertexts = {}, []
        for idx, p in enumerate([nid, *peers]):
            if p == nid:
                continue
            shared = se.generate_shared_key(
                asym.bytes_to_private_key(sk2), asym.bytes_to_public_key(peer_keys[p][1][1])
            )
            ss2[p] = shared
            plaintext = su.share_keys_plaintext_concat(nid, p, b_shares[idx], sk1_shares[idx])
            ciphertexts.append(se.encrypt(shared, plaintext))
        times["share_keys"] = _now() - started
        inbound = {}
        for idx, p in enumerate(peers, start=1):
            their = se.generate_shared_key(
                asym.bytes_to_private_key(peer_keys[p][1][0]), asym.bytes_to_public_key(pk2)
            )
            plaintext = su.share_keys_plaintext_concat(p, nid, b_shares[idx], sk1_shares[idx])
            inbound[p] = se.encrypt(their, plaintext)
        update = [np.random.default_rng(0).normal(0, 0.1, d).astype(np.float32)]
        parameters = self.to_params(update)
        started = _now()
        available = []
        for src, ciphertext in inbound.items():
            plaintext = se.decrypt(ss2[src], ciphertext)
            actual_src, dst, _, _ = su.share_keys_plaintext_separate(plaintext)
            if actual_src != src or dst != nid:
                raise AssertionError("flower envelope routing")
            available.append(src)
        ratio = 100 / self.MAX_WEIGHT
        q_ratio = round(ratio * self.QUANTIZATION_RANGE)
        arrays = ar.parameters_multiply(
            self.from_params(parameters), q_ratio / self.QUANTIZATION_RANGE
        )
        quantized = self.qz.quantize(arrays, self.CLIPPING_RANGE, self.QUANTIZATION_RANGE)
        quantized = ar.factor_combine(q_ratio, quantized)
        shapes = [a.shape for a in quantized]
        quantized = ar.parameters_addition(
            quantized, su.pseudo_rand_gen(rd_seed, self.MODULUS_RANGE, shapes)
        )
        for p in available:
            shared = se.generate_shared_key(
                asym.bytes_to_private_key(sk1), asym.bytes_to_public_key(peer_keys[p][0][1])
            )
            mask = su.pseudo_rand_gen(shared, self.MODULUS_RANGE, shapes)
            quantized = (ar.parameters_addition if nid > p else ar.parameters_subtraction)(
                quantized, mask
            )
        quantized = ar.parameters_mod(quantized, self.MODULUS_RANGE)
        payload = [self.to_bytes(a) for a in quantized]
        times["masked_input"] = _now() - started
        held = dict(zip([nid, *peers], b_shares, strict=True))
        started = _now()
        active_list, dead_list = [nid, *peers], []
        shares = [held[v] for v in active_list] + [held[v] for v in dead_list]
        times["unmask"] = _now() - started
        times["upload_bytes_per_param"] = sum(len(b) for b in payload) / d
        del shares
        return times

    # -- the coordinator (secaggplus_workflow.py: stages 2 and 3 and dequantization) --

    def prepare_coordinator(self, graph: dict[int, list[int]], t: int) -> dict[str, Any]:
        """Real keys and shares for every node (untimed): what clients would have sent."""
        nodes = sorted(graph)
        keys = {u: self.keypair() for u in nodes}
        seeds = {u: os.urandom(32) for u in nodes}
        b_shares, sk_shares = {}, {}
        for u in nodes:
            holders = graph[u]
            bs = self.sh.create_shares(seeds[u], t, len(holders))
            ks = self.sh.create_shares(keys[u][0], t, len(holders))
            b_shares[u] = dict(zip(holders, bs, strict=True))
            sk_shares[u] = dict(zip(holders, ks, strict=True))
        return {"keys": keys, "b": b_shares, "sk": sk_shares}

    def coordinator(
        self, graph: dict[int, list[int]], prepared: dict[str, Any], dead: set[int], d: int
    ) -> float:
        """Seconds for the coordinator's work on masked vectors and unmasking."""
        ar, su, se, asym = self.ar, self.su, self.se, self.asym
        active = [u for u in sorted(graph) if u not in dead]
        rng = np.random.default_rng(0)
        vector = [
            np.array([100]),
            rng.integers(0, self.MODULUS_RANGE, d, dtype=np.int64),
        ]
        upload = [self.to_bytes(a) for a in vector]
        gc.collect()
        started = _now()
        masked = None
        for _ in active:
            received = [self.from_bytes(b) for b in upload]
            masked = received if masked is None else ar.parameters_addition(masked, received)
        masked = ar.parameters_mod(masked, self.MODULUS_RANGE)
        collected: dict[int, list[bytes]] = {u: [] for u in graph}
        for h in active:
            for owner in graph[h]:
                table = prepared["sk"] if owner in dead else prepared["b"]
                collected[owner].append(table[owner][h])
        shapes = [a.shape for a in masked]
        for nid, share_list in collected.items():
            secret = self.sh.combine_shares(share_list)
            if nid not in dead:
                masked = ar.parameters_subtraction(
                    masked, su.pseudo_rand_gen(secret, self.MODULUS_RANGE, shapes)
                )
            else:
                for neighbour in (v for v in graph[nid] if v != nid):
                    shared = se.generate_shared_key(
                        asym.bytes_to_private_key(secret),
                        asym.bytes_to_public_key(prepared["keys"][neighbour][1]),
                    )
                    mask = su.pseudo_rand_gen(shared, self.MODULUS_RANGE, shapes)
                    masked = (
                        ar.parameters_addition if nid > neighbour else ar.parameters_subtraction
                    )(masked, mask)
        masked = ar.parameters_mod(masked, self.MODULUS_RANGE)
        q_total, recon = ar.factor_extract(masked)
        out = self.qz.dequantize(recon, self.CLIPPING_RANGE, self.QUANTIZATION_RANGE)
        for vec in out:
            vec += -(len(active) - 1) * self.CLIPPING_RANGE
            vec *= self.QUANTIZATION_RANGE / max(int(q_total), 1)
        return _now() - started


def flower_graph(n: int, holders: int) -> dict[int, list[int]]:
    """Flower's ring of +-holders//2 around each node, the node itself included."""
    nodes = list(range(1, n + 1))
    rng = np.random.default_rng(1)
    order = [nodes[i] for i in rng.permutation(n)]
    if holders >= n:
        return {u: list(nodes) for u in nodes}
    half = holders // 2
    return {
        u: sorted({order[(i + o) % n] for o in range(-half, half + 1)}) for i, u in enumerate(order)
    }


def flower_dropouts(graph: dict[int, list[int]], t: int, count: int) -> set[int]:
    """A dropout set after which every node still has t shares among active holders."""
    rng = np.random.default_rng(0)
    while True:
        dead = set(rng.choice(sorted(graph), size=count, replace=False).tolist())
        if all(len([h for h in graph[u] if h not in dead]) >= t for u in graph):
            return dead


# -- driver ----------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small grid (a few minutes)")
    parser.add_argument("--output", type=Path, help="JSON results path")
    parser.add_argument("--repeats", type=int, default=3, help="rounds per cell (median)")
    parser.add_argument(
        "--max-round-seconds",
        type=float,
        default=30.0,
        help="cells whose first round (all n clients and the coordinator, wall clock) takes longer "
        "are not repeated",
    )
    parser.add_argument(
        "--flower-budget", type=float, default=150.0, help="skip Flower cells estimated above this"
    )
    parser.add_argument("--lengths", type=int, nargs="+", help="override the vector lengths")
    parser.add_argument("--cohorts", type=int, nargs="+", help="override the cohort sizes")
    parser.add_argument("--graphs", nargs="+", choices=["full", "finder"], help="override graphs")
    parser.add_argument("--dropouts", type=float, nargs="+", help="override the dropout rates")
    args = parser.parse_args(argv)
    if args.quick:
        lengths, cohorts, dropouts = [100_000], [10, 50], [0.0, 0.1, 0.3]
    else:
        lengths, cohorts, dropouts = [100_000, 1_000_000], [10, 50, 100, 500], [0.0, 0.1, 0.3]
    lengths, cohorts = args.lengths or lengths, args.cohorts or cohorts
    dropouts, graphs = args.dropouts or dropouts, args.graphs or ["full", "finder"]
    custom = any((args.lengths, args.cohorts, args.graphs, args.dropouts))
    default = ROOT / "benchmarks" / "results" / "secagg_custom.json" if custom else DEFAULT_OUTPUT
    output = args.output or (QUICK_OUTPUT if args.quick else default)
    flower = Flower()
    flower.calibrate()
    rows: list[dict[str, Any]] = []
    began = _now()
    for d in lengths:
        for n in cohorts:
            for graph in graphs:
                params = params_for(n, graph)
                neighbours = params.degree
                holders = n if params.is_full_graph else params.degree + 1
                prg = masking_and_bare_prg(neighbours, d)
                flower_client: dict[str, float] | None = None
                flower_prepared: dict[str, Any] | None = None
                f_graph = flower_graph(n, holders)
                for dropout in dropouts:
                    first = bulwark_round(params, d, dropout, seed=0)
                    repeats = args.repeats if first["wall_s"] < args.max_round_seconds else 1
                    runs = [first] + [
                        bulwark_round(params, d, dropout, seed=r) for r in range(1, repeats)
                    ]
                    ours = dict(first)
                    for key in (
                        "server_s",
                        "client_s",
                        "client_masked_input_stage_s",
                        "consistency_server_s",
                        "consistency_client_s",
                        "consistency_verify_s",
                    ):
                        ours[key] = statistics.median(r[key] for r in runs)
                    ours["consistency_share"] = (
                        ours["consistency_server_s"]
                        + ours["consistency_client_s"]
                        + ours["consistency_verify_s"]
                    ) / (ours["server_s"] + ours["client_s"])
                    ours["repeats"] = repeats
                    row: dict[str, Any] = {
                        "d": d,
                        "n": n,
                        "graph": graph,
                        "dropout": dropout,
                        "degree": params.degree,
                        "threshold": params.threshold,
                        "bulwark": ours,
                        "bare_prg_s": prg["bare_prg_s"],
                    }
                    estimate = flower.estimate(n, holders, params.threshold, d, dropout)
                    if estimate > args.flower_budget:
                        budget = args.flower_budget
                        row["flower"] = {
                            "skipped": f"estimated {estimate:.0f} s > budget {budget:.0f} s"
                        }
                    else:
                        f_repeats = repeats if estimate < args.max_round_seconds else 1
                        if flower_client is None:
                            f_runs = [
                                flower.client(holders, params.threshold, d)
                                for _ in range(f_repeats)
                            ]
                            flower_client = {
                                k: statistics.median(r[k] for r in f_runs) for k in f_runs[0]
                            }
                            flower_prepared = flower.prepare_coordinator(f_graph, params.threshold)
                        dead = flower_dropouts(f_graph, params.threshold, round(dropout * n))
                        f_server = [
                            flower.coordinator(f_graph, flower_prepared, dead, d)
                            for _ in range(f_repeats)
                        ]
                        client_total = sum(
                            v for k, v in flower_client.items() if k != "upload_bytes_per_param"
                        )
                        row["flower"] = {
                            "server_s": statistics.median(f_server),
                            "client_s": client_total,
                            "client_masked_input_stage_s": flower_client["masked_input"],
                            "upload_bytes_per_param": flower_client["upload_bytes_per_param"],
                            "repeats": f_repeats,
                        }
                        row["speedup_server"] = row["flower"]["server_s"] / ours["server_s"]
                        row["speedup_client"] = client_total / ours["client_s"]
                    row["client_masking_s"] = prg["masking_s"]
                    row["mask_over_bare_prg"] = prg["ratio"]
                    rows.append(row)
                    print_row(row, flush=True)
    elapsed = _now() - began
    summary = summarize(rows)
    report = {
        "benchmark": "secagg",
        "mode": "quick" if args.quick else "full",
        "command": " ".join([".venv/bin/python", "benchmarks/secagg.py", *(argv or sys.argv[1:])]),
        "elapsed_s": elapsed,
        "machine": {
            "python": platform.python_version(),
            "processor": platform.processor(),
            "cpus": os.cpu_count(),
        },
        "flower_calibration": flower.calibration,
        "paper_java_anchor": PAPER_JAVA,
        "flower_anchor_from_references": FLOWER_ANCHOR,
        "rows": rows,
        "summary": summary,
    }
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(report, indent=2, default=str) + "\n")
    print_summary(summary, elapsed, output)
    return 0


HEADER = (
    f"{'d':>8} {'n':>4} {'graph':>6} {'k':>4} {'t':>4} {'drop':>5} | "
    f"{'coord s':>8} {'client s':>8} {'cc coord':>8} {'cc client':>9} {'cc %':>5} "
    f"{'stage2 s':>7} {'mask s':>7} {'PRG s':>7} {'m/PRG':>5} | "
    f"{'Flower coord':>12} {'Flower client':>13} "
    f"{'x coord':>7} {'x client':>8}"
)


def print_row(row: dict[str, Any], flush: bool = False) -> None:
    if not getattr(print_row, "_header", False):
        print(HEADER)
        print_row._header = True  # type: ignore[attr-defined]
    ours, theirs = row["bulwark"], row["flower"]
    if "skipped" in theirs:
        flower = f"{'skipped':>12} {'':>13} {'':>7} {'':>8}"
    else:
        flower = (
            f"{theirs['server_s']:>12.3f} {theirs['client_s']:>13.3f} "
            f"{row['speedup_server']:>7.1f} {row['speedup_client']:>8.1f}"
        )
    print(
        f"{row['d']:>8} {row['n']:>4} {row['graph']:>6} {row['degree']:>4} {row['threshold']:>4} "
        f"{row['dropout']:>5.0%} | {ours['server_s']:>8.3f} {ours['client_s']:>8.3f} "
        f"{ours['consistency_server_s']:>8.4f} "
        f"{ours['consistency_client_s'] + ours['consistency_verify_s']:>9.5f} "
        f"{ours['consistency_share']:>5.1%} "
        f"{ours['client_masked_input_stage_s']:>7.4f} {row['client_masking_s']:>7.4f} "
        f"{row['bare_prg_s']:>7.4f} "
        f"{row['mask_over_bare_prg']:>5.2f} | " + flower,
        flush=flush,
    )


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    compared = [r for r in rows if "speedup_server" in r]
    full = [r for r in compared if r["graph"] == "full"]
    sparse = [r for r in compared if r["graph"] == "finder"]
    summary: dict[str, Any] = {
        "min_speedup_server_full": min((r["speedup_server"] for r in full), default=None),
        "min_speedup_server_sparse": min((r["speedup_server"] for r in sparse), default=None),
        "min_speedup_client": min((r["speedup_client"] for r in compared), default=None),
        "max_mask_over_bare_prg": max(r["mask_over_bare_prg"] for r in rows),
        "upload_bytes_per_param": sorted({r["bulwark"]["upload_bytes_per_param"] for r in rows}),
        "flower_upload_bytes_per_param": sorted(
            {round(r["flower"]["upload_bytes_per_param"], 3) for r in compared}
        ),
        "flower_cells_skipped": sum("skipped" in r["flower"] for r in rows),
        "max_consistency_share": max(r["bulwark"]["consistency_share"] for r in rows),
        "targets": {
            "coordinator >= 20x Flower, complete graph": 20,
            "coordinator >= 5x Flower, sparse graph": 5,
            "client >= 5x Flower": 5,
            "client masking <= 2x bare PRG": 2,
        },
    }
    paper = [
        r for r in rows if (r["n"], r["d"], r["dropout"], r["graph"]) == (500, 100_000, 0.3, "full")
    ]
    if paper:
        summary["paper_cell"] = {
            "bulwark_server_s": paper[0]["bulwark"]["server_s"],
            "bulwark_client_s": paper[0]["bulwark"]["client_s"],
            "paper_java_server_s": PAPER_JAVA["server_s"],
            "paper_java_client_s": PAPER_JAVA["client_s"],
        }
    anchor = [
        r
        for r in compared
        if (r["n"], r["d"], r["graph"], r["dropout"]) == (50, 1_000_000, "full", 0.0)
    ]
    if anchor:
        summary["flower_anchor_cell"] = {
            "flower_server_s": anchor[0]["flower"]["server_s"],
            "flower_client_s": anchor[0]["flower"]["client_s"],
            "references_server_s": FLOWER_ANCHOR["server_s"],
            "references_client_s": FLOWER_ANCHOR["client_s"],
        }
    return summary


def print_summary(summary: dict[str, Any], elapsed: float, output: Path) -> None:
    print()
    for key, value in summary.items():
        print(f"{key}: {value}")
    print(f"elapsed: {elapsed:.0f} s; results written to {output}")


if __name__ == "__main__":
    raise SystemExit(main())
