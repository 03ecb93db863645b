"""``bulwark data withdraw`` between two runs of a job: the second run trains without them."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from fl_core.client.ledger import PrivacyLedger
from fl_core.config import load_job
from fl_core.simulation import client_shares, job_dataset
from tests.cli_support import BREAST_CANCER, bulwark, command, environment, free_port

pytestmark = pytest.mark.integration


def _job(tmp_path: Path) -> Path:
    text = (
        BREAST_CANCER.read_text()
        .replace("rounds = 10", "rounds = 1")
        .replace("num_clients = 5", "num_clients = 2")
        .replace("min_clients = 5", "min_clients = 2")
    )
    path = tmp_path / "job.toml"
    path.write_text(text)
    return path


def _run(job: Path, tmp_path: Path, tag: str, ledgers: list[Path]) -> None:
    port = free_port()
    coordinator = subprocess.Popen(
        command("coordinator", str(job), "--state", str(tmp_path / f"{tag}.db"), "--address",
                f"127.0.0.1:{port}", "--quiet"),
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=environment(),
    )  # fmt: skip
    clients = [
        subprocess.Popen(
            command(
                "client",
                "--coordinator",
                f"127.0.0.1:{port}",
                "--job",
                str(job),
                "--partition",
                str(i),
                "--name",
                f"client-{i}",
                "--ledger",
                str(ledger),
                "--quiet",
                "--threads",
                "1",
            ),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env=environment(),
        )  # fmt: skip
        for i, ledger in enumerate(ledgers)
    ]
    try:
        _, err = coordinator.communicate(timeout=240)
    finally:
        errs = [c.communicate(timeout=60)[1] for c in clients]
    assert coordinator.returncode == 0, err
    assert all(c.returncode == 0 for c in clients), errs


def test_withdrawn_records_are_left_out_of_the_next_run(tmp_path: Path) -> None:
    # Prepare: a two-owner job; client-0's share and five of its record ids
    job_path = _job(tmp_path)
    job = load_job(job_path)
    share = client_shares(job, job_dataset(job))[0]
    withdrawn = [*share.ids_train[:4].tolist(), *share.ids_test[:1].tolist()]  # type: ignore[index]
    ids_file = tmp_path / "withdraw.txt"
    ids_file.write_text("\n".join([*withdrawn, "breast_cancer:999999"]) + "\n")
    ledgers = [tmp_path / f"ledger-{i}.db" for i in range(2)]
    rows = share.num_train + share.num_test

    # Execute: run, withdraw, run again
    _run(job_path, tmp_path, "first", ledgers)
    done = bulwark("data", "withdraw", "--ids", str(ids_file), "--ledger", str(ledgers[0]))
    _run(job_path, tmp_path, "second", ledgers)
    shown = bulwark("data", "show", "--ledger", str(ledgers[0]))

    # Assert: the withdrawal names the first run's round; the second run read 5 rows fewer
    assert done.returncode == 0, done.stderr
    assert "withdrew 6 records of data set 'breast_cancer'" in done.stdout
    assert "breast-cancer-fedavg round 1" in done.stdout
    with PrivacyLedger(ledgers[0]) as book:
        uses = book.uses("breast_cancer")
        (withdrawal,) = book.withdrawals()
        assert book.verify() > 0
    assert [u["rows"] for u in uses] == [rows, rows - 5]
    assert withdrawal.rounds_used == (("breast-cancer-fedavg", 1),)
    with PrivacyLedger(ledgers[1]) as other:  # the other owner withdrew nothing
        assert [u["rows"] for u in other.uses()][0] == [u["rows"] for u in other.uses()][1]
    assert shown.returncode == 0, shown.stderr
    assert "breast-cancer-fedavg:1" in shown.stdout
    stored = b"".join(p.read_bytes() for p in tmp_path.glob("ledger-0.db*")).decode("latin-1")
    assert not any(f'{i}"' in stored or f"{i}\n" in stored for i in withdrawn)


def test_a_client_refuses_a_table_below_its_k_in_one_line(tmp_path: Path) -> None:
    # Prepare: breast-cancer columns, synthetic ids, and one quasi-identifier class of one row
    from sklearn.datasets import load_breast_cancer

    data = load_breast_cancer()
    lines = ["patient_id,name,region,mean radius,mean texture,target"]
    for i in range(60):
        region = "island" if i == 3 else ["north", "south"][i % 2]
        lines.append(f"P{i},Person {i},{region},{data.data[i, 0]},{data.data[i, 1]},"
                     f"{data.target[i]}")  # fmt: skip
    table = tmp_path / "h1.csv"
    table.write_text("\n".join(lines) + "\n")
    job = tmp_path / "job.toml"
    job.write_text(
        '[job]\nname = "bc"\nrounds = 1\n[data]\ndataset = "owner"\nnum_clients = 1\n'
        '[model]\nname = "logreg"\ninput_shape = [2]\nnum_classes = 2\n[sampling]\n'
        'min_clients = 1\n[schema]\nfeatures = ["mean radius", "mean texture"]\n'
        'label = "target"\nid_column = "patient_id"\n'
    )
    policy = tmp_path / "policy.toml"
    policy.write_text(
        '[policy]\npseudonymize_columns = ["patient_id"]\ndrop_columns = ["name"]\n'
        'quasi_identifiers = ["region"]\nmin_k_anonymity = 3\n'
    )

    # Execute: nothing listens on the port; the owner refuses before it dials
    done = bulwark(
        "client", "--coordinator", f"127.0.0.1:{free_port()}", "--job", str(job), "--data",
        str(table), "--policy", str(policy), "--pseudonym-key", str(tmp_path / "p.key"),
        "--audit", str(tmp_path / "audit.db"), "--name", "h1", "--connect-timeout", "1",
    )  # fmt: skip
    shown = bulwark("audit", "export", str(tmp_path / "audit.db"))

    # Assert
    assert done.returncode == 2
    assert "not 3-anonymous over ['region']: its smallest equivalence class has 1" in done.stderr
    assert "Traceback" not in done.stderr
    assert (tmp_path / "p.key").stat().st_mode & 0o777 == 0o600
    assert '"kind":"deidentification_refused"' in shown.stdout.replace(" ", "")


def test_withdraw_errors_are_one_line(tmp_path: Path) -> None:
    ids = tmp_path / "ids.txt"
    ids.write_text("\n\n")
    with PrivacyLedger(tmp_path / "l.db") as book:
        book.record_use(job="j", round=1, dataset="a", rows=1)
        book.record_use(job="j", round=1, dataset="b", rows=1)
    empty = bulwark("data", "withdraw", "--ids", str(ids), "--ledger", str(tmp_path / "l.db"))
    ids.write_text("x\n")
    ambiguous = bulwark("data", "withdraw", "--ids", str(ids), "--ledger", str(tmp_path / "l.db"))
    missing = bulwark("data", "withdraw", "--ids", str(ids), "--ledger", str(tmp_path / "no.db"))
    assert empty.returncode == ambiguous.returncode == missing.returncode == 2
    assert "no record ids" in empty.stderr
    assert "give --dataset NAME" in ambiguous.stderr
    assert "no ledger at" in missing.stderr
