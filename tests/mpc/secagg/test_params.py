"""Tests for mpc.secagg.params: fcp's (k, t) table, feasibility, explicit parameter validation."""

from __future__ import annotations

import pytest

from mpc import Adversary, ParameterError, SecAggParams, find_parameters

SH, SM = Adversary.SEMI_HONEST, Adversary.SEMI_MALICIOUS

# Every feasible instance of fcp's graph_parameter_finder_test.cc: (n, gamma, delta, adversary,
# degree, threshold). Its NONE adversary class (no corrupt clients) is the semi-honest rule with
# gamma = 0, covered by the (0.0, 0.33) and (0.0, 0.0) semi-honest rows.
FCP_TABLE = [
    (100, 0.45, 0.45, SH, 92, 46), (1000, 0.45, 0.45, SH, 822, 417),
    (10000, 0.45, 0.45, SH, 3494, 1771), (100000, 0.45, 0.45, SH, 5508, 2788),
    (1000000, 0.45, 0.45, SH, 6240, 3156),
    (10, 0.33, 0.33, SH, 8, 4), (100, 0.33, 0.33, SH, 68, 34), (1000, 0.33, 0.33, SH, 286, 150),
    (10000, 0.33, 0.33, SH, 422, 221), (100000, 0.33, 0.33, SH, 480, 251),
    (1000000, 0.33, 0.33, SH, 518, 270),
    (100, 0.3, 0.3, SM, 92, 62), (1000, 0.3, 0.3, SM, 872, 584), (10000, 0.3, 0.3, SM, 4822, 3230),
    (100000, 0.3, 0.3, SM, 9388, 6286), (1000000, 0.3, 0.3, SM, 11136, 7454),
    (10, 0.05, 0.33, SH, 4, 2), (100, 0.05, 0.33, SH, 28, 6), (1000, 0.05, 0.33, SH, 72, 24),
    (10000, 0.05, 0.33, SH, 86, 29), (100000, 0.05, 0.33, SH, 96, 32),
    (1000000, 0.05, 0.33, SH, 102, 34),
    (10, 0.05, 0.33, SM, 8, 5), (100, 0.05, 0.33, SM, 72, 39), (1000, 0.05, 0.33, SM, 398, 223),
    (10000, 0.05, 0.33, SM, 746, 420), (100000, 0.05, 0.33, SM, 882, 496),
    (1000000, 0.05, 0.33, SM, 970, 545),
    (10, 0.33, 0.05, SH, 4, 4), (100, 0.33, 0.05, SH, 34, 29), (1000, 0.33, 0.05, SH, 78, 60),
    (10000, 0.33, 0.05, SH, 92, 70), (100000, 0.33, 0.05, SH, 102, 77),
    (1000000, 0.33, 0.05, SH, 110, 83),
    (10, 0.33, 0.05, SM, 4, 4), (100, 0.33, 0.05, SM, 42, 37), (1000, 0.33, 0.05, SM, 132, 109),
    (10000, 0.33, 0.05, SM, 178, 146), (100000, 0.33, 0.05, SM, 196, 160),
    (1000000, 0.33, 0.05, SM, 212, 173),
    (10, 0.05, 0.05, SH, 2, 2), (100, 0.05, 0.05, SH, 12, 6), (1000, 0.05, 0.05, SH, 30, 17),
    (10000, 0.05, 0.05, SH, 34, 20), (100000, 0.05, 0.05, SH, 36, 21),
    (1000000, 0.05, 0.05, SH, 38, 22),
    (10, 0.05, 0.05, SM, 2, 2), (100, 0.05, 0.05, SM, 16, 11), (1000, 0.05, 0.05, SM, 52, 37),
    (10000, 0.05, 0.05, SM, 62, 44), (100000, 0.05, 0.05, SM, 68, 48),
    (1000000, 0.05, 0.05, SM, 74, 52),
    (10, 0.33, 0.0, SH, 4, 4), (100, 0.33, 0.0, SH, 26, 25), (1000, 0.33, 0.0, SH, 38, 36),
    (10000, 0.33, 0.0, SH, 42, 40), (100000, 0.33, 0.0, SH, 46, 44),
    (1000000, 0.33, 0.0, SH, 50, 47),
    (10, 0.33, 0.0, SM, 4, 4), (100, 0.33, 0.0, SM, 26, 26), (1000, 0.33, 0.0, SM, 38, 37),
    (10000, 0.33, 0.0, SM, 42, 41), (100000, 0.33, 0.0, SM, 46, 45),
    (1000000, 0.33, 0.0, SM, 50, 49),
    (10, 0.0, 0.33, SH, 4, 2), (100, 0.0, 0.33, SH, 26, 2), (1000, 0.0, 0.33, SH, 38, 2),
    (10000, 0.0, 0.33, SH, 42, 2), (100000, 0.0, 0.33, SH, 46, 2), (1000000, 0.0, 0.33, SH, 50, 2),
    (10, 0.0, 0.33, SM, 8, 5), (100, 0.0, 0.33, SM, 68, 35), (1000, 0.0, 0.33, SM, 228, 115),
    (10000, 0.0, 0.33, SM, 326, 164), (100000, 0.0, 0.33, SM, 372, 187),
    (1000000, 0.0, 0.33, SM, 410, 206),
    (10, 0.0, 0.0, SH, 2, 2), (100, 0.0, 0.0, SH, 2, 2), (1000, 0.0, 0.0, SH, 2, 2),
    (10000, 0.0, 0.0, SH, 2, 2), (100000, 0.0, 0.0, SH, 2, 2), (1000000, 0.0, 0.0, SH, 2, 2),
    (10, 0.0, 0.0, SM, 2, 2), (100, 0.0, 0.0, SM, 2, 2), (1000, 0.0, 0.0, SM, 2, 2),
    (10000, 0.0, 0.0, SM, 2, 2), (100000, 0.0, 0.0, SM, 2, 2), (1000000, 0.0, 0.0, SM, 2, 2),
]  # fmt: skip


@pytest.mark.parametrize(("n", "gamma", "delta", "adversary", "degree", "threshold"), FCP_TABLE)
def test_finder_reproduces_fcps_table_exactly(
    n: int, gamma: float, delta: float, adversary: Adversary, degree: int, threshold: int
) -> None:
    params = find_parameters(
        num_clients=n, dropout_rate=delta, corrupt_rate=gamma, adversary=adversary
    )
    assert (params.degree, params.threshold) == (degree, threshold)
    assert not params.is_full_graph and params.holders_per_client == degree


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"num_clients": 0}, "num_clients"),
        ({"num_clients": 1_000_001}, "num_clients"),
        ({"dropout_rate": 1.0}, "dropout_rate"),
        ({"dropout_rate": -1.0}, "dropout_rate"),
        ({"corrupt_rate": 0.5, "dropout_rate": 0.5}, "<= 0.9 against a semi-honest"),
        (
            {"corrupt_rate": 0.5, "dropout_rate": 0.5, "adversary": "semi_malicious"},
            "2 \\* dropout",
        ),
        (
            {"corrupt_rate": 0.33, "dropout_rate": 0.33, "adversary": "semi_malicious"},
            "2 \\* dropout",
        ),
        ({"adversary": "evil"}, "adversary"),
    ],
)
def test_finder_refuses_invalid_or_infeasible_requirements(
    kwargs: dict[str, object], message: str
) -> None:
    arguments: dict[str, object] = {"num_clients": 1000, "dropout_rate": 0.1, "corrupt_rate": 0.1}
    arguments.update(kwargs)
    with pytest.raises(ParameterError, match=message):
        find_parameters(**arguments)  # type: ignore[arg-type]


def test_small_cohorts_fall_back_to_the_complete_graph() -> None:
    params = find_parameters(num_clients=3, dropout_rate=0.3, corrupt_rate=0.0)
    assert params.is_full_graph and params.degree == 2
    assert params.threshold == 3  # ceil((1 - 0.3) * 3) and at least 2
    assert params.holders_per_client == 3


def test_explicit_complete_graph_threshold_is_checked_with_the_rule_and_range() -> None:
    # Prepare / Execute / Assert: t must be >= ceil(0.9 * 10) = 9 for 10% dropouts.
    with pytest.raises(
        ParameterError, match=r"threshold: 5 .* \[9, 10\].*ceil\(\(1 - dropout_rate\) n\)"
    ):
        SecAggParams(num_clients=10, threshold=5, degree=9, dropout_rate=0.1, corrupt_rate=0.0)
    ok = SecAggParams(num_clients=10, threshold=9, degree=9, dropout_rate=0.1, corrupt_rate=0.0)
    assert ok.is_full_graph and ok.holders_per_client == 10


def test_semi_malicious_complete_graph_needs_a_majority_above_the_corrupt_clients() -> None:
    with pytest.raises(ParameterError, match=r"\[7, 10\].*\(n \+ corrupt_rate n\) / 2"):
        SecAggParams(
            num_clients=10,
            threshold=6,
            degree=9,
            dropout_rate=0.5,
            corrupt_rate=0.1,
            adversary=SM,
        )
    SecAggParams(
        num_clients=10,
        threshold=7,
        degree=9,
        dropout_rate=0.3,
        corrupt_rate=0.1,
        adversary=SM,
    )


def test_semi_honest_complete_graph_needs_more_than_the_corrupt_clients() -> None:
    with pytest.raises(ParameterError, match=r"\[5, 10\].*ceil\(corrupt_rate n\)"):
        SecAggParams(num_clients=10, threshold=3, degree=9, dropout_rate=0.7, corrupt_rate=0.4)


def test_explicit_sparse_parameters_are_checked_against_the_finder_rules() -> None:
    # fcp: n = 1000, gamma = delta = 0.05, semi-honest -> k = 30, t = 17.
    base = {"num_clients": 1000, "dropout_rate": 0.05, "corrupt_rate": 0.05}
    SecAggParams(threshold=17, degree=30, **base)  # type: ignore[arg-type]
    with pytest.raises(ParameterError, match="even degree"):
        SecAggParams(threshold=17, degree=31, **base)  # type: ignore[arg-type]
    with pytest.raises(
        ParameterError, match="degree: 20 is too small.*smallest sparse degree that works is 30"
    ):
        SecAggParams(threshold=10, degree=20, **base)  # type: ignore[arg-type]
    with pytest.raises(
        ParameterError, match=r"threshold: 5 is outside the allowed range \[17, \d+\]"
    ):
        SecAggParams(threshold=5, degree=30, **base)  # type: ignore[arg-type]
    with pytest.raises(
        ParameterError, match=r"threshold: 30 is outside the allowed range \[17, \d+\]"
    ):
        SecAggParams(threshold=30, degree=30, **base)  # type: ignore[arg-type]


def test_field_checks_name_the_field() -> None:
    base: dict[str, object] = {
        "num_clients": 10,
        "threshold": 10,
        "degree": 9,
        "dropout_rate": 0.0,
        "corrupt_rate": 0.0,
    }
    for field, value in [
        ("num_clients", 1),
        ("num_clients", True),
        ("threshold", 11),
        ("degree", 10),
        ("dropout_rate", float("nan")),
        ("corrupt_rate", 1.0),
        ("ring_bits", 16),
        ("adversary", "evil"),
    ]:
        with pytest.raises(ParameterError, match=field):
            SecAggParams(**{**base, field: value})  # type: ignore[arg-type]


def test_quantization_bits_are_checked_against_wraparound_for_the_cohort() -> None:
    base: dict[str, object] = {
        "num_clients": 10,
        "threshold": 10,
        "degree": 9,
        "dropout_rate": 0.0,
        "corrupt_rate": 0.0,
    }
    SecAggParams(quantization_bits=28, **base)  # type: ignore[arg-type]
    with pytest.raises(ParameterError, match="wrap"):
        SecAggParams(quantization_bits=29, **base)  # type: ignore[arg-type]
    SecAggParams(quantization_bits=29, ring_bits=64, **base)  # type: ignore[arg-type]


def test_params_are_frozen_and_normalise_types() -> None:
    params = SecAggParams(num_clients=4, threshold=4, degree=3, dropout_rate=0, corrupt_rate=0)
    assert params.adversary is Adversary.SEMI_HONEST
    assert isinstance(params.dropout_rate, float)
    with pytest.raises(AttributeError):
        params.threshold = 2  # type: ignore[misc]


def test_the_consistency_quorum_is_a_majority_above_the_corrupt_count() -> None:
    # n = 8, t = 4 (semi-honest, 50% dropouts): floor((8 + 0) / 2) + 1 = 5 signatures.
    params = SecAggParams(num_clients=8, threshold=4, degree=7, dropout_rate=0.5, corrupt_rate=0.05)
    assert params.consistency_threshold == 5
    # 20% corrupt of 10: floor((10 + 2) / 2) + 1 = 7.
    wider = SecAggParams(num_clients=10, threshold=7, degree=9, dropout_rate=0.3, corrupt_rate=0.2)
    assert wider.consistency_threshold == 7
    # fcp's semi-malicious complete graph already has t > (n + gamma n) / 2: the quorum is t.
    strict = find_parameters(
        num_clients=20, dropout_rate=0.2, corrupt_rate=0.1, adversary="semi_malicious"
    )
    assert strict.consistency_threshold == max(strict.threshold, (20 + 2) // 2 + 1)


@pytest.mark.parametrize("n", [2, 3, 7, 50, 1000])
@pytest.mark.parametrize("gamma", [0.0, 0.05, 0.3])
def test_any_two_consistency_quorums_share_an_honest_client(n: int, gamma: float) -> None:
    params = find_parameters(num_clients=n, dropout_rate=0.05, corrupt_rate=gamma)
    q, corrupt = params.consistency_threshold, int(gamma * n + 1e-9)
    assert params.threshold <= q <= n
    assert 2 * q - n > corrupt
