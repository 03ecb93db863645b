"""Data sets that are available offline, behind an explicit registry.

Nothing here downloads anything. The built-in data sets are:

========================  ==============  =====================  ==================================
name                      task            input shape            source
========================  ==============  =====================  ==================================
``fashion_mnist``         10 classes      (1, 28, 28) in [0, 1]  Debian ``dataset-fashion-mnist``
``breast_cancer``         2 classes       (30,) raw features     scikit-learn (bundled)
``digits``                10 classes      (1, 8, 8) in [0, 1]    scikit-learn (bundled)
``diabetes``              regression      (10,) raw features     scikit-learn (bundled)
========================  ==============  =====================  ==================================

Fashion-MNIST keeps its official 60,000/10,000 split. The scikit-learn data sets have no split, so
they are split with a seeded, stratified (by class; plain random for regression) draw of
:data:`DEFAULT_TEST_FRACTION` of the examples into the test set.

Tabular features are returned as they are in the source, unscaled: the diabetes statistics example
needs the raw values, and standardising with statistics of the pooled data would leak them across
data owners. :attr:`Dataset.standardize_features` says that a model should see standardised
features; :func:`fl_core.data.split_for_clients` then lets each client standardise with its own
training statistics.

Register your own loader with :func:`register_dataset`; the registry is a plain dictionary filled
when the module is defined, and importing registers nothing else.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import numpy.typing as npt

from fl_core.data.idx import read_idx
from fl_core.errors import CodecError, ConfigError, DatasetUnavailable

__all__ = [
    "DEFAULT_FASHION_MNIST_DIR",
    "DEFAULT_SPLIT_SEED",
    "DEFAULT_TEST_FRACTION",
    "FASHION_MNIST_DEBIAN_PACKAGE",
    "TASKS",
    "Dataset",
    "DatasetLoader",
    "dataset_names",
    "load_dataset",
    "register_dataset",
]

TASKS = ("classification", "regression")
"""The kinds of learning task a :class:`Dataset` can pose."""

DEFAULT_FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
"""Where Debian's ``dataset-fashion-mnist`` package installs the IDX files."""

FASHION_MNIST_DEBIAN_PACKAGE = "dataset-fashion-mnist"
"""The Debian package that provides Fashion-MNIST."""

DEFAULT_SPLIT_SEED = 0
"""Seed of the train/test split of the scikit-learn data sets."""

DEFAULT_TEST_FRACTION = 0.2
"""Share of the examples of a scikit-learn data set that goes to the test split."""

_FASHION_MNIST_FILES = {
    "x_train": "train-images-idx3-ubyte",
    "y_train": "train-labels-idx1-ubyte",
    "x_test": "t10k-images-idx3-ubyte",
    "y_test": "t10k-labels-idx1-ubyte",
}


@dataclass(frozen=True, slots=True, kw_only=True)
class Dataset:
    """A data set split into train and test arrays.

    Attributes:
        name: the registry name.
        x_train: float32 features, shape ``(num_train, *input_shape)``.
        y_train: int64 class labels in ``[0, num_classes)``, or float32 targets for regression;
            shape ``(num_train,)``.
        x_test: float32 features, shape ``(num_test, *input_shape)``.
        y_test: labels or targets of the test split, shape ``(num_test,)``.
        num_classes: number of classes; 1 for regression (the model's number of outputs).
        input_shape: shape of one example.
        task: ``"classification"`` or ``"regression"``.
        feature_names: names of tabular features (empty for images).
        standardize_features: whether a model should see standardised features (tabular data with
            features on very different scales).
    """

    name: str
    x_train: npt.NDArray[np.float32]
    y_train: npt.NDArray[np.generic]
    x_test: npt.NDArray[np.float32]
    y_test: npt.NDArray[np.generic]
    num_classes: int
    input_shape: tuple[int, ...]
    task: str
    feature_names: tuple[str, ...] = ()
    standardize_features: bool = False

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ConfigError(f"Dataset.task must be one of {TASKS}, got {self.task!r}")
        if self.task == "classification" and self.num_classes < 2:
            raise ConfigError(
                f"Dataset.num_classes must be >= 2 for classification, got {self.num_classes}"
            )
        if self.task == "regression" and self.num_classes != 1:
            raise ConfigError(
                f"Dataset.num_classes must be 1 for regression, got {self.num_classes}"
            )
        for split in ("train", "test"):
            _check_split(self, split)
        if self.feature_names and len(self.feature_names) != int(np.prod(self.input_shape)):
            raise ConfigError(
                f"Dataset.feature_names has {len(self.feature_names)} names for input shape "
                f"{self.input_shape}"
            )

    @property
    def num_train(self) -> int:
        """Number of training examples."""
        return int(self.x_train.shape[0])

    @property
    def num_test(self) -> int:
        """Number of test examples."""
        return int(self.x_test.shape[0])


def _check_split(dataset: Dataset, split: str) -> None:
    """Check dtype, shape and range of one split of ``dataset``."""
    x = getattr(dataset, f"x_{split}")
    y = getattr(dataset, f"y_{split}")
    if x.dtype != np.float32:
        raise ConfigError(f"Dataset.x_{split} must be float32, got {x.dtype}")
    if x.shape[1:] != dataset.input_shape:
        raise ConfigError(
            f"Dataset.x_{split} has example shape {x.shape[1:]}, input_shape is "
            f"{dataset.input_shape}"
        )
    if y.shape != (x.shape[0],):
        raise ConfigError(f"Dataset.y_{split} has shape {y.shape}, expected ({x.shape[0]},)")
    if not np.isfinite(x).all():
        raise ConfigError(f"Dataset.x_{split} contains NaN or infinite values")
    if dataset.task == "classification":
        if y.dtype != np.int64:
            raise ConfigError(f"Dataset.y_{split} must be int64 class labels, got {y.dtype}")
        if y.size and (y.min() < 0 or y.max() >= dataset.num_classes):
            raise ConfigError(
                f"Dataset.y_{split} has labels in [{y.min()}, {y.max()}], allowed "
                f"[0, {dataset.num_classes - 1}]"
            )
    else:
        if y.dtype != np.float32:
            raise ConfigError(f"Dataset.y_{split} must be float32 targets, got {y.dtype}")
        if not np.isfinite(y).all():
            raise ConfigError(f"Dataset.y_{split} contains NaN or infinite values")


class DatasetLoader(Protocol):
    """Builds a :class:`Dataset`; ``path`` is a folder to read from (``None``: the default)."""

    def __call__(self, *, path: Path | None, split_seed: int) -> Dataset:
        """Load the data set."""
        ...


def load_fashion_mnist(*, path: Path | None, split_seed: int) -> Dataset:
    """Load Fashion-MNIST from the IDX files of Debian's ``dataset-fashion-mnist``.

    Pixels are scaled to ``[0, 1]`` as float32 and shaped ``(N, 1, 28, 28)``. The files may be
    gzip-compressed (``*.gz``, as Debian ships them) or plain.

    Args:
        path: the folder with the four IDX files; ``None`` means
            :data:`DEFAULT_FASHION_MNIST_DIR`.
        split_seed: unused (Fashion-MNIST has an official split); accepted for the registry.

    Raises:
        DatasetUnavailable: a file is missing; the message names the folder and the package.
        CodecError: a file is corrupt, or images and labels do not fit together.
    """
    del split_seed
    folder = DEFAULT_FASHION_MNIST_DIR if path is None else Path(path)
    arrays: dict[str, npt.NDArray[np.generic]] = {}
    for key, stem in _FASHION_MNIST_FILES.items():
        candidates = [folder / f"{stem}.gz", folder / stem]
        found = next((c for c in candidates if c.is_file()), None)
        if found is None:
            raise DatasetUnavailable(
                f"Fashion-MNIST file {stem}[.gz] not found in {folder}; install the Debian "
                f"package {FASHION_MNIST_DEBIAN_PACKAGE} (apt-get install "
                f"{FASHION_MNIST_DEBIAN_PACKAGE}, or scripts/setup --data) or pass the folder "
                f"that holds the files as path="
            )
        arrays[key] = read_idx(found)
    features: dict[str, npt.NDArray[np.float32]] = {}
    labels_of: dict[str, npt.NDArray[np.generic]] = {}
    for split in ("train", "test"):
        images, labels = arrays[f"x_{split}"], arrays[f"y_{split}"]
        name = _FASHION_MNIST_FILES[f"x_{split}"]
        if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1:] != (28, 28):
            raise CodecError(
                f"{name}: expected uint8 images of shape (N, 28, 28), got {images.dtype} "
                f"{images.shape}"
            )
        if labels.dtype != np.uint8 or labels.shape != (images.shape[0],):
            raise CodecError(
                f"{_FASHION_MNIST_FILES[f'y_{split}']}: expected {images.shape[0]} uint8 labels "
                f"(one per image), got {labels.dtype} {labels.shape}"
            )
        if labels.size and labels.max() > 9:
            raise CodecError(
                f"{_FASHION_MNIST_FILES[f'y_{split}']}: label {labels.max()} outside [0, 9]"
            )
        x = images.reshape(images.shape[0], 1, 28, 28).astype(np.float32)
        x /= np.float32(255.0)
        features[split], labels_of[split] = x, labels.astype(np.int64)
    return Dataset(
        name="fashion_mnist",
        x_train=features["train"],
        y_train=labels_of["train"],
        x_test=features["test"],
        y_test=labels_of["test"],
        num_classes=10,
        input_shape=(1, 28, 28),
        task="classification",
    )


def load_breast_cancer(*, path: Path | None, split_seed: int) -> Dataset:
    """Load scikit-learn's Wisconsin diagnostic breast cancer data (569 examples, 30 features).

    Labels are scikit-learn's: 0 malignant, 1 benign. Features are unscaled.
    """
    from sklearn.datasets import load_breast_cancer as sk_load

    _no_path("breast_cancer", path)
    bunch = sk_load()
    x = np.asarray(bunch.data, dtype=np.float32)
    y = np.asarray(bunch.target, dtype=np.int64)
    names = tuple(str(n) for n in bunch.feature_names)
    return _split_tabular("breast_cancer", x, y, names, num_classes=2, split_seed=split_seed)


def load_digits(*, path: Path | None, split_seed: int) -> Dataset:
    """Load scikit-learn's 8x8 hand-written digits (1,797 examples), pixels scaled to ``[0, 1]``."""
    from sklearn.datasets import load_digits as sk_load

    _no_path("digits", path)
    bunch = sk_load()
    x = np.asarray(bunch.data, dtype=np.float32).reshape(-1, 1, 8, 8) / np.float32(16.0)
    y = np.asarray(bunch.target, dtype=np.int64)
    rng = np.random.default_rng(split_seed)
    train, test = _stratified_split(y, rng=rng)
    return Dataset(
        name="digits",
        x_train=x[train],
        y_train=y[train],
        x_test=x[test],
        y_test=y[test],
        num_classes=10,
        input_shape=(1, 8, 8),
        task="classification",
    )


def load_diabetes(*, path: Path | None, split_seed: int) -> Dataset:
    """Load scikit-learn's diabetes regression data (442 patients, 10 raw features).

    Features are the original, unscaled values (age in years, BMI, blood pressure, six serum
    measurements; sex coded 1/2); the target is a disease-progression score one year later.
    """
    from sklearn.datasets import load_diabetes as sk_load

    _no_path("diabetes", path)
    bunch = sk_load(scaled=False)
    x = np.asarray(bunch.data, dtype=np.float32)
    y = np.asarray(bunch.target, dtype=np.float32)
    names = tuple(str(n) for n in bunch.feature_names)
    return _split_tabular("diabetes", x, y, names, num_classes=1, split_seed=split_seed)


def _no_path(name: str, path: Path | None) -> None:
    if path is not None:
        raise ConfigError(f"data set {name!r} is bundled with scikit-learn and takes no path")


def _split_tabular(
    name: str,
    x: npt.NDArray[np.float32],
    y: npt.NDArray[np.generic],
    feature_names: tuple[str, ...],
    *,
    num_classes: int,
    split_seed: int,
) -> Dataset:
    rng = np.random.default_rng(split_seed)
    if num_classes > 1:
        train, test = _stratified_split(y, rng=rng)
    else:
        order = rng.permutation(len(y))
        n_test = round(DEFAULT_TEST_FRACTION * len(y))
        test, train = np.sort(order[:n_test]), np.sort(order[n_test:])
    return Dataset(
        name=name,
        x_train=x[train],
        y_train=y[train],
        x_test=x[test],
        y_test=y[test],
        num_classes=num_classes,
        input_shape=(x.shape[1],),
        task="classification" if num_classes > 1 else "regression",
        feature_names=feature_names,
        standardize_features=True,
    )


def _stratified_split(
    labels: npt.NDArray[np.generic], *, rng: np.random.Generator
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """Put ``round(DEFAULT_TEST_FRACTION * n_c)`` random examples of class c in the test set."""
    test_parts = []
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        test_parts.append(rng.permutation(members)[: round(DEFAULT_TEST_FRACTION * len(members))])
    test = np.sort(np.concatenate(test_parts)).astype(np.int64)
    train = np.setdiff1d(np.arange(len(labels), dtype=np.int64), test, assume_unique=True)
    return train, test


_DATASETS: dict[str, DatasetLoader] = {
    "fashion_mnist": load_fashion_mnist,
    "breast_cancer": load_breast_cancer,
    "digits": load_digits,
    "diabetes": load_diabetes,
}


def register_dataset(name: str, loader: DatasetLoader, *, replace: bool = False) -> None:
    """Make ``loader`` available to :func:`load_dataset` as ``name``.

    Args:
        name: the registry name (non-empty).
        loader: called as ``loader(path=..., split_seed=...)``.
        replace: allow replacing an existing entry.

    Raises:
        ConfigError: ``name`` is empty, or already registered and ``replace`` is false.
    """
    if not name:
        raise ConfigError("dataset name must be non-empty")
    if name in _DATASETS and not replace:
        raise ConfigError(f"dataset {name!r} is already registered (pass replace=True)")
    _DATASETS[name] = loader


def dataset_names() -> tuple[str, ...]:
    """Return the registered data set names, sorted."""
    return tuple(sorted(_DATASETS))


def load_dataset(
    name: str,
    *,
    path: str | os.PathLike[str] | None = None,
    split_seed: int = DEFAULT_SPLIT_SEED,
) -> Dataset:
    """Load a registered data set.

    Args:
        name: a name from :func:`dataset_names`.
        path: the folder to read files from, for data sets that read files (Fashion-MNIST);
            ``None`` uses the data set's default folder.
        split_seed: seed of the train/test split, for data sets without an official one.

    Returns:
        The data set.

    Raises:
        ConfigError: ``name`` is not registered, or ``path`` is given for a bundled data set.
        DatasetUnavailable: the data set's files are not installed.
        CodecError: a file is corrupt.
    """
    loader: Callable[..., Dataset] | None = _DATASETS.get(name)
    if loader is None:
        raise ConfigError(f"unknown dataset {name!r}; registered: {', '.join(dataset_names())}")
    return loader(path=None if path is None else Path(path), split_seed=split_seed)
