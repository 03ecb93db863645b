"""Each failure a deploying engineer meets ends with one line of plain text and exit status 2.

The timeouts passed to :func:`bulwark` are generous bounds on a hang (the test fails by raising
``TimeoutExpired``), not timing assertions: the commands take a few seconds, most of it imports.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme
from cli_support import BREAST_CANCER, bulwark, free_port, one_line, running

pytestmark = pytest.mark.integration

HE_JOB = BREAST_CANCER.parents[1] / "he_statistics" / "job.toml"


def _short_job(tmp_path: Path, *, rounds: int = 1, **replace: str) -> Path:
    text = BREAST_CANCER.read_text().replace("rounds = 10", f"rounds = {rounds}")
    for old, new in replace.items():
        assert old in text
        text = text.replace(old, new)
    path = tmp_path / "job.toml"
    path.write_text(text)
    return path


def test_public_key_of_a_missing_file_is_an_error_not_a_new_key(tmp_path: Path) -> None:
    typo = tmp_path / "hospitl-0.pem"

    done = bulwark("public-key", str(typo), timeout=60)

    assert done.returncode == 2
    assert "no such identity file" in one_line(done.stderr) and "--create" in done.stderr
    assert not typo.exists()
    created = bulwark("public-key", "--create", str(typo), timeout=60)
    assert created.returncode == 0 and len(created.stdout.strip()) == 64
    again = bulwark("public-key", str(typo), timeout=60)
    assert again.stdout == created.stdout


class Pki:
    """A coordinator certificate from one CA, client certificates from another (trustme)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        server_ca, self.client_ca, self.other_ca = trustme.CA(), trustme.CA(), trustme.CA()
        server = server_ca.issue_cert("127.0.0.1", "localhost")
        client = self.client_ca.issue_cert("hospital-0")
        stranger = self.other_ca.issue_cert("hospital-0")
        self.ca = self._write("ca.pem", server_ca.cert_pem.bytes())
        self.cert = self._write("server.pem", server.cert_chain_pems[0].bytes())
        self.key = self._write("server.key", server.private_key_pem.bytes())
        self.client_ca_pem = self._write("client-ca.pem", self.client_ca.cert_pem.bytes())
        self.other_ca_pem = self._write("other-ca.pem", self.other_ca.cert_pem.bytes())
        self.client_cert = self._write("client.pem", client.cert_chain_pems[0].bytes())
        self.client_key = self._write("client.key", client.private_key_pem.bytes())
        self.stranger_cert = self._write("stranger.pem", stranger.cert_chain_pems[0].bytes())
        self.stranger_key = self._write("stranger.key", stranger.private_key_pem.bytes())

    def _write(self, name: str, data: bytes) -> str:
        path = self.folder / name
        path.write_bytes(data)
        return str(path)


@pytest.fixture(scope="module")
def mtls_coordinator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Pki, str, Path]]:
    """A ``bulwark coordinator`` under mutual TLS on loopback, waiting for its clients."""
    folder = tmp_path_factory.mktemp("mtls")
    pki = Pki(folder)
    job = _short_job(folder)
    address = f"127.0.0.1:{free_port()}"
    with running(
        "coordinator", str(job), "--address", address, "--state", str(folder / "s.db"),
        "--tls-cert", pki.cert, "--tls-key", pki.key, "--tls-client-ca", pki.client_ca_pem,
        "--quiet", ready="listening on port",
    ):  # fmt: skip
        yield pki, address, job


def _client(address: str, job: Path, *tls: str) -> list[str]:
    return ["client", "--coordinator", address, "--job", str(job), "--partition", "0", *tls]


def test_a_plaintext_client_against_tls_is_one_line(
    mtls_coordinator: tuple[Pki, str, Path],
) -> None:
    pki, address, job = mtls_coordinator

    done = bulwark(*_client(address, job), timeout=60)

    assert done.returncode == 2
    line = one_line(done.stderr)
    assert f"cannot connect to {address}" in line and "requires TLS, give --tls-ca" in line


def test_a_client_without_a_certificate_under_mtls_is_one_line(
    mtls_coordinator: tuple[Pki, str, Path],
) -> None:
    pki, address, job = mtls_coordinator

    done = bulwark(*_client(address, job, "--tls-ca", pki.ca), timeout=60)

    assert done.returncode == 2
    assert "requires a client certificate" in one_line(done.stderr)


def test_a_client_certificate_of_another_ca_is_one_line(
    mtls_coordinator: tuple[Pki, str, Path],
) -> None:
    pki, address, job = mtls_coordinator
    tls = ("--tls-ca", pki.ca, "--tls-cert", pki.stranger_cert, "--tls-key", pki.stranger_key)

    done = bulwark(*_client(address, job, *tls), timeout=60)

    assert done.returncode == 2
    assert f"cannot connect to {address}" in one_line(done.stderr)


def test_a_wrong_ca_is_one_line(mtls_coordinator: tuple[Pki, str, Path]) -> None:
    pki, address, job = mtls_coordinator
    tls = ("--tls-ca", pki.other_ca_pem, "--tls-cert", pki.client_cert, "--tls-key", pki.client_key)

    done = bulwark(*_client(address, job, *tls), timeout=60)

    assert done.returncode == 2
    assert "certificate does not chain to --tls-ca" in one_line(done.stderr)


def test_the_keyholder_takes_tls_options_and_fails_fast_like_a_client(
    mtls_coordinator: tuple[Pki, str, Path], tmp_path: Path
) -> None:
    pki, address, _ = mtls_coordinator
    enrolment = tmp_path / "enrolment.toml"
    enrolment.write_text("".join(f'h{i} = "{f"{i:02x}" * 32}"\n' for i in range(5)))
    common = ("keyholder", "--coordinator", address, "--job", str(HE_JOB))
    common += ("--enrolment", str(enrolment), "--tls-ca", pki.ca, "--quiet")

    alone = bulwark(*common, "--tls-cert", pki.client_cert, timeout=60)
    no_cert = bulwark(*common, timeout=120)

    assert alone.returncode == 2
    assert "--tls-cert and --tls-key go together" in one_line(alone.stderr)
    assert no_cert.returncode == 2
    assert "requires a client certificate" in one_line(no_cert.stderr)


def test_simulate_on_a_folder_that_holds_another_job_names_the_field(tmp_path: Path) -> None:
    out = tmp_path / "out"
    first = _short_job(tmp_path)
    assert bulwark("simulate", str(first), "--output", str(out), "--quiet").returncode == 0
    other = tmp_path / "other.toml"
    other.write_text(
        "# a comment\n" + first.read_text().replace("learning_rate = 0.1", "learning_rate = 0.5")
    )

    for transport in ("inmemory", "grpc"):
        done = bulwark(
            "simulate", str(other), "--output", str(out), "--transport", transport, "--quiet",
            timeout=120,
        )  # fmt: skip

        assert done.returncode == 2
        line = one_line(done.stderr)
        assert "holds job" in line and "train.learning_rate (0.1 -> 0.5)" in line


def test_a_client_process_that_fails_ends_a_grpc_simulation_at_once(tmp_path: Path) -> None:
    # The coordinator needs no data (the model's shape is in the job); every owner's data set
    # is missing, so each client process exits at once. The job waits 300 s for clients.
    job = tmp_path / "job.toml"
    job.write_text(
        '[job]\nname = "nodata"\nrounds = 1\n'
        f'[data]\ndataset = "fashion_mnist"\nnum_clients = 3\npath = "{tmp_path / "nowhere"}"\n'
        '[model]\nname = "logreg"\ninput_shape = [1, 28, 28]\nnum_classes = 10\n'
        "[sampling]\nmin_clients = 2\nwait_for_clients_s = 300\n"
    )

    done = bulwark("simulate", str(job), "--transport", "grpc", "--quiet", timeout=120)

    assert done.returncode == 2
    line = [x for x in done.stderr.splitlines() if x.startswith("error:")]
    assert len(line) == 1 and "client-" in line[0] and "dataset-fashion-mnist" in line[0]
    assert "owners the job needs are left" in line[0]


def test_certs_never_overwrite_a_ca_or_a_key(tmp_path: Path) -> None:
    ca = str(tmp_path / "ca")
    assert bulwark("certs", "init", "--out", ca, "--ca-name", "CA", timeout=60).returncode == 0
    key = (tmp_path / "ca" / "ca.key").read_bytes()

    again = bulwark("certs", "init", "--out", ca, "--ca-name", "CA", timeout=60)
    no_ca = bulwark("certs", "issue", "--ca", str(tmp_path / "x"), "--name", "h", "--out", ca)

    assert again.returncode == 2 and "already exists" in one_line(again.stderr)
    assert no_ca.returncode == 2 and "bulwark certs init" in one_line(no_ca.stderr)
    assert (tmp_path / "ca" / "ca.key").read_bytes() == key


def test_an_owner_process_that_fails_ends_a_grpc_statistics_job_at_once(tmp_path: Path) -> None:
    job = tmp_path / "stats.toml"
    text = HE_JOB.read_text().replace('dataset = "diabetes"', 'dataset = "no_such_data"')
    job.write_text(text.replace("wait_for_clients_s = 120", "wait_for_clients_s = 300"))

    done = bulwark("stats", str(job), "--transport", "grpc", "--quiet", timeout=120)

    assert done.returncode == 2
    line = one_line(done.stderr)
    assert "failed: exit 2: error: unknown dataset 'no_such_data'" in line
    assert "owners the job needs are left" in line
