"""A coordinator's job or task that breaks the owner's completed policy is refused (issue 12).

Each test plays the coordinator through the owner's public API (``Client.answer``, what the
runtime calls for every task; ``Client.run`` for the job as a whole) with the real server-side
round objects (tests/owner_harness.py). On main before this change every one of these rules was
missing or an unknown field of the policy file, and the owner trained and released; now each
ends in a refusal whose reason names the rule, nothing is released, and the refusal is in the
owner's audit log.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, cast

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from owner_harness import drive, server_round
from support import LinearTrainer, job_text, parse

from fl_core.aggregators import create_aggregator
from fl_core.audit import AuditLog, read_audit
from fl_core.client.ledger import PrivacyLedger
from fl_core.client.policy import OwnerPolicy
from fl_core.client.runtime import Client
from fl_core.config import JobConfig
from fl_core.coordinator.service import Coordinator
from fl_core.errors import ConfigError, PolicyRefused
from fl_core.federation import Member, Roster, raw_public
from fl_core.transport.base import ClientTransport

CENTRAL = """
[dp]
mode = "central"
epsilon = 8.0
clip = 1.0
"""

CENTRAL_NOISE = """
[dp]
mode = "central"
noise_multiplier = {z}
clip = 1.0
"""


def owner(
    job: JobConfig,
    policy: OwnerPolicy,
    folder: Path,
    *,
    ledger: bool = False,
    **options: Any,
) -> Client:
    """One data owner with an audit log (and a ledger capped at 1000, for DP jobs)."""
    book = None
    if ledger:
        book = folder / "ledger.db"
        with PrivacyLedger(book) as led:
            led.set_cap(job.data.dataset, epsilon=1000.0, delta=1e-5)
    return Client(
        name="client-0",
        job=job,
        trainer=LinearTrainer(0),
        policy=policy,
        ledger=book,
        audit=AuditLog(folder / "audit.db", party="client-0", role="owner"),
        **options,
    )


def one_round(job: JobConfig, client: Client, round: int = 1) -> dict[str, Exception]:
    """Drive one round of ``job`` at ``client``; return the refusals."""
    _, refusals = drive(job, server_round(job, [client], round=round), [client], round=round)
    return dict(refusals)


def audited_refusals(client: Client) -> list[str]:
    """Reasons of every refusal in the owner's audit log."""
    assert client.audit is not None
    _, entries = read_audit(client.audit.path)
    return [e.reason for e in entries if e.direction == "refused"]


def trained(client: Client) -> int:
    return len(client.trainer.fits)  # type: ignore[attr-defined]


def mean_job(extra: str = "") -> JobConfig:
    return parse(job_text(clients=1, min_clients=1, extra=extra))


def refused(client: Client, job: JobConfig, match: str) -> None:
    """The round is refused naming ``match``, nothing is trained, and the audit log says why."""
    refusals = one_round(job, client)
    assert list(refusals) == ["client-0"]
    assert isinstance(refusals["client-0"], PolicyRefused)
    assert match in str(refusals["client-0"])
    assert trained(client) == 0
    assert any(match in r for r in audited_refusals(client))


class _Unreachable:
    """A transport the owner must never use: the job is refused before it joins."""

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"the owner called {name} on a job it should have refused")


# --- parties -------------------------------------------------------------------------------------


def test_a_coordinator_not_on_the_owners_list_is_refused(tmp_path: Path) -> None:
    job = mean_job()
    policy = OwnerPolicy(allowed_coordinators=("coord-a",))
    client = owner(job, policy, tmp_path, coordinator="coord-b")
    refused(client, job, "policy.allowed_coordinators")


def test_a_job_from_a_coordinator_not_on_the_list_is_refused_before_joining(
    tmp_path: Path,
) -> None:
    job = mean_job()
    client = owner(job, OwnerPolicy(allowed_coordinators=("coord-a",)), tmp_path)
    with pytest.raises(PolicyRefused, match="an unnamed coordinator"):
        asyncio.run(client.run(cast(ClientTransport, _Unreachable())))
    assert client.audit is not None
    _, entries = read_audit(client.audit.path)
    assert [e.kind for e in entries] == ["job_refused"]
    assert "policy.allowed_coordinators" in entries[0].reason


def _roster(*members: tuple[str, str]) -> tuple[Roster, dict[str, Ed25519PrivateKey]]:
    keys = {name: Ed25519PrivateKey.generate() for name, _ in members}
    roster, _ = Roster.sign(
        "test",
        [Member(name=n, role=r, key=raw_public(keys[n].public_key())) for n, r in members],
        Ed25519PrivateKey.generate(),
    )
    return roster, keys


def test_an_allowed_name_that_is_no_coordinator_on_the_roster_is_refused(tmp_path: Path) -> None:
    roster, keys = _roster(("coord-a", "owner"), ("client-0", "owner"))
    job = mean_job()
    policy = OwnerPolicy(allowed_coordinators=("coord-a",))
    client = owner(
        job, policy, tmp_path, coordinator="coord-a", roster=roster, identity_key=keys["client-0"]
    )
    refused(client, job, "roster as coordinator")


def test_an_allowed_coordinator_on_the_roster_runs(tmp_path: Path) -> None:
    roster, keys = _roster(("coord-a", "coordinator"), ("client-0", "owner"))
    job = mean_job()
    client = owner(
        job,
        OwnerPolicy(allowed_coordinators=("coord-a",)),
        tmp_path,
        coordinator="coord-a",
        roster=roster,
        identity_key=keys["client-0"],
    )
    assert one_round(job, client) == {} and trained(client) == 1


HE = "[aggregation]\nkind = 'he'\n[he]\nclip = 2.0\n"


def test_a_key_holder_not_on_the_owners_list_is_refused(tmp_path: Path) -> None:
    roster, keys = _roster(
        ("kh-good", "keyholder"), ("kh-evil", "keyholder"), ("client-0", "owner")
    )
    evil = raw_public(keys["kh-evil"].public_key()).hex()
    job = parse(job_text(clients=1, min_clients=1, extra=HE + f'keyholder_key = "{evil}"\n'))
    policy = OwnerPolicy(allowed_keyholders=("kh-good",))
    client = owner(job, policy, tmp_path, roster=roster, identity_key=keys["client-0"])
    with pytest.raises(PolicyRefused, match="policy.allowed_keyholders"):
        client.check_job()
    # the owner trusts exactly the listed key holder's roster key, not the job's
    assert client.policy.trusted_keyholders == (raw_public(keys["kh-good"].public_key()).hex(),)


def test_key_holders_by_name_without_a_roster_are_refused(tmp_path: Path) -> None:
    job = parse(job_text(clients=1, min_clients=1, extra=HE))
    client = owner(job, OwnerPolicy(allowed_keyholders=("kh-good",)), tmp_path)
    with pytest.raises(PolicyRefused, match="no signed roster"):
        client.check_job()


# --- transport -----------------------------------------------------------------------------------


def test_a_connection_without_tls_is_refused_when_tls_is_required(tmp_path: Path) -> None:
    job = mean_job()
    client = owner(job, OwnerPolicy(require_tls=True), tmp_path, tls=False)
    refused(client, job, "policy.require_tls")


def test_tls_required_and_present_runs(tmp_path: Path) -> None:
    job = mean_job()
    client = owner(job, OwnerPolicy(require_tls=True), tmp_path, tls=True)
    assert one_round(job, client) == {}


# --- a minimum of DP -----------------------------------------------------------------------------


def test_a_job_without_dp_is_refused_when_the_owner_requires_dp(tmp_path: Path) -> None:
    job = mean_job()
    refused(owner(job, OwnerPolicy(max_epsilon=4.0), tmp_path), job, "dp.mode = 'none'")


def test_a_job_epsilon_above_the_owners_maximum_is_refused(tmp_path: Path) -> None:
    job = mean_job(CENTRAL)
    client = owner(job, OwnerPolicy(max_epsilon=4.0), tmp_path, ledger=True)
    refused(client, job, "policy.max_epsilon")


def test_a_round_epsilon_above_the_owners_maximum_is_refused_and_not_charged(
    tmp_path: Path,
) -> None:
    job = mean_job(CENTRAL)
    client = owner(job, OwnerPolicy(max_round_epsilon=0.5), tmp_path, ledger=True)
    refusals = one_round(job, client)
    assert "policy.max_round_epsilon" in str(refusals["client-0"])
    with PrivacyLedger(tmp_path / "ledger.db") as book:
        assert book.entries() == []  # nothing charged, nothing released
    assert any("policy.max_round_epsilon" in r for r in audited_refusals(client))


def test_a_job_that_would_pass_the_maximum_epsilon_is_stopped_at_it(tmp_path: Path) -> None:
    # The job fixes a noise multiplier, not an epsilon: only the owner's own accounting of each
    # release can tell when the job reaches the owner's maximum.
    job = parse(job_text(clients=1, min_clients=1, rounds=6, extra=CENTRAL_NOISE.format(z=1.0)))
    client = owner(job, OwnerPolicy(max_epsilon=5.0), tmp_path, ledger=True)
    results = [one_round(job, client, round=r) for r in range(1, 7)]
    assert results[0] == {}
    assert any("policy.max_epsilon" in str(r.get("client-0", "")) for r in results)
    with PrivacyLedger(tmp_path / "ledger.db") as book:
        assert 0 < book.spent(job.data.dataset) <= 5.0


def test_an_explicit_noise_multiplier_below_the_minimum_is_refused(tmp_path: Path) -> None:
    job = mean_job(CENTRAL_NOISE.format(z=0.5))
    client = owner(job, OwnerPolicy(min_noise_multiplier=1.0), tmp_path, ledger=True)
    refused(client, job, "policy.min_noise_multiplier")


def test_a_calibrated_noise_multiplier_below_the_minimum_is_refused(tmp_path: Path) -> None:
    # epsilon 8 over 3 rounds calibrates far less noise than 50 times the clip
    job = mean_job(CENTRAL)
    client = owner(job, OwnerPolicy(min_noise_multiplier=50.0), tmp_path, ledger=True)
    refused(client, job, "below the owner's minimum 50")


def test_distributed_dp_is_refused_when_a_gaussian_noise_floor_is_required(
    tmp_path: Path,
) -> None:
    extra = "[aggregation]\nkind = 'secagg'\n[dp]\nmode = 'distributed'\nepsilon = 8.0\n"
    job = parse(job_text(clients=3, min_clients=3, extra=extra))
    policy = OwnerPolicy(min_noise_multiplier=1.0)
    with pytest.raises(PolicyRefused, match="adds no Gaussian noise"):
        policy.check_job(job)


# --- data ----------------------------------------------------------------------------------------


def test_a_data_set_the_owner_does_not_allow_is_refused(tmp_path: Path) -> None:
    job = mean_job()
    refused(owner(job, OwnerPolicy(allowed_datasets=("diabetes",)), tmp_path), job, "'synthetic'")


def test_a_column_the_owner_does_not_allow_is_refused() -> None:
    job = parse(job_text().replace('dataset = "synthetic"', 'dataset = "breast_cancer"'))
    policy = OwnerPolicy(allowed_columns=("mean radius", "mean texture"))
    with pytest.raises(PolicyRefused, match=r"columns \['mean perimeter'"):
        policy.check_job(job)


def test_a_statistics_job_may_read_only_allowed_columns() -> None:
    from support_he import COLUMNS, stats_job_text

    job = parse(stats_job_text())
    OwnerPolicy(allowed_columns=COLUMNS).check_job(job)
    with pytest.raises(PolicyRefused, match=r"columns \['target'\]"):
        OwnerPolicy(allowed_columns=COLUMNS[:-1]).check_job(job)


def test_unknown_columns_are_refused_when_columns_are_restricted(tmp_path: Path) -> None:
    job = mean_job()  # a data set the owner cannot look up: it cannot tell the columns
    refused(owner(job, OwnerPolicy(allowed_columns=("age",)), tmp_path), job, "cannot tell")


def test_unnamed_features_are_refused_when_columns_are_restricted() -> None:
    job = mean_job()
    with pytest.raises(PolicyRefused, match="unnamed features"):
        OwnerPolicy(allowed_columns=("age",)).check_job(job, columns=())


# --- volume --------------------------------------------------------------------------------------


def test_releases_beyond_the_owners_maximum_are_refused(tmp_path: Path) -> None:
    job = mean_job()
    client = owner(job, OwnerPolicy(max_releases=1), tmp_path)
    assert one_round(job, client, round=1) == {}
    second = one_round(job, client, round=2)
    assert "policy.max_releases" in str(second["client-0"])
    assert trained(client) == 1
    assert any("policy.max_releases" in r for r in audited_refusals(client))


# --- the policy file -----------------------------------------------------------------------------


def test_the_policy_file_reads_every_rule(tmp_path: Path) -> None:
    path = tmp_path / "policy.toml"
    path.write_text(
        "[policy]\n"
        'allowed_coordinators = ["coord-a"]\nallowed_keyholders = ["kh-1"]\n'
        "max_epsilon = 4\nmax_round_epsilon = 1.5\nmin_noise_multiplier = 0.8\n"
        'require_tls = true\nallowed_datasets = ["breast_cancer"]\n'
        'allowed_columns = ["mean radius"]\nmax_releases = 20\n'
    )
    policy = OwnerPolicy.from_toml(path)
    assert policy.allowed_coordinators == ("coord-a",) and policy.allowed_keyholders == ("kh-1",)
    assert (policy.max_epsilon, policy.max_round_epsilon, policy.min_noise_multiplier) == (
        4,
        1.5,
        0.8,
    )
    assert policy.require_tls and policy.max_releases == 20
    assert policy.allowed_datasets == ("breast_cancer",)
    assert policy.allowed_columns == ("mean radius",)


@pytest.mark.parametrize(
    ("line", "match"),
    [
        ("max_epsylon = 4", "policy.max_epsylon is not a known field"),
        ('allowed_coordinators = "coord-a"', "policy.allowed_coordinators must be a list"),
        ("max_epsilon = -1", "policy.max_epsilon"),
        ('require_tls = "yes"', "policy.require_tls must be true or false"),
        ("max_releases = 1.5", "policy.max_releases"),
    ],
)
def test_a_bad_policy_field_is_named(tmp_path: Path, line: str, match: str) -> None:
    path = tmp_path / "policy.toml"
    path.write_text(f"[policy]\n{line}\n")
    with pytest.raises(ConfigError, match=match):
        OwnerPolicy.from_toml(path)


def test_a_roster_coordinator_not_on_the_owners_list_is_refused_at_join(tmp_path: Path) -> None:
    """The coordinator proves its roster name at join; the owner checks that name, not a claim."""
    from fl_core.coordinator.store import Store
    from fl_core.federation import simulated_roster
    from fl_core.strategies import create_strategy
    from fl_core.transport.inmemory import InMemoryTransport
    from fl_core.types import Layout

    # Prepare: a real coordinator on the roster as 'coord-b'; the owner allows only 'coord-a'
    roster, keys = simulated_roster(["client-0"], coordinator="coord-b")
    job = mean_job()
    trainer = LinearTrainer(0)
    weights = trainer.initial_weights()
    store = Store(tmp_path / "state.db")
    coordinator = Coordinator(
        job,
        store=store,
        initial_weights=Layout.of(weights).flatten(weights),
        strategy=create_strategy(job.strategy),
        aggregator=create_aggregator(job),
        roster=roster,
        identity_key=keys["coord-b"],
        name="coord-b",
    )
    client = owner(
        job,
        OwnerPolicy(allowed_coordinators=("coord-a",)),
        tmp_path,
        roster=roster,
        identity_key=keys["client-0"],
    )
    # Execute
    with pytest.raises(PolicyRefused, match="run by 'coord-b'"):
        asyncio.run(client.run(InMemoryTransport(coordinator)))
    store.close()
    # Assert: the proven name was checked and the refusal recorded; nothing was trained
    assert client.coordinator == "coord-b" and trained(client) == 0
    assert any("policy.allowed_coordinators" in r for r in audited_refusals(client))
