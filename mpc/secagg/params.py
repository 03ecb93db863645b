"""Secure-aggregation parameters: cohort size, neighbourhood degree, threshold, ring.

``SecAggParams`` is validated against the rules of Google fcp's graph parameter finder
(REFERENCES.md 1.1 and 1.2): for the complete graph (degree = n - 1, SecAgg of Bonawitz et al.
CCS 2017) the full-graph rules; for a sparse random Harary graph (SecAgg+ of Bell et al. CCS 2020)
the probability bounds of ``mpc.secagg._bounds`` for the stated fraction of corrupt clients and
dropout rate. :func:`find_parameters` picks the smallest such degree and its threshold, and
reproduces fcp's table exactly.

Who holds shares: in SecAgg every client of the cohort, the owner included, holds one of its n
shares (Bonawitz et al., figure 4, round 1); in SecAgg+ the owner's k neighbours hold them (Bell
et al., section 4). ``holders_per_client`` is n or k accordingly, and the threshold counts among
those holders.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum

from mpc.errors import ParameterError
from mpc.quantize import check_no_wraparound
from mpc.ring import check_ring_bits
from mpc.secagg._bounds import (
    MAX_CLIENTS,
    check_degree,
    consistency_quorum,
    full_graph_threshold_range,
    smallest_sparse_degree,
)

DEFAULT_RING_BITS = 32
"""Masked vectors live in Z_2^32 unless a job needs the headroom of Z_2^64."""
MAX_SEMI_HONEST_BAD_RATE = 0.9
"""Feasibility of the sparse bounds: corrupt_rate + dropout_rate <= 0.9 (semi-honest)."""


class Adversary(StrEnum):
    """What the coordinator may do, as in fcp's ``AdversaryClass``."""

    SEMI_HONEST = "semi_honest"
    """Follows the protocol and tries to learn from what it sees (curious server)."""
    SEMI_MALICIOUS = "semi_malicious"
    """May also lie about which clients dropped out, to different clients."""
    MALICIOUS = "malicious"
    """May deviate arbitrarily (Bonawitz et al. 2017, active variant). Thresholds as for
    ``semi_malicious`` (fcp's strictest class); what stops the lies is the consistency check,
    which runs in every round whatever the class, and peers pinned to a roster."""

    @property
    def lies(self) -> bool:
        """Whether the class assumes a coordinator that lies about dropouts."""
        return self is not Adversary.SEMI_HONEST


@dataclass(frozen=True, slots=True, kw_only=True)
class SecAggParams:
    """Parameters of one secure-aggregation round.

    Attributes:
        num_clients: n, the number of clients selected for the round (2 to 1,000,000).
        threshold: t, how many share holders must answer to reconstruct a secret.
        degree: k, each client's number of neighbours; ``num_clients - 1`` is the complete graph.
        dropout_rate: delta in [0, 1), the fraction of dropouts the round must tolerate.
        corrupt_rate: gamma in [0, 1), the fraction of clients assumed to collude with the server.
        adversary: ``"semi_honest"``, ``"semi_malicious"`` or ``"malicious"``.
        ring_bits: 32 or 64.
        quantization_bits: if set, the number of bits per quantized value; checked so that the
            sum of ``num_clients`` values cannot wrap around the ring.

    Raises:
        ParameterError: naming the field, the violated rule and the allowed range.
    """

    num_clients: int
    threshold: int
    degree: int
    dropout_rate: float
    corrupt_rate: float
    adversary: Adversary = Adversary.SEMI_HONEST
    ring_bits: int = DEFAULT_RING_BITS
    quantization_bits: int | None = None

    def __post_init__(self) -> None:
        n = _check_int("num_clients", self.num_clients, low=2, high=MAX_CLIENTS)
        object.__setattr__(self, "dropout_rate", _check_rate("dropout_rate", self.dropout_rate))
        object.__setattr__(self, "corrupt_rate", _check_rate("corrupt_rate", self.corrupt_rate))
        try:
            object.__setattr__(self, "adversary", Adversary(self.adversary))
        except ValueError:
            allowed = [a.value for a in Adversary]
            raise ParameterError(
                f"adversary must be one of {allowed}, got {self.adversary!r}"
            ) from None
        check_ring_bits(self.ring_bits)
        degree = _check_int("degree", self.degree, low=1, high=n - 1)
        t = _check_int("threshold", self.threshold, low=1, high=n)
        if self.quantization_bits is not None:
            check_no_wraparound(
                num_clients=n, bits=self.quantization_bits, ring_bits=self.ring_bits
            )
        if degree == n - 1:
            self._check_full_graph(t)
        else:
            self._check_sparse_graph(degree, t)

    @property
    def is_full_graph(self) -> bool:
        """Whether every client is every other client's neighbour (SecAgg rather than SecAgg+)."""
        return self.degree == self.num_clients - 1

    @property
    def holders_per_client(self) -> int:
        """How many clients hold a share of each client's secrets: n (SecAgg) or k (SecAgg+)."""
        return self.num_clients if self.is_full_graph else self.degree

    @property
    def consistency_threshold(self) -> int:
        """How many signatures on one cohort of masked inputs a client needs before unmasking.

        ``max(t, floor((n + floor(corrupt_rate n)) / 2) + 1)``: two different cohorts cannot both
        be signed by that many clients unless an honest client signed both, which it never does
        (see :func:`mpc.secagg._bounds.consistency_quorum`). The round therefore needs that many
        clients alive at the consistency check, whatever the dropout rate.
        """
        return consistency_quorum(
            num_clients=self.num_clients, threshold=self.threshold, corrupt_rate=self.corrupt_rate
        )

    @property
    def semi_malicious(self) -> bool:
        """Whether the coordinator is assumed semi-malicious."""
        return self.adversary.lies

    def _describe(self) -> str:
        return (
            f"num_clients={self.num_clients}, corrupt_rate={self.corrupt_rate}, "
            f"dropout_rate={self.dropout_rate}, adversary={self.adversary.value}"
        )

    def _check_full_graph(self, t: int) -> None:
        low, high = full_graph_threshold_range(
            num_clients=self.num_clients,
            corrupt_rate=self.corrupt_rate,
            dropout_rate=self.dropout_rate,
            semi_malicious=self.semi_malicious,
        )
        if not low <= t <= high:
            raise ParameterError(
                f"threshold: {t} is outside the allowed range [{low}, {high}] for the complete "
                f"graph with {self._describe()} (rules: t >= ceil((1 - dropout_rate) n); "
                + (
                    "t > ceil((n + corrupt_rate n) / 2)"
                    if self.semi_malicious
                    else "t > ceil(corrupt_rate n)"
                )
                + "; 2 <= t <= n)"
            )

    def _check_sparse_graph(self, degree: int, t: int) -> None:
        _check_feasible(self.corrupt_rate, self.dropout_rate, self.adversary)
        n = self.num_clients
        if degree % 2 or degree < 2 or degree > n - 2:
            raise ParameterError(
                f"degree: {degree} is invalid; a sparse Harary graph needs an even degree in "
                f"[2, {n - 2}], or degree = {n - 1} for the complete graph"
            )
        check = check_degree(
            num_clients=n,
            degree=degree,
            corrupt_rate=self.corrupt_rate,
            dropout_rate=self.dropout_rate,
            semi_malicious=self.semi_malicious,
        )
        if not check.ok:
            found = smallest_sparse_degree(
                num_clients=n,
                corrupt_rate=self.corrupt_rate,
                dropout_rate=self.dropout_rate,
                semi_malicious=self.semi_malicious,
            )
            allowed = (
                f"the smallest sparse degree that works is {found[0]}"
                if found is not None
                else f"no sparse degree works; use the complete graph (degree={n - 1})"
            )
            rule = (
                "no threshold t satisfies P[corrupt neighbours >= t] <= 2^-41/n and "
                "P[surviving neighbours < t] <= 2^-20/n"
                if check.connected
                else "the honest survivors' graph disconnects with probability above 2^-41"
            )
            raise ParameterError(
                f"degree: {degree} is too small for {self._describe()}: {rule}; {allowed}"
            )
        if not check.low <= t <= check.high:
            raise ParameterError(
                f"threshold: {t} is outside the allowed range [{check.low}, {check.high}] for "
                f"degree {degree} with {self._describe()} (rules: P[corrupt neighbours >= t] <= "
                f"2^-41/n; P[surviving neighbours < t] <= 2^-20/n"
                + ("; 2t - k above the corrupt count" if self.semi_malicious else "")
                + ")"
            )


def find_parameters(
    *,
    num_clients: int,
    dropout_rate: float,
    corrupt_rate: float,
    adversary: Adversary | str = Adversary.SEMI_HONEST,
    ring_bits: int = DEFAULT_RING_BITS,
    quantization_bits: int | None = None,
) -> SecAggParams:
    """Pick the smallest neighbourhood degree k and its threshold t for a cohort (fcp's finder).

    Steps (fcp ``HararyGraphParameterFinder``; Bell et al. CCS 2020, section 4):
        1. refuse infeasible rates: corrupt + dropout <= 0.9 (semi-honest), corrupt + 2 dropout
           <= 0.9 (semi-malicious);
        2. try k = 2, 4, 6, ... below n - 1 and keep the first whose honest-survivor graph stays
           connected and which admits a threshold; t = max(t1 + 1, 2);
        3. if no sparse degree works (small cohorts), fall back to the complete graph with the
           smallest threshold its rules allow.

    Args:
        num_clients: n, 2 to 1,000,000.
        dropout_rate: delta in [0, 1), the tolerated fraction of dropouts.
        corrupt_rate: gamma in [0, 1), the assumed fraction of clients colluding with the server.
        adversary: ``"semi_honest"``, ``"semi_malicious"`` or ``"malicious"``.
        ring_bits: 32 or 64.
        quantization_bits: optional, checked against wraparound for n clients.

    Returns:
        Validated parameters.

    Raises:
        ParameterError: for infeasible or out-of-range inputs.
    """
    n = _check_int("num_clients", num_clients, low=2, high=MAX_CLIENTS)
    dropout_rate = _check_rate("dropout_rate", dropout_rate)
    corrupt_rate = _check_rate("corrupt_rate", corrupt_rate)
    try:
        adversary = Adversary(adversary)
    except ValueError:
        raise ParameterError(f"adversary must be one of {[a.value for a in Adversary]}") from None
    _check_feasible(corrupt_rate, dropout_rate, adversary)
    semi_malicious = adversary.lies
    found = smallest_sparse_degree(
        num_clients=n,
        corrupt_rate=corrupt_rate,
        dropout_rate=dropout_rate,
        semi_malicious=semi_malicious,
    )
    if found is not None:
        degree, check = found
        threshold = check.low
    else:
        degree = n - 1
        threshold, high = full_graph_threshold_range(
            num_clients=n,
            corrupt_rate=corrupt_rate,
            dropout_rate=dropout_rate,
            semi_malicious=semi_malicious,
        )
        if threshold > high:
            raise ParameterError(
                f"no parameters exist for num_clients={n}, corrupt_rate={corrupt_rate}, "
                f"dropout_rate={dropout_rate}, adversary={adversary.value}: even the complete "
                f"graph would need a threshold of {threshold} > n"
            )
    return SecAggParams(
        num_clients=n,
        threshold=threshold,
        degree=degree,
        dropout_rate=dropout_rate,
        corrupt_rate=corrupt_rate,
        adversary=adversary,
        ring_bits=ring_bits,
        quantization_bits=quantization_bits,
    )


def _check_int(name: str, value: object, *, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ParameterError(f"{name} must be an int in [{low}, {high}], got {value!r}")
    if not low <= value <= high:
        raise ParameterError(f"{name} must be in [{low}, {high}], got {value}")
    return value


def _check_rate(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ParameterError(f"{name} must be a float in [0, 1), got {value!r}")
    if not (math.isfinite(value) and 0 <= value < 1):
        raise ParameterError(f"{name} must be in [0, 1), got {value}")
    return float(value)


def _check_feasible(corrupt_rate: float, dropout_rate: float, adversary: Adversary) -> None:
    if adversary.lies:
        if corrupt_rate + 2 * dropout_rate > MAX_SEMI_HONEST_BAD_RATE:
            raise ParameterError(
                f"corrupt_rate + 2 * dropout_rate = {corrupt_rate + 2 * dropout_rate:g} must be "
                f"<= {MAX_SEMI_HONEST_BAD_RATE} against a semi-malicious server"
            )
    elif corrupt_rate + dropout_rate > MAX_SEMI_HONEST_BAD_RATE:
        raise ParameterError(
            f"corrupt_rate + dropout_rate = {corrupt_rate + dropout_rate:g} must be <= "
            f"{MAX_SEMI_HONEST_BAD_RATE} against a semi-honest server"
        )
