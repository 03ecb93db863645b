"""DP-SGD noise benchmark: ways to draw N(0, std^2) for one gradient from a CSPRNG, side by side.

For ``--size`` coordinates (default 105,866, the ``cnn`` model's parameters), the script times
(process time, medians over ``--repeats``, one torch thread):

* ``numpy_hb``: what :func:`fl_core.dp._torch_rng.gaussian_like` does in secure mode: numpy's
  ziggurat over randomgen's AES-128-CTR ``AESCounter``, four draws per coordinate summed and
  halved (Holohan-Braghin, n = 2), float64;
* ``torch_bm_hb``: the same Holohan-Braghin sum, but the uniforms are the 53 low bits of 64-bit
  words of an AES-128-CTR keystream (``cryptography``, one ``update_into`` into a preallocated
  buffer) and the normals come from a vectorized Box-Muller transform in torch float64;
* ``aes_keystream``: the keystream alone for ``torch_bm_hb`` (the part the CSPRNG costs);
* ``torch_randn``: ``torch.randn`` (Mersenne Twister, one draw: not a CSPRNG, the floor).

Run:  .venv/bin/python benchmarks/dpsgd_noise.py [--size N] [--repeats 21] [--output PATH]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

DEFAULT_OUTPUT = ROOT / "benchmarks" / "results" / "dpsgd_noise.json"
MASK_53 = (1 << 53) - 1


def _methods(size: int) -> dict[str, Callable[[], Any]]:
    import torch
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    from fl_core.dp.noise import csprng, gaussian_noise

    rng = csprng()
    draws = 4 * size
    pairs = (draws + 1) // 2
    nbytes = 16 * pairs
    zeros = bytes(nbytes)
    buffer = bytearray(nbytes + 15)

    def keystream() -> None:
        encryptor = Cipher(algorithms.AES(os.urandom(16)), modes.CTR(bytes(16))).encryptor()
        encryptor.update_into(zeros, buffer)

    def torch_bm_hb() -> Any:
        keystream()
        words = torch.frombuffer(buffer, dtype=torch.int64, count=2 * pairs)
        uniform = words.bitwise_and(MASK_53).to(torch.float64).mul_(2.0**-53)
        radius = uniform[:pairs].neg().add_(1.0).log_().mul_(-2.0).sqrt_()  # 1 - u in (0, 1]
        angle = uniform[pairs:].mul(2 * math.pi)
        normals = torch.cat([radius * torch.cos(angle), radius * torch.sin(angle)])[:draws]
        return normals.view(4, size).sum(0).mul_(0.5)

    return {
        "numpy_hb": lambda: gaussian_noise(size, std=1.0, rng=rng),
        "torch_bm_hb": torch_bm_hb,
        "aes_keystream": keystream,
        "torch_randn": lambda: torch.randn(size, dtype=torch.float64),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=105_866)
    parser.add_argument("--repeats", type=int, default=21)
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    args = parser.parse_args()

    import torch

    torch.set_num_threads(1)
    load_before = os.getloadavg()
    methods = _methods(args.size)
    samples: dict[str, list[float]] = {name: [] for name in methods}
    for run in methods.values():
        run()  # warm-up
    for r in range(args.repeats):
        names = list(methods)
        for name in names[r % len(names) :] + names[: r % len(names)]:
            start = time.process_time()
            methods[name]()
            samples[name].append(time.process_time() - start)
    ms = {name: 1e3 * statistics.median(values) for name, values in samples.items()}
    print(f"size {args.size}, load average before {load_before}")
    print(f"{'method':<14} {'ms (cpu, median)':>17} {'vs numpy_hb':>12}")
    for name, value in ms.items():
        print(f"{name:<14} {value:17.2f} {value / ms['numpy_hb']:12.2f}")
    out = {
        "benchmark": "dpsgd_noise",
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "size": args.size,
        "repeats": args.repeats,
        "torch": torch.__version__,
        "machine": platform.platform(),
        "load_average_before": load_before,
        "load_average_after": os.getloadavg(),
        "cpu_ms_median": ms,
        "samples_s": samples,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
