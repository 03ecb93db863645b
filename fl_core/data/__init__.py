"""Offline data sets, their IDX reader, and seeded partitioners that deal them out to clients."""

from fl_core.data.datasets import (
    DEFAULT_FASHION_MNIST_DIR,
    DEFAULT_SPLIT_SEED,
    DEFAULT_TEST_FRACTION,
    FASHION_MNIST_DEBIAN_PACKAGE,
    TASKS,
    Dataset,
    DatasetLoader,
    dataset_names,
    load_dataset,
    register_dataset,
)
from fl_core.data.federated import ClientData, split_for_clients, standardize_locally
from fl_core.data.idx import read_idx
from fl_core.data.partition import (
    DEFAULT_ALPHA,
    DEFAULT_MAX_ATTEMPTS,
    DEFAULT_MIN_SIZE,
    PARTITION_SCHEMES,
    PartitionConfig,
    dirichlet,
    iid,
    partition,
    quantity_skew,
)
from fl_core.data.tables import TABLE_SUFFIXES, load_table_data

__all__ = [
    "DEFAULT_ALPHA",
    "DEFAULT_FASHION_MNIST_DIR",
    "DEFAULT_MAX_ATTEMPTS",
    "DEFAULT_MIN_SIZE",
    "DEFAULT_SPLIT_SEED",
    "DEFAULT_TEST_FRACTION",
    "FASHION_MNIST_DEBIAN_PACKAGE",
    "PARTITION_SCHEMES",
    "TABLE_SUFFIXES",
    "TASKS",
    "ClientData",
    "Dataset",
    "DatasetLoader",
    "PartitionConfig",
    "dataset_names",
    "dirichlet",
    "iid",
    "load_dataset",
    "load_table_data",
    "partition",
    "quantity_skew",
    "read_idx",
    "register_dataset",
    "split_for_clients",
    "standardize_locally",
]
