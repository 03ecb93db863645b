from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest

from fl_core.data import datasets as datasets_module
from fl_core.data.datasets import (
    DEFAULT_FASHION_MNIST_DIR,
    Dataset,
    dataset_names,
    load_dataset,
    register_dataset,
)
from fl_core.errors import CodecError, ConfigError, DatasetUnavailable

HAVE_FASHION = (DEFAULT_FASHION_MNIST_DIR / "train-images-idx3-ubyte.gz").is_file()
needs_fashion = pytest.mark.skipif(
    not HAVE_FASHION,
    reason="Debian package dataset-fashion-mnist not installed (scripts/setup --data)",
)


def idx_bytes(array: np.ndarray) -> bytes:
    dims = struct.pack(f">{array.ndim}I", *array.shape)
    return bytes([0, 0, 0x08, array.ndim]) + dims + array.astype(np.uint8).tobytes()


def write_fake_fashion(
    folder: Path,
    *,
    n_train: int = 20,
    n_test: int = 10,
    compress: bool = True,
    labels_train: np.ndarray | None = None,
    image_side: int = 28,
) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, size=(n_train, image_side, image_side), dtype=np.uint8)
    labels = (
        rng.integers(0, 10, size=n_train, dtype=np.uint8) if labels_train is None else labels_train
    )
    files = {
        "train-images-idx3-ubyte": images,
        "train-labels-idx1-ubyte": labels,
        "t10k-images-idx3-ubyte": images[:n_test],
        "t10k-labels-idx1-ubyte": labels[:n_test],
    }
    for stem, array in files.items():
        data = idx_bytes(array)
        if compress:
            (folder / f"{stem}.gz").write_bytes(gzip.compress(data))
        else:
            (folder / stem).write_bytes(data)
    return images, labels


@pytest.mark.parametrize("compress", [True, False])
def test_fashion_mnist_from_a_given_folder_is_scaled_and_shaped(tmp_path, compress):
    # Prepare
    images, labels = write_fake_fashion(tmp_path, compress=compress)
    # Execute
    ds = load_dataset("fashion_mnist", path=tmp_path)
    # Assert
    assert ds.x_train.shape == (20, 1, 28, 28) and ds.x_train.dtype == np.float32
    assert ds.x_test.shape == (10, 1, 28, 28)
    np.testing.assert_array_equal(ds.x_train[:, 0], images.astype(np.float32) / np.float32(255))
    np.testing.assert_array_equal(ds.y_train, labels.astype(np.int64))
    assert ds.y_train.dtype == np.int64
    assert (ds.num_classes, ds.input_shape, ds.task) == (10, (1, 28, 28), "classification")


def test_missing_fashion_files_name_the_folder_and_the_debian_package(tmp_path):
    with pytest.raises(DatasetUnavailable) as info:
        load_dataset("fashion_mnist", path=tmp_path / "empty")
    message = str(info.value)
    assert str(tmp_path / "empty") in message
    assert "dataset-fashion-mnist" in message
    assert isinstance(info.value, FileNotFoundError)


def test_fashion_labels_out_of_range_are_rejected(tmp_path):
    write_fake_fashion(tmp_path, labels_train=np.full(20, 10, dtype=np.uint8))
    with pytest.raises(CodecError, match=r"label 10 outside \[0, 9\]"):
        load_dataset("fashion_mnist", path=tmp_path)


def test_fashion_images_of_the_wrong_size_are_rejected(tmp_path):
    write_fake_fashion(tmp_path, image_side=27)
    with pytest.raises(CodecError, match=r"shape \(N, 28, 28\)"):
        load_dataset("fashion_mnist", path=tmp_path)


def test_fashion_label_count_must_match_image_count(tmp_path):
    write_fake_fashion(tmp_path)
    labels = np.zeros(19, dtype=np.uint8)
    (tmp_path / "train-labels-idx1-ubyte.gz").write_bytes(gzip.compress(idx_bytes(labels)))
    with pytest.raises(CodecError, match="expected 20 uint8 labels"):
        load_dataset("fashion_mnist", path=tmp_path)


@needs_fashion
def test_real_fashion_mnist():
    ds = load_dataset("fashion_mnist")
    assert ds.x_train.shape == (60_000, 1, 28, 28)
    assert ds.x_test.shape == (10_000, 1, 28, 28)
    assert 0.0 <= float(ds.x_train.min()) and float(ds.x_train.max()) == 1.0
    assert np.bincount(ds.y_train).tolist() == [6000] * 10


@pytest.mark.parametrize(
    ("name", "n_total", "shape", "classes"),
    [("breast_cancer", 569, (30,), 2), ("digits", 1797, (1, 8, 8), 10)],
)
def test_sklearn_classification_sets_have_a_seeded_stratified_split(name, n_total, shape, classes):
    # Execute
    a = load_dataset(name, split_seed=3)
    b = load_dataset(name, split_seed=3)
    c = load_dataset(name, split_seed=4)
    # Assert: shapes, determinism, seed dependence
    assert a.num_train + a.num_test == n_total
    assert a.input_shape == shape and a.num_classes == classes and a.task == "classification"
    np.testing.assert_array_equal(a.x_test, b.x_test)
    assert not np.array_equal(a.x_test, c.x_test)
    # Assert: stratified (each class's test share within one example of 20 %)
    train_counts = np.bincount(a.y_train, minlength=classes)
    test_counts = np.bincount(a.y_test, minlength=classes)
    assert np.all(np.abs(test_counts - 0.2 * (train_counts + test_counts)) <= 1)


def test_breast_cancer_split_is_a_partition_of_the_original_rows():
    from sklearn.datasets import load_breast_cancer

    ds = load_dataset("breast_cancer")
    original = np.asarray(load_breast_cancer().data, dtype=np.float32)
    ours = np.concatenate([ds.x_train, ds.x_test])
    np.testing.assert_array_equal(
        ours[np.lexsort(ours.T[::-1])], original[np.lexsort(original.T[::-1])]
    )
    assert ds.standardize_features
    assert len(ds.feature_names) == 30


def test_digits_pixels_are_in_unit_range():
    ds = load_dataset("digits")
    assert ds.x_train.min() == 0.0 and ds.x_train.max() == 1.0


def test_diabetes_is_raw_regression():
    ds = load_dataset("diabetes")
    assert ds.task == "regression" and ds.num_classes == 1
    assert ds.y_train.dtype == np.float32 and ds.num_train + ds.num_test == 442
    assert ds.feature_names[:3] == ("age", "sex", "bmi")
    ages = np.concatenate([ds.x_train[:, 0], ds.x_test[:, 0]])
    assert 19 <= ages.min() and ages.max() <= 79  # years, not scikit-learn's scaled values


def test_bundled_sets_take_no_path(tmp_path):
    with pytest.raises(ConfigError, match="takes no path"):
        load_dataset("digits", path=tmp_path)


def test_unknown_dataset_lists_the_registered_ones():
    with pytest.raises(ConfigError, match="unknown dataset 'mnist'.*breast_cancer"):
        load_dataset("mnist")


def test_register_dataset_is_explicit(monkeypatch):
    # Prepare: an isolated registry
    monkeypatch.setattr(datasets_module, "_DATASETS", dict(datasets_module._DATASETS))
    tiny = Dataset(
        name="tiny",
        x_train=np.zeros((2, 3), np.float32),
        y_train=np.array([0, 1]),
        x_test=np.zeros((1, 3), np.float32),
        y_test=np.array([1]),
        num_classes=2,
        input_shape=(3,),
        task="classification",
    )

    def loader(*, path, split_seed):
        return tiny

    # Execute
    assert "tiny" not in dataset_names()
    register_dataset("tiny", loader)
    # Assert
    assert load_dataset("tiny") is tiny
    with pytest.raises(ConfigError, match="already registered"):
        register_dataset("tiny", loader)
    register_dataset("tiny", loader, replace=True)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"task": "ranking"}, "Dataset.task"),
        ({"num_classes": 1}, "num_classes must be >= 2"),
        ({"x_train": np.zeros((2, 3), np.float64)}, "x_train must be float32"),
        ({"x_train": np.zeros((2, 4), np.float32)}, "example shape"),
        ({"y_train": np.array([0, 1, 1])}, r"y_train has shape \(3,\)"),
        ({"y_train": np.array([0, 2])}, r"labels in \[0, 2\]"),
        ({"y_train": np.array([0.0, 1.0])}, "int64 class labels"),
        ({"x_test": np.full((1, 3), np.nan, np.float32)}, "x_test contains NaN"),
        ({"feature_names": ("a", "b")}, "feature_names has 2 names"),
    ],
)
def test_dataset_validates_its_fields(change, message):
    fields = {
        "name": "t",
        "x_train": np.zeros((2, 3), np.float32),
        "y_train": np.array([0, 1], np.int64),
        "x_test": np.zeros((1, 3), np.float32),
        "y_test": np.array([1], np.int64),
        "num_classes": 2,
        "input_shape": (3,),
        "task": "classification",
    }
    with pytest.raises(ConfigError, match=message):
        Dataset(**{**fields, **change})
