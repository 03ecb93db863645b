"""De-identification before use: keyed pseudonyms, dropped identifiers, a k-anonymity check.

The table is a real CSV: scikit-learn's breast-cancer columns, with synthetic record ids,
names and two quasi-identifiers (an age band and a region) beside them.
"""

from __future__ import annotations

import csv
import os
import stat
from pathlib import Path

import numpy as np
import pytest
from sklearn.datasets import load_breast_cancer

from fl_core.audit import AuditLog, read_audit
from fl_core.client.consent import withdrawn_mask
from fl_core.client.deidentify import load_pseudonym_key, pseudonymize, smallest_class
from fl_core.client.ledger import PrivacyLedger
from fl_core.client.policy import OwnerPolicy
from fl_core.config import parse_job
from fl_core.errors import ConfigError, PolicyRefused
from fl_core.owner import load_deidentified

FEATURES = ("mean radius", "mean texture", "mean smoothness")


def _csv(path: Path, *, rows: int = 120, rare_region: bool = False) -> Path:
    data = load_breast_cancer()
    names = list(data.feature_names)
    with path.open("w", newline="") as fh:
        out = csv.writer(fh)
        out.writerow(["patient_id", "name", "age_band", "region", *FEATURES, "target"])
        for i in range(rows):
            region = "north" if i % 2 else "south"
            if rare_region and i == 7:
                region = "island"  # one row alone in its class
            out.writerow([
                f"P{i:05d}", f"Person {i}", ["40-49", "50-59", "60-69"][i % 3], region,
                *(data.data[i, names.index(f)] for f in FEATURES), int(data.target[i]),
            ])  # fmt: skip
    return path


def _job():  # type: ignore[no-untyped-def]
    return parse_job(
        '[job]\nname = "bc"\nrounds = 1\npurpose = "research"\n[data]\ndataset = "owner"\n'
        'num_clients = 2\n[model]\nname = "logreg"\ninput_shape = [3]\nnum_classes = 2\n'
        '[schema]\nfeatures = ["mean radius", "mean texture", "mean smoothness"]\n'
        'label = "target"\nid_column = "patient_id"\n'
    )


POLICY = OwnerPolicy(
    pseudonymize_columns=("patient_id",),
    drop_columns=("name", "phone"),
    quasi_identifiers=("age_band", "region"),
    min_k_anonymity=5,
)


def test_the_key_file_is_created_owner_only_and_reused(tmp_path: Path) -> None:
    key = load_pseudonym_key(tmp_path / "k" / "pseudonym.key")
    assert len(key) == 32
    assert stat.S_IMODE(os.stat(tmp_path / "k" / "pseudonym.key").st_mode) == 0o600
    assert load_pseudonym_key(tmp_path / "k" / "pseudonym.key") == key
    os.chmod(tmp_path / "k" / "pseudonym.key", 0o644)
    with pytest.raises(ConfigError, match="readable by others"):
        load_pseudonym_key(tmp_path / "k" / "pseudonym.key")


def test_pseudonyms_are_keyed_stable_and_per_column() -> None:
    a, b = b"a" * 32, b"b" * 32
    ids = np.array(["P1", "P2"])
    assert (pseudonymize(a, "id", ids) == pseudonymize(a, "id", ids)).all()
    assert not (pseudonymize(a, "id", ids) == pseudonymize(b, "id", ids)).any()
    assert not (pseudonymize(a, "id", ids) == pseudonymize(a, "other", ids)).any()
    assert smallest_class({"q": np.array([1, 1, 2])}, ("q",)) == 1


def test_an_owner_table_is_deidentified_before_use_and_it_is_audited(tmp_path: Path) -> None:
    # Prepare
    table = _csv(tmp_path / "t.csv")
    log = AuditLog(tmp_path / "audit.db", party="h1", role="owner")

    # Execute
    owned = load_deidentified(
        _job(), partition=None, data=table, schema=None, withdrawn=None, policy=POLICY,
        key_file=tmp_path / "pseudonym.key", audit=log,
    )  # fmt: skip
    log.close()

    # Assert: the job's arrays carry pseudonyms, the owner keeps the raw ids for itself
    key = load_pseudonym_key(tmp_path / "pseudonym.key")
    ids = owned.data.record_ids()
    assert len(ids) == 120 and not any(i.startswith("P") for i in ids)
    assert set(ids) == set(pseudonymize(key, "patient_id", np.array(owned.raw_ids)).tolist())
    assert set(owned.raw_ids) == {f"P{i:05d}" for i in range(120)}
    assert owned.data.x_train.shape[1] == 3
    d = owned.deidentified
    assert d is not None and d.dropped == ("name",) and d.pseudonymized == ("patient_id",)
    assert d.smallest_class == 20 and d.min_k == 5  # 3 age bands x 2 regions over 120 rows
    _, entries = read_audit(tmp_path / "audit.db")
    (entry,) = [e for e in entries if e.kind == "deidentification"]
    assert entry.detail["dropped"] == ["name"] and entry.detail["smallest_class"] == 20
    assert "Person" not in (tmp_path / "audit.db").read_bytes().decode("latin-1")


def test_a_table_below_k_is_refused_and_the_refusal_audited(tmp_path: Path) -> None:
    table = _csv(tmp_path / "t.csv", rare_region=True)
    log = AuditLog(tmp_path / "audit.db", party="h1", role="owner")
    with pytest.raises(PolicyRefused, match="not 5-anonymous .* smallest equivalence class has 1"):
        load_deidentified(
            _job(), partition=None, data=table, schema=None, withdrawn=None, policy=POLICY,
            key_file=tmp_path / "pseudonym.key", audit=log,
        )  # fmt: skip
    log.close()
    _, entries = read_audit(tmp_path / "audit.db")
    assert [e.kind for e in entries] == ["deidentification_refused"]


def test_withdrawn_records_leave_before_k_is_checked(tmp_path: Path) -> None:
    # the rare row withdrawn: the rest is 5-anonymous again, and is used without it
    table = _csv(tmp_path / "t.csv", rare_region=True)
    with PrivacyLedger(tmp_path / "l.db") as book:
        book.withdraw("owner", ["P00007"])
    owned = load_deidentified(
        _job(), partition=None, data=table, schema=None,
        withdrawn=withdrawn_mask(tmp_path / "l.db", "owner"), policy=POLICY,
        key_file=tmp_path / "pseudonym.key", audit=None,
    )  # fmt: skip
    assert owned.excluded == 1 and "P00007" not in owned.raw_ids
    assert owned.data.num_train + owned.data.num_test == 119


def test_a_schema_that_reads_an_identifier_is_refused(tmp_path: Path) -> None:
    table = _csv(tmp_path / "t.csv")
    policy = OwnerPolicy(drop_columns=("mean radius",))
    with pytest.raises(PolicyRefused, match="reads column 'mean radius'"):
        load_deidentified(
            _job(), partition=None, data=table, schema=None, withdrawn=None, policy=policy,
            key_file=None, audit=None,
        )  # fmt: skip


def test_policy_fields_are_checked_and_unknown_ones_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="min_k_anonymity needs policy.quasi_identifiers"):
        OwnerPolicy(min_k_anonymity=3)
    with pytest.raises(ConfigError, match="both pseudonymize_columns and drop_columns"):
        OwnerPolicy(pseudonymize_columns=("a",), drop_columns=("a",))
    with pytest.raises(ConfigError, match="min_k_anonymity = -1"):
        OwnerPolicy(min_k_anonymity=-1, quasi_identifiers=("a",))
    path = tmp_path / "p.toml"
    path.write_text("[policy]\nmin_k_anonimity = 5\n")
    with pytest.raises(ConfigError, match="policy.min_k_anonimity is not a known field"):
        OwnerPolicy.from_toml(path)
    path.write_text('[policy]\nquasi_identifiers = ["age_band"]\nmin_k_anonymity = 5\n')
    assert OwnerPolicy.from_toml(path).min_k_anonymity == 5
    with pytest.raises(ConfigError, match="needs --pseudonym-key"):
        load_deidentified(
            _job(), partition=None, data=_csv(tmp_path / "t.csv"), schema=None, withdrawn=None,
            policy=POLICY, key_file=None, audit=None,
        )  # fmt: skip
