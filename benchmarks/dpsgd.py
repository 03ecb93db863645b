"""DP-SGD benchmark: time per step of private training against the same training without DP.

For each model (``cnn``, the example CNN; ``tanh_cnn``, the 26,010-parameter TF-Privacy CNN of the
utility anchor; ``mlp``) from :func:`fl_core.models.create_model` and each (expected) batch size,
the script times, side by side in one process:

* ``plain``: non-private SGD on shuffled fixed-size batches (the baseline);
* ``flat``: :class:`fl_core.dp.dpsgd.DPSGDSession` with flat clipping (Opacus hooks), Poisson
  sampling, Opacus's secure noise construction, noise and batches drawn from the AES-CTR
  CSPRNG stream;
* ``ghost``: the same session with Opacus's fast gradient / ghost clipping (two backward passes);
* ``bk``: the same session with book-keeping clipping (:mod:`fl_core.dp.bookkeeping`, one
  backward pass): what Bulwark runs (``dp.clipping = "auto"`` picks it for every model here);
* ``opacus``: raw Opacus ``make_private`` (hooks, ``secure_mode=False``, global RNG), to show what
  the wrapper's secure noise costs on top of Opacus itself.

Data are synthetic Fashion-MNIST-shaped tensors (60,000 images 1x28x28, 10 classes): the time of a
step does not depend on pixel values, and nothing is downloaded. Within each repeat the methods run
``--steps`` steps each, in an order that rotates every repeat; the table shows medians over repeats
of the wall time per step, and each ratio is the median of the per-repeat ratios to ``plain``
(load from other processes on a shared machine then cancels out to first order; short repeats
interleave the methods often). The CPU-time ratios (process time, all threads) are also shown:
they are less sensitive to other processes' load than wall time.

Run:  .venv/bin/python benchmarks/dpsgd.py [--repeats 15] [--steps 4] [--threads N] [--quick]
      [--output PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

DEFAULT_OUTPUT = ROOT / "benchmarks" / "results" / "dpsgd.json"
MODELS = ("cnn", "tanh_cnn", "mlp")
BATCHES = (64, 256)
METHODS = ("plain", "flat", "ghost", "bk", "opacus")
N_EXAMPLES = 60_000
LR = 0.05


def _data(n: int) -> Any:
    import torch

    g = torch.Generator().manual_seed(0)
    x = torch.rand(n, 1, 28, 28, generator=g)
    y = torch.randint(0, 10, (n,), generator=g)
    return x, y


def _runner(
    method: str, model_name: str, batch: int, data: Any, steps: int
) -> Callable[[], tuple[float, float]]:
    """Build one training setup and return a function that runs ``steps`` steps, timed."""
    import torch
    from torch import nn
    from torch.utils.data import DataLoader, TensorDataset

    from fl_core.dp.dpsgd import ClippingMode, DPSGDConfig, DPSGDSession
    from fl_core.models import create_model

    torch.manual_seed(1)
    model = create_model(model_name, input_shape=(1, 28, 28), num_classes=10)
    optimizer = torch.optim.SGD(model.parameters(), lr=LR, momentum=0.9)
    dataset = TensorDataset(*data)
    criterion = nn.CrossEntropyLoss()

    if method in ("flat", "ghost", "bk"):
        clipping = {"flat": ClippingMode.FLAT, "ghost": ClippingMode.GHOST}.get(
            method, ClippingMode.BOOKKEEPING
        )
        config = DPSGDConfig(
            max_grad_norm=1.0,
            delta=1e-5,
            noise_multiplier=1.0,
            max_steps_per_round=steps,
            clipping=clipping,
            report_pld=False,
        )
        session = DPSGDSession(
            model=model,
            optimizer=optimizer,
            data_loader=DataLoader(dataset, batch_size=batch),
            criterion=criterion,
            config=config,
        )

        def run_session() -> tuple[float, float]:
            start, cpu = time.perf_counter(), time.process_time()
            report = session.train_round()
            wall, used = time.perf_counter() - start, time.process_time() - cpu
            return wall / report.steps, used / report.steps

        return run_session

    if method == "opacus":
        from opacus import PrivacyEngine

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            engine = PrivacyEngine(accountant="rdp")
        model, optimizer, loader = engine.make_private(
            module=model,
            optimizer=optimizer,
            data_loader=DataLoader(dataset, batch_size=batch),
            noise_multiplier=1.0,
            max_grad_norm=1.0,
            poisson_sampling=True,
        )
    else:
        loader = DataLoader(dataset, batch_size=batch, shuffle=True)

    def run_loop() -> tuple[float, float]:
        batches = iter(loader)
        start, cpu = time.perf_counter(), time.process_time()
        for _ in range(steps):
            inputs, targets = next(batches)
            optimizer.zero_grad()
            loss = criterion(model(inputs), targets)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # torch's full-backward-hook note under Opacus
                loss.backward()
            optimizer.step()
        return (time.perf_counter() - start) / steps, (time.process_time() - cpu) / steps

    return run_loop


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--steps", type=int, default=4, help="steps per method per repeat")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch default)")
    parser.add_argument("--quick", action="store_true", help="3 repeats of 3 steps")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    args = parser.parse_args()
    repeats, steps = (3, 3) if args.quick else (args.repeats, args.steps)

    import opacus
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)

    load_before = os.getloadavg()
    print(f"load average before: {load_before}")
    data = _data(N_EXAMPLES)
    results: list[dict[str, Any]] = []
    header = (
        f"{'model':<9} {'batch':>5} {'params':>8} | {'plain ms':>9} {'flat ms':>10} "
        f"{'ratio':>6} {'ghost ms':>9} {'ratio':>6} {'bk ms':>7} {'ratio':>6} "
        f"{'opacus ms':>9} {'ratio':>6} | {'cpu ratio f/g/b/o':>23}"
    )
    print(header)
    print("-" * len(header))
    for model_name in MODELS:
        for batch in BATCHES:
            runners = {m: _runner(m, model_name, batch, data, steps) for m in METHODS}
            for run in runners.values():  # warm-up: allocator, hooks, first RDP curve
                run()
            times: dict[str, list[float]] = {m: [] for m in METHODS}
            cpu: dict[str, list[float]] = {m: [] for m in METHODS}
            for r in range(repeats):
                order = METHODS[r % len(METHODS) :] + METHODS[: r % len(METHODS)]
                for m in order:
                    wall, used = runners[m]()
                    times[m].append(wall)
                    cpu[m].append(used)

            def ratio(samples: dict[str, list[float]], m: str) -> float:
                pairs = zip(samples[m], samples["plain"], strict=True)
                return statistics.median(t / p for t, p in pairs)

            ratios = {m: ratio(times, m) for m in METHODS if m != "plain"}
            cpu_ratios = {m: ratio(cpu, m) for m in METHODS if m != "plain"}
            from fl_core.models import create_model

            fresh = create_model(model_name, input_shape=(1, 28, 28), num_classes=10)
            params = sum(p.numel() for p in fresh.parameters())
            row = {
                "model": model_name,
                "batch": batch,
                "params": params,
                "ms_per_step": {m: 1e3 * statistics.median(times[m]) for m in METHODS},
                "ratio_to_plain": ratios,
                "cpu_ms_per_step": {m: 1e3 * statistics.median(cpu[m]) for m in METHODS},
                "cpu_ratio_to_plain": cpu_ratios,
                "samples_s": {m: times[m] for m in METHODS},
            }
            results.append(row)
            ms = row["ms_per_step"]
            print(
                f"{model_name:<9} {batch:>5} {params:>8} | {ms['plain']:9.1f} "
                f"{ms['flat']:10.1f} {ratios['flat']:6.2f} "
                f"{ms['ghost']:9.1f} {ratios['ghost']:6.2f} "
                f"{ms['bk']:7.1f} {ratios['bk']:6.2f} "
                f"{ms['opacus']:9.1f} {ratios['opacus']:6.2f} | "
                f"{cpu_ratios['flat']:5.2f} {cpu_ratios['ghost']:5.2f} "
                f"{cpu_ratios['bk']:5.2f} {cpu_ratios['opacus']:5.2f}",
                flush=True,
            )
    out = {
        "benchmark": "dpsgd",
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "repeats": repeats,
        "steps_per_repeat": steps,
        "examples": N_EXAMPLES,
        "versions": {"torch": torch.__version__, "opacus": opacus.__version__},
        "torch_threads": torch.get_num_threads(),
        "machine": platform.platform(),
        "load_average_before": load_before,
        "load_average_after": os.getloadavg(),
        "results": results,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
