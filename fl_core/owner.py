"""What a data owner's process loads: its data, its trainer, its identity key.

A data owner brings either a simulated share of the job's data set (``--partition I``, for
simulations and demonstrations) or its own arrays in an ``.npz`` file (``--data FILE``), read with
``allow_pickle=False``. The identity key is an Ed25519 private key in a PEM file, created with
mode 0600 the first time.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from .audit import MAX_TEXT, AuditLog
from .client.policy import OwnerPolicy
from .client.trainer import TorchTrainer
from .config import JobConfig, SchemaSection
from .data import ClientData
from .data.federated import WithdrawnMask
from .data.tables import OwnerTable, load_owner_table
from .errors import ConfigError, PolicyRefused
from .simulation import client_shares, job_dataset, model_factory, model_shape
from .types import Trainer

if TYPE_CHECKING:
    from .client.deidentify import Deidentifier
    from .client.dp_trainer import DPSGDTrainer

NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")


def load_owner_data(
    job: JobConfig,
    *,
    partition: int | None,
    data: Path | None,
    schema: SchemaSection | None = None,
    withdrawn: WithdrawnMask | None = None,
) -> ClientData:
    """The owner's arrays (see :func:`load_owner`)."""
    return load_owner(job, partition=partition, data=data, schema=schema, withdrawn=withdrawn).data


def load_owner(
    job: JobConfig,
    *,
    partition: int | None,
    data: Path | None,
    schema: SchemaSection | None = None,
    withdrawn: WithdrawnMask | None = None,
    deidentify: Deidentifier | None = None,
) -> OwnerTable:
    """The owner's arrays: share ``partition`` of the job's data set, or its own file.

    A table is de-identified by ``deidentify`` (the owner's policy) as it is read
    (:func:`fl_core.data.tables.load_owner_table`); a simulated share or a four-array
    ``.npz`` has no identifier columns, so a policy that declares any is refused for them.

    With ``withdrawn`` (the owner's ledger, :func:`fl_core.client.consent.withdrawn_mask`)
    the withdrawn records are left out before anything else sees the data; data without
    record ids (an ``.npz`` of four arrays, a table without ``schema.id_column``) is then
    refused, since no record could be excluded.

    With a schema (the job's ``[schema]``, or ``schema`` from a schema file when the job has
    none) ``data`` is a table (CSV, Parquet or ``.npz`` with one array per column) read by
    :func:`fl_core.data.load_table_data`; without one it is an ``.npz`` file with the four arrays
    ``x_train``, ``y_train``, ``x_test``, ``y_test``.

    Raises:
        ConfigError: a partition index out of range, a schema that contradicts the job's, or a
            file that does not fit.
    """
    if partition is not None:
        if not 0 <= partition < job.data.num_clients:
            raise ConfigError(f"--partition {partition} is outside [0, {job.data.num_clients - 1}]")
        _no_identifiers(deidentify, "a simulated share (--partition)")
        share = client_shares(job, job_dataset(job), withdrawn=withdrawn)[partition]
        return OwnerTable(data=share, raw_ids=share.record_ids())
    if data is None:
        raise ConfigError("give --partition or --data")
    if job.schema is not None and schema is not None and schema != job.schema:
        raise ConfigError("the job has a [schema]; the owner's --schema file must not differ")
    declared = job.schema or schema
    if declared is not None:
        if schema is not None and job.model.input_shape != (len(schema.features),):
            raise ConfigError(
                f"--schema has {len(schema.features)} features; the job's model.input_shape is "
                f"{list(job.model.input_shape)}"
            )
        return load_owner_table(
            data,
            declared,
            num_classes=job.model.num_classes,
            seed=job.data.seed,
            withdrawn=withdrawn,
            deidentify=deidentify,
        )
    if data.suffix != ".npz":
        raise ConfigError(
            f"{data}: a {data.suffix or 'suffix-less'} table needs a schema: a [schema] table in "
            "the job, or --schema FILE"
        )
    try:
        with np.load(data, allow_pickle=False) as npz:
            missing = [k for k in NPZ_KEYS if k not in npz]
            if missing:
                raise ConfigError(f"{data} lacks arrays {missing}; it needs {list(NPZ_KEYS)}")
            arrays = {k: np.asarray(npz[k]) for k in NPZ_KEYS}
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read {data}: {exc}") from exc
    _no_identifiers(deidentify, f"{data} (four arrays, no named columns)")
    share = ClientData(
        x_train=arrays["x_train"].astype(np.float32),
        y_train=arrays["y_train"],
        x_test=arrays["x_test"].astype(np.float32),
        y_test=arrays["y_test"],
    )
    return OwnerTable(data=share if withdrawn is None else share.without(withdrawn))


def load_deidentified(
    job: JobConfig,
    *,
    partition: int | None,
    data: Path | None,
    schema: SchemaSection | None,
    withdrawn: WithdrawnMask | None,
    policy: OwnerPolicy,
    key_file: Path | None,
    audit: AuditLog | None,
) -> OwnerTable:
    """:func:`load_owner` with the policy's de-identification, recorded in the audit log.

    The result (columns pseudonymized and dropped, the smallest equivalence class) or the
    refusal (a table below ``policy.min_k_anonymity``, a schema that reads an identifier) is
    appended to ``audit`` before anything else happens.

    Raises:
        ConfigError: ``policy.pseudonymize_columns`` without ``key_file``, or a bad file.
        PolicyRefused: the table is refused by the policy's de-identification.
    """
    from .client.deidentify import load_pseudonym_key

    deid = None
    if policy.deidentifies:
        if policy.pseudonymize_columns and key_file is None:
            raise ConfigError("policy.pseudonymize_columns needs --pseudonym-key FILE")
        key = load_pseudonym_key(key_file) if key_file is not None else b""
        deid = policy.deidentifier(key)
    job_name, manifest = job.job.name, job.sha256
    try:
        owned = load_owner(
            job,
            partition=partition,
            data=data,
            schema=schema,
            withdrawn=withdrawn,
            deidentify=deid,
        )
    except PolicyRefused as exc:
        if audit is not None:
            audit.append(
                "deidentification_refused", direction="refused", job=job_name,
                manifest=manifest, reason=exc.reason[:MAX_TEXT],
            )  # fmt: skip
        raise
    if audit is not None and (owned.deidentified is not None or owned.excluded):
        detail = owned.deidentified.detail() if owned.deidentified is not None else {}
        audit.append(
            "deidentification" if owned.deidentified is not None else "withdrawn_excluded",
            direction="local", job=job_name, manifest=manifest,
            detail={**detail, "withdrawn_excluded": owned.excluded},
        )  # fmt: skip
    return owned


def _no_identifiers(deidentify: Deidentifier | None, what: str) -> None:
    if deidentify is not None and deidentify.active:
        raise ConfigError(
            f"the owner's policy de-identifies named columns, but {what} has none: give "
            "--data with a [schema]"
        )


def owner_trainer(job: JobConfig, share: ClientData) -> Trainer:
    """The owner's trainer for its arrays and the job's model (its own ``code.trainer``, if any).

    The job's own code (``[code]``) is checked against its pin before anything is imported.
    """
    from .app import make_owner_trainer

    input_shape, num_classes = model_shape(job)
    if tuple(share.x_train.shape[1:]) != tuple(input_shape):
        raise ConfigError(
            f"the owner's examples have shape {tuple(share.x_train.shape[1:])}; the job's model "
            f"takes {tuple(input_shape)}"
        )
    task = "regression" if num_classes == 1 else "classification"
    model_fn = model_factory(job, input_shape=input_shape, num_classes=num_classes)
    base = make_owner_trainer(job, model_fn, share, task=task)
    if not isinstance(base, TorchTrainer):
        return base
    return with_dpsgd(job, base, model_fn)


def with_dpsgd(
    job: JobConfig, base: TorchTrainer, model_fn: Callable[[], torch.nn.Module]
) -> TorchTrainer | DPSGDTrainer:
    """``base``, or a DP-SGD trainer around it when the job's ``dp.mode`` is ``dpsgd``."""
    if job.dp.mode != "dpsgd":
        return base
    from .client.dp_trainer import DPSGDTrainer  # imports Opacus only for DP-SGD jobs

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(job.model.init_seed)
        model = model_fn()
    return DPSGDTrainer(
        base, model=model, dp=job.dp, train=job.train, planned_rounds=job.job.rounds
    )


DEFAULT_UNCAPPED_EPSILON = 1000.0
"""The cap a simulated owner sets when the job fixes a noise multiplier instead of an epsilon."""


def prepare_ledger(
    path: Path, *, job: JobConfig, dataset: str, policy: OwnerPolicy | None = None
) -> Path:
    """Create (or open) an owner's ledger and set its cap from the owner's policy.

    Without a policy budget, the cap is the job's own target epsilon (plus 0.1% for the
    accountants' rounding), i.e. the owner agrees to exactly what the job says it spends.
    """
    from .client.ledger import PrivacyLedger

    path.parent.mkdir(parents=True, exist_ok=True)
    epsilon = policy.budget_epsilon if policy is not None else 0.0
    delta = (policy.budget_delta if policy is not None else 0.0) or job.dp.delta
    with PrivacyLedger(path) as ledger:
        if epsilon:
            ledger.set_cap(dataset, epsilon=epsilon, delta=delta)
        elif ledger.cap(dataset) is None:
            default = job.dp.epsilon * 1.001 if job.dp.epsilon else DEFAULT_UNCAPPED_EPSILON
            ledger.set_cap(dataset, epsilon=default, delta=delta)
    return path
