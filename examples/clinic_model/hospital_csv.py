"""Write one CSV of tumour measurements per hospital, for the deployment tutorial (docs/deploy.md).

The rows are scikit-learn's bundled Wisconsin diagnostic breast-cancer data (569 patients, no
download), dealt out at random among the hospitals. Each CSV has a patient ``id`` (which the
job's schema leaves out, so it never reaches the model), the ten ``mean_*`` measurements
standardised with constants every hospital agreed on (here: the whole data set's), and the
``diagnosis`` label (0 malignant, 1 benign).

    python examples/clinic_model/hospital_csv.py --hospitals 3 --out .
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np
from sklearn.datasets import load_breast_cancer

FEATURES = 10
"""The ten ``mean ...`` measurements (radius, texture, ..., fractal dimension)."""


def main() -> None:
    """Parse the arguments and write ``hospital-I.csv`` for each hospital."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hospitals", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("."))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    data = load_breast_cancer()
    x = data.data[:, :FEATURES]
    x = (x - x.mean(axis=0)) / x.std(axis=0)
    names = [n.replace(" ", "_") for n in data.feature_names[:FEATURES]]
    order = np.random.default_rng(args.seed).permutation(len(x))
    args.out.mkdir(parents=True, exist_ok=True)
    for h in range(args.hospitals):
        rows = order[h :: args.hospitals]
        path = args.out / f"hospital-{h}.csv"
        with path.open("w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(["id", *names, "diagnosis"])
            for i in rows:
                writer.writerow([int(i), *(f"{v:.6f}" for v in x[i]), int(data.target[i])])
        print(f"{path}: {len(rows)} patients")


if __name__ == "__main__":
    main()
