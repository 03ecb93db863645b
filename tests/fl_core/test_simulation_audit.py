"""Every simulated party keeps an audit log; a refusal is in the owner's and the coordinator's."""

from __future__ import annotations

from pathlib import Path

from fl_core.audit import read_audit, verify_audit
from fl_core.config import parse_job
from fl_core.simulation import audit_path, simulate

ROOT = Path(__file__).resolve().parents[2]


def test_a_policy_refusal_is_recorded_by_both_sides(tmp_path: Path) -> None:
    # Prepare: owners whose policy allows less epsilon per round than the job spends
    text = (ROOT / "examples" / "breast_cancer" / "dp_central.toml").read_text()
    job = parse_job(text.replace("rounds = 10", "rounds = 1"))
    policy = tmp_path / "policy.toml"
    policy.write_text("[policy]\nmax_round_epsilon = 0.05\n")
    # Execute
    result = simulate(job, output=tmp_path / "run", owner_policy=policy)
    # Assert: the job failed on the refusals, and each side recorded them with the reason
    assert result.done.status == "failed"
    assert "policy.max_round_epsilon" in result.done.reason
    run = tmp_path / "run"
    for party in ["coordinator", *(f"client-{i}" for i in range(5))]:
        verify_audit(audit_path(run, party))
    _, owner = read_audit(audit_path(run, "client-3"))
    refusals = [e for e in owner if e.kind == "refusal"]
    assert refusals and all(e.direction == "refused" for e in refusals)
    assert all("policy.max_round_epsilon" in e.reason and e.stage == "fit" for e in refusals)
    _, coordinator = read_audit(audit_path(run, "coordinator"))
    received = [e for e in coordinator if e.kind == "refusal"]
    assert {e.peer for e in received} == {f"client-{i}" for i in range(5)}
    assert all("policy.max_round_epsilon" in e.reason for e in received)
    assert len(received) == 5 * len(refusals)  # every attempt of every owner, on both sides
    assert [e.kind for e in coordinator].count("round_aborted") == len(refusals)
    assert coordinator[-1].kind == "job_done" and coordinator[-1].detail["status"] == "failed"
