"""HE benchmark: our API against raw TenSEAL and against Paillier (phe), side by side.

Measures, per element (one float), the time to encrypt, add one contribution into a running sum,
and decrypt, and the bytes on the wire, for

* ``bulwark``: `he.encrypt_vector` -> `he.Aggregator.add` (the coordinator checks each
  contribution and keeps it) -> `he.KeyHolder.decrypt` of the relayed contributions (the key
  holder checks every one again, adds them itself, decrypts; signed envelopes, every check);
  with ``--scheme bfv`` (default, the default path of jobs) the values are exact fixed point in
  BFV (N=8192, t = 2^40) with each owner's pairwise masks (a signed masking key, the cohort
  checked, one mask per peer; counted in encrypt), with ``--scheme ckks`` CKKS, unmasked,
  flooded for the job's 2^-64 budget;
* ``tenseal``: the bare TenSEAL calls doing the same arithmetic (encrypt+serialize,
  deserialize+add, deserialize+decrypt) with the same parameters (and, for BFV, the same
  fixed-point integers); the additions it does once are done by both the coordinator and the
  key holder in bulwark;
* ``paillier``: `phe` with a 2048-bit key (gmpy2 when installed), the approach FATE uses.

The CKKS methods alternate phase by phase inside each repeat (the order flips every repeat), and
the ours/raw ratios are medians of the per-repeat ratios, so that load from other processes on a
shared machine cancels; the table shows medians of the times. Also measured: the
end-to-end five-hospital statistics job on the diabetes data (keys, 5 owners encrypt, aggregate,
key holder decrypts, finalize), in a child process so that its peak RSS is its own, and the peak
RSS of this process. The five-hospital job runs three ways, each in a fresh child process:

* ``he API``: the library calls in one process (the job's own spec, no coordinator);
* ``fl_core in memory``: ``examples/he_statistics/job.toml`` through the coordinator, the stage
  driver, the key holder and five owners in one process (in-memory transport);
* ``fl_core gRPC``: the same job over loopback gRPC with the key holder and every owner as its
  own process (``bulwark stats --transport grpc``): wall time from start to result (including
  six interpreter start-ups), the round itself once everyone joined, and peak RSS of the
  coordinator and of the largest participant process.

For both fl_core modes, ``wall_s`` starts after the imports of this process (TenSEAL, scikit-learn,
fl_core) and ends with the result; ``round_s`` is the round from the cohort's first task to the
committed result.

Run:  .venv/bin/python benchmarks/he.py [--repeats 5] [--elements 65536] [--output PATH]
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

DEFAULT_OUTPUT = ROOT / "benchmarks" / "results" / "he.json"
OWNERS = [f"hospital-{i}" for i in range(5)]


def _keys() -> tuple[dict[str, Any], dict[str, bytes]]:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    keys = {o: Ed25519PrivateKey.generate() for o in OWNERS}
    raw = {
        o: k.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        for o, k in keys.items()
    }
    return keys, raw


class Bulwark:
    """Our API: signed envelopes, every check, the key holder assembling the sum itself."""

    def __init__(self, holder: Any, keys: dict[str, Any], enrolment: dict[str, bytes]) -> None:
        import he

        self.he, self.holder, self.keys, self.enrolment = he, holder, keys, enrolment
        self.public = holder.public_context()
        self.request_bytes = 0
        self.mask = he.Scheme.CKKS not in {p.scheme for p in self.public.params}
        self.cohort: Any = None

    def encrypt(self, updates: list[np.ndarray], rnd: int) -> list[bytes]:
        """Each owner: (BFV) a signed masking key, the checked cohort and its masks; encrypt."""
        spec = self.he.VectorSpec(length=updates[0].size, max_abs=1.0, max_owners=8)
        owners = OWNERS[: len(updates)]
        masking: dict[str, Any] = dict.fromkeys(owners)
        self.cohort = None
        if self.mask:
            made = {
                o: self.he.MaskingKey.generate(
                    identity_key=self.keys[o], owner_id=o, job_id="bench", round=rnd, attempt=1
                )
                for o in owners
            }
            self.cohort = self.he.Cohort(
                job_id="bench",
                round=rnd,
                attempt=1,
                advertisements=tuple(ad for _, ad in made.values()),
            )
            masking = {
                o: self.he.Masking(made[o][0], self.cohort, self.enrolment, min_size=3)
                for o in owners
            }
        return [
            self.he.encrypt_vector(
                self.public,
                u,
                spec=spec,
                job_id="bench",
                round=rnd,
                owner_id=o,
                signing_key=self.keys[o],
                masking=masking[o],
            )
            for o, u in zip(owners, updates, strict=False)
        ]

    def add(self, blobs: list[bytes], n: int, rnd: int) -> Any:
        spec = self.he.VectorSpec(length=n, max_abs=1.0, max_owners=8)
        agg = self.he.Aggregator(
            self.public, spec=spec, job_id="bench", round=rnd, enrolment=self.enrolment
        )
        for b in blobs:
            agg.add(b)
        request = agg.request(attempt=1, cohort=self.cohort).to_bytes()  # to the key holder
        self.request_bytes = len(request)
        return request

    def decrypt(self, request: Any) -> np.ndarray:
        release = self.holder.decrypt(request)
        return release.vector(), release.tolerances()


class RawTenseal:
    """The bare TenSEAL calls doing the same arithmetic with the same parameters."""

    def __init__(self, ctx: Any, *, bits: int | None = None) -> None:
        import tenseal as ts

        self.ts, self.ctx, self.bits = ts, ctx, bits  # bits: BFV fixed point, None: CKKS
        self.make = ts.ckks_vector if bits is None else ts.bfv_vector
        self.load = ts.ckks_vector_from if bits is None else ts.bfv_vector_from

    def encrypt(self, updates: list[np.ndarray], rnd: int) -> list[list[bytes]]:
        slots = 4096 if self.bits is None else 8192
        out = []
        for u in updates:
            x = u.astype(np.float64)
            values = x if self.bits is None else np.rint(x * 2.0**self.bits).astype(np.int64)
            out.append(
                [
                    self.make(self.ctx, values[i : i + slots].tolist()).serialize()
                    for i in range(0, u.size, slots)
                ]
            )
        return out

    def add(self, blobs: list[list[bytes]], n: int, rnd: int) -> list[bytes]:
        total = None
        for chunks in blobs:
            vecs = [self.load(self.ctx, c) for c in chunks]
            if total is None:
                total = vecs
            else:
                for acc, v in zip(total, vecs, strict=True):
                    acc.add_(v)
        return [v.serialize() for v in total or []]

    def decrypt(self, sums: list[bytes]) -> np.ndarray:
        out = np.concatenate([np.asarray(self.load(self.ctx, b).decrypt()) for b in sums])
        return out if self.bits is None else out.astype(np.float64) / 2.0**self.bits


def bench_ckks_pair(
    ours: Bulwark, raw: RawTenseal, n: int, rnd: int
) -> dict[str, dict[str, float]]:
    """One repeat: the two methods alternate phase by phase (order flips every repeat)."""
    rng = np.random.default_rng(rnd)
    updates = [rng.uniform(-1, 1, n).astype(np.float32) for _ in range(3)]
    expected = np.sum([u.astype(np.float64) for u in updates], axis=0)
    order = [("bulwark", ours), ("tenseal", raw)]
    if rnd % 2:
        order.reverse()
    out: dict[str, dict[str, float]] = {name: {} for name, _ in order}
    state: dict[str, Any] = {}
    for phase in ("encrypt", "add", "decrypt"):
        for name, method in order:
            t0 = time.perf_counter()
            if phase == "encrypt":
                state[name] = method.encrypt(updates, rnd)
                out[name]["bytes"] = (
                    sum(
                        len(b) if isinstance(b, bytes) else sum(map(len, b))
                        for b in state[name][:1]
                    )
                    / n
                )
            elif phase == "add":
                state[name] = method.add(state[name], n, rnd)
                if isinstance(method, Bulwark):
                    out[name]["bytes_to_keyholder"] = method.request_bytes / n
            else:
                state[name] = method.decrypt(state[name])
            elapsed = time.perf_counter() - t0
            out[name][f"{phase}_s"] = elapsed / (3 * n if phase != "decrypt" else n)
    total, tol = state["bulwark"]
    if not np.all(np.abs(total - expected) <= tol):
        raise RuntimeError("bulwark sum outside its tolerance")
    if np.max(np.abs(state["tenseal"] - expected)) > 1e-5:
        raise RuntimeError("tenseal sum wrong")
    return out


def bench_paillier(n: int, public_key: Any, private_key: Any, rnd: int) -> dict[str, float]:
    rng = np.random.default_rng(rnd)
    updates = [rng.uniform(-1, 1, n) for _ in range(3)]
    t0 = time.perf_counter()
    enc = [[public_key.encrypt(float(x)) for x in u] for u in updates]
    t1 = time.perf_counter()
    total = enc[0]
    for other in enc[1:]:
        total = [a + b for a, b in zip(total, other, strict=True)]
    t2 = time.perf_counter()
    out = np.array([private_key.decrypt(c) for c in total])
    t3 = time.perf_counter()
    if np.max(np.abs(out - np.sum(updates, axis=0))) > 1e-9:
        raise RuntimeError("paillier sum wrong")
    size = (enc[0][0].ciphertext(be_secure=False).bit_length() + 7) // 8
    return {
        "encrypt_s": (t1 - t0) / (3 * n),
        "add_s": (t2 - t1) / (2 * n),
        "decrypt_s": (t3 - t2) / n,
        "bytes": float(size),
    }


def five_hospitals() -> dict[str, float]:
    """The diabetes statistics job in-process; returns phase times and this process's peak RSS."""
    from sklearn.datasets import load_diabetes

    import he

    data = load_diabetes()
    table = np.column_stack([data.data, data.target])
    names = [*data.feature_names, "y"]
    clip = {n: [float(table[:, i].min()), float(table[:, i].max())] for i, n in enumerate(names)}
    spec = he.spec_from_dict(
        {
            "columns": names,
            "statistics": [
                "count",
                "sum",
                "mean",
                "variance",
                "std",
                "histogram",
                "quantiles",
                "covariance",
                "correlation",
                "ols",
            ],
            "moment_columns": names,
            "clip": clip,
            "histograms": {
                "y": {"bins": 20, "range": [0, 400]},
                "bmi": {"bins": 10, "range": clip["bmi"]},
            },
            "quantiles": [0.25, 0.5, 0.75],
            "ols": {"target": "y", "features": names[:-1]},
            "max_rows_per_owner": 1000,
            "max_owners": 8,
        }
    )
    keys, enrolment = _keys()
    t0 = time.perf_counter()
    holder = he.KeyHolder.generate(he.BFV_8192, min_contributors=3, enrolment=enrolment)
    published = holder.public_context().to_bytes()
    t1 = time.perf_counter()
    public = he.PublicContext.from_bytes(published)
    contributions = [
        he.encrypt_statistics(
            public, part, spec=spec, job_id="diabetes", round=0, owner_id=o, signing_key=keys[o]
        )
        for o, part in zip(OWNERS, np.array_split(table, 5), strict=True)
    ]
    t2 = time.perf_counter()
    aggregator = he.Aggregator(
        public, spec=spec, job_id="diabetes", round=0, enrolment=enrolment, attempt=1
    )
    for c in contributions:
        aggregator.add(c)
    request = aggregator.request().to_bytes()
    t3 = time.perf_counter()
    release = holder.decrypt(request).to_bytes()
    result = he.finalize_statistics(he.Release.from_bytes(release))
    t4 = time.perf_counter()
    if result.count != 442 or abs(result.mean["y"] - table[:, -1].mean()) > 1e-6:
        raise RuntimeError("five-hospital job result is wrong")
    return {
        "keygen_s": t1 - t0,
        "owners_encrypt_s": t2 - t1,
        "aggregate_s": t3 - t2,
        "decrypt_finalize_s": t4 - t3,
        "total_s": t4 - t0,
        "public_context_bytes": float(len(published)),
        "contribution_bytes": float(len(contributions[0])),
        "bytes_to_keyholder": float(len(request)),
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


EXAMPLE_JOB = ROOT / "examples" / "he_statistics" / "job.toml"


def five_hospitals_job(transport: str) -> dict[str, float]:
    """The example statistics job through fl_core (``inmemory`` or ``grpc``), in this process."""
    import tempfile

    import sklearn.datasets  # noqa: F401 - imported before the clock starts, like he
    import tenseal  # noqa: F401

    import he  # noqa: F401
    from fl_core.config import load_job
    from fl_core.stats import simulate_stats

    job = load_job(EXAMPLE_JOB)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        outcome = simulate_stats(job, transport=transport, output=Path(tmp), job_path=EXAMPLE_JOB)
    wall = time.perf_counter() - t0
    if outcome.done.status != "completed" or (outcome.statistics or {}).get("count") != 442:
        raise RuntimeError(f"five-hospital job over {transport} failed: {outcome.done.reason}")
    m: dict[str, Any] = outcome.metrics
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return {
        "wall_s": wall,
        "round_s": float(m["seconds"]),
        "wait_for_participants_s": float(m["wait_seconds"]),
        **{f"{k}_s": float(v) for k, v in m["stage_seconds"].items()},
        "bytes_down": float(m["bytes_down"]),
        "bytes_up": float(m["bytes_up"]),
        "coordinator_peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "largest_participant_peak_rss_mib": children if transport == "grpc" else 0.0,
    }


def _child(mode: str) -> dict[str, float]:
    child = subprocess.run(
        [sys.executable, __file__, "--e2e-child", mode], capture_output=True, text=True, check=True
    )
    return json.loads(child.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def _median(rows: list[dict[str, float]]) -> dict[str, float]:
    return {k: statistics.median(r[k] for r in rows) for k in rows[0]}


def _five_hospital_modes(repeats: int) -> dict[str, dict[str, float]]:
    """Medians of the example job in memory and over gRPC, the two modes alternating."""
    rows: dict[str, list[dict[str, float]]] = {"inmemory": [], "grpc": []}
    for _ in range(repeats):
        for mode, found in rows.items():
            found.append(_child(mode))
    return {mode: _median(found) for mode, found in rows.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--elements", type=int, default=65536, help="elements per vector")
    parser.add_argument("--scheme", choices=("bfv", "ckks"), default="bfv")
    parser.add_argument("--paillier-elements", type=int, default=40)
    parser.add_argument("--paillier-bits", type=int, default=2048)
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    parser.add_argument("--e2e-repeats", type=int, default=3, help="repeats of each job mode")
    parser.add_argument(
        "--e2e-only", action="store_true", help="only the five-hospital job (print, no JSON)"
    )
    parser.add_argument("--e2e-child", choices=("he", "inmemory", "grpc"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.e2e_child:
        row = five_hospitals() if args.e2e_child == "he" else five_hospitals_job(args.e2e_child)
        print(json.dumps(row))
        return
    if args.e2e_only:
        print(json.dumps(_five_hospital_modes(args.e2e_repeats), indent=2))
        return

    import phe
    import tenseal as ts

    import he
    from he.fixed import fraction_bits

    try:
        import gmpy2  # noqa: F401

        gmpy = True
    except ImportError:
        gmpy = False
    keys, enrolment = _keys()
    params = he.BFV_8192 if args.scheme == "bfv" else he.CKKS_8192
    holder = he.KeyHolder.generate(
        params, min_contributors=3, enrolment=enrolment, max_decryptions=10_000
    )
    if args.scheme == "bfv":
        ctx = ts.context(
            ts.SCHEME_TYPE.BFV,
            poly_modulus_degree=8192,
            plain_modulus=params.plain_modulus,
            coeff_mod_bit_sizes=list(params.coeff_mod_bit_sizes),
        )
        bits: int | None = fraction_bits(params, limit=8.0, max_owners=8)  # VectorSpec below
    else:
        ctx = ts.context(
            ts.SCHEME_TYPE.CKKS, poly_modulus_degree=8192, coeff_mod_bit_sizes=[60, 40, 40, 60]
        )
        ctx.global_scale = 2.0**90
        bits = None
    pk, sk = phe.generate_paillier_keypair(n_length=args.paillier_bits)
    ours, raw = Bulwark(holder, keys, enrolment), RawTenseal(ctx, bits=bits)
    runs: dict[str, list[dict[str, float]]] = {"bulwark": [], "tenseal": [], "paillier": []}
    bench_ckks_pair(ours, raw, 4096, 10_000)  # warm-up
    for r in range(args.repeats):
        pair = bench_ckks_pair(ours, raw, args.elements, r)
        runs["bulwark"].append(pair["bulwark"])
        runs["tenseal"].append(pair["tenseal"])
        runs["paillier"].append(bench_paillier(args.paillier_elements, pk, sk, r))
    for rows in runs.values():
        for row in rows:
            row["end_to_end_s"] = row["encrypt_s"] + row["add_s"] + row["decrypt_s"]
    med = {name: _median(rows) for name, rows in runs.items()}
    phases = ("encrypt_s", "add_s", "decrypt_s", "end_to_end_s", "bytes")
    paired = {
        k: statistics.median(
            b[k] / t[k] for b, t in zip(runs["bulwark"], runs["tenseal"], strict=True)
        )
        for k in phases
    }

    e2e = _median([_child("he") for _ in range(args.repeats)])
    jobs = _five_hospital_modes(args.e2e_repeats)

    ratios = {
        "bulwark_over_tenseal": paired,
        "paillier_over_bulwark": {k: med["paillier"][k] / med["bulwark"][k] for k in phases},
    }
    print(
        f"per element, medians of {args.repeats} ({args.scheme}: {args.elements} elements; "
        "Paillier "
        f"{args.paillier_bits}-bit, gmpy2={gmpy}: {args.paillier_elements} elements)"
    )
    print(
        f"{'method':10} {'encrypt us':>12} {'add us':>10} {'decrypt us':>12} "
        f"{'total us':>10} {'bytes':>8}"
    )
    for name, m in med.items():
        print(
            f"{name:10} {m['encrypt_s'] * 1e6:12.3f} {m['add_s'] * 1e6:10.3f} "
            f"{m['decrypt_s'] * 1e6:12.3f} {m['end_to_end_s'] * 1e6:10.3f} {m['bytes']:8.1f}"
        )
    for label, values in ratios.items():
        print(
            label + ": " + ", ".join(f"{k.removesuffix('_s')} {v:.2f}x" for k, v in values.items())
        )
    print(
        "five-hospital diabetes job (in-process, child): "
        + ", ".join(f"{k} {v:.3f}" for k, v in e2e.items())
    )
    for mode, row in jobs.items():
        print(
            f"five-hospital job, fl_core {mode} (child, median of {args.e2e_repeats}): "
            + ", ".join(f"{k} {v:.3f}" for k, v in row.items())
        )
    own_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS of this benchmark process: {own_rss:.1f} MiB")

    result = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "repeats": args.repeats,
        "elements": args.elements,
        "scheme": args.scheme,
        "paillier": {
            "bits": args.paillier_bits,
            "elements": args.paillier_elements,
            "gmpy2": gmpy,
        },
        "per_element_median": med,
        "ratios": ratios,
        "targets": {
            "overhead_at_most_2": {k: v <= 2.0 for k, v in ratios["bulwark_over_tenseal"].items()},
            "paillier_speedup_at_least_1000": ratios["paillier_over_bulwark"]["end_to_end_s"]
            >= 1000,
        },
        "five_hospitals_median": e2e,
        "five_hospitals_job_median": {
            "job": str(EXAMPLE_JOB.relative_to(ROOT)),
            "repeats": args.e2e_repeats,
            **jobs,
        },
        "peak_rss_mib": own_rss,
        "versions": {
            "python": platform.python_version(),
            "tenseal": ts.__version__,
            "phe": getattr(phe, "__version__", "?"),
            "numpy": np.__version__,
        },
        "machine": {"cpus": __import__("os").cpu_count(), "platform": platform.platform()},
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
