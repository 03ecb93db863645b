"""Which measure serves which obligation: PIPL and GDPR articles (a mapping, not legal advice).

Each row names a Bulwark measure, the articles of China's Personal Information Protection Law
(PIPL, 2021) and of the EU General Data Protection Regulation (GDPR, 2016/679) whose obligation
it helps an organisation meet, and how to tell from a run whether it was in force. Whether a
measure is *sufficient* for an obligation is for the organisation and its counsel to judge.
"""

from __future__ import annotations

from dataclasses import dataclass

DISCLAIMER = (
    "This table maps technical measures to the legal obligations they help meet. It is a "
    "mapping, not legal advice: whether a measure is sufficient for an obligation in a given "
    "processing activity is for the organisation and its counsel to decide."
)


@dataclass(frozen=True, slots=True)
class Obligation:
    """One row of the mapping."""

    measure: str
    key: str
    """What in the run shows the measure in force (see :func:`in_force`)."""
    pipl: str
    gdpr: str
    serves: str


OBLIGATIONS: tuple[Obligation, ...] = (
    Obligation(
        "Purpose check: the owner takes part only in jobs whose declared purpose its policy allows",
        "purpose",
        "Art. 6 (clear, reasonable purpose directly related to processing)",
        "Art. 5(1)(b) (purpose limitation)",
        "purpose limitation",
    ),
    Obligation(
        "Raw records never leave the owner; only model updates or statistics do",
        "federated",
        "Art. 6 (minimum scope), Art. 51 (security measures)",
        "Art. 5(1)(c) (data minimisation), Art. 25 (data protection by design and by default)",
        "minimisation",
    ),
    Obligation(
        "Allowed data sets and columns: a job reading anything else is refused",
        "data_scope",
        "Art. 6 (minimum scope)",
        "Art. 5(1)(c) (data minimisation)",
        "minimisation",
    ),
    Obligation(
        "Secure aggregation: the coordinator learns only the sum of masked updates",
        "secagg",
        "Art. 51(3) (encryption, de-identification and other security techniques)",
        "Art. 32(1)(a) (encryption), Art. 25",
        "security of processing",
    ),
    Obligation(
        "Homomorphic encryption: the key holder decrypts only sums of at least k owners",
        "he",
        "Art. 51(3)",
        "Art. 32(1)(a), Art. 25",
        "security of processing",
    ),
    Obligation(
        "Differential privacy with a per-owner budget, charged before each release",
        "dp",
        "Art. 51(3); Art. 73(4) (anonymisation: information that cannot identify a person)",
        "Art. 25, Art. 32, Art. 89(1) (safeguards for research and statistics)",
        "limits what any release reveals about one person",
    ),
    Obligation(
        "TLS on every connection",
        "tls",
        "Art. 51(3)",
        "Art. 32(1)(a)-(b) (confidentiality of processing systems)",
        "security in transit",
    ),
    Obligation(
        "Allowed coordinators and key holders by name on a signed roster",
        "parties",
        "Art. 21 (entrusted processing: the processor's obligations and supervision)",
        "Art. 28 (processor), Art. 5(1)(f) (integrity and confidentiality)",
        "who may process",
    ),
    Obligation(
        "Hash-chained audit log on every party; the verification in this report",
        "audit",
        "Art. 54 (regular compliance audits), Art. 9 (processor responsible for security)",
        "Art. 5(2) (accountability), Art. 30 (records of processing activities)",
        "accountability",
    ),
    Obligation(
        "This report: purpose, parties, protections, budget spent, refusals",
        "report",
        "Art. 55-56 (personal information protection impact assessment, records kept 3 years)",
        "Art. 35 (data protection impact assessment), Art. 5(2)",
        "assessment and records",
    ),
    Obligation(
        "Withdrawal of consent and erasure of records by id",
        "withdrawal",
        "Art. 15 (withdrawal of consent), Art. 47 (deletion)",
        "Art. 7(3) (withdrawal of consent), Art. 17 (erasure)",
        "individuals' rights",
    ),
)


def in_force(key: str, facts: dict[str, bool]) -> bool:
    """Whether the measure ``key`` was in force in the run ``facts`` describe."""
    return bool(facts.get(key, False))
