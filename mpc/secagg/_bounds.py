"""Probability bounds behind the choice of (degree k, threshold t) for SecAgg+.

A reimplementation of the rules of Google fcp's ``graph_parameter_finder.cc`` and
``distribution_utilities.cc`` (federated-compute; REFERENCES.md 1.2), written from their
description so that :func:`mpc.secagg.params.find_parameters` reproduces fcp's published table of
(k, t) exactly (the tests check all of its 82 feasible instances).

For n clients, a fraction gamma of them corrupt and a fraction delta dropping out, on a random
Harary graph of even degree k (Bell et al. CCS 2020, section 4):

1. connectivity: the honest survivors stay connected unless two gaps of k/2 consecutive bad nodes
   open on the ring; a union bound over the n (n - k - 1) / 2 pairs of gaps, each with probability
   ``B! (n - k)! / (n! (B - k)!)`` for B = floor(gamma n) + floor(delta n) bad nodes, must be below
   2^-41 (the security parameter sigma = 40, split evenly over two bad events);
2. privacy: t1 is the smallest count with P[#corrupt neighbours > t1] <= 2^-41 / n
   (hypergeometric: k draws from n with floor(gamma n) marked);
3. correctness: t2 is the largest count with P[#surviving neighbours < t2] <= 2^-20 / n
   (correctness parameter eta = 20; ceil((1 - delta) n) marked);
4. semi-malicious server: t1 is raised to ceil((t1 + k - 1.25) / 2), so that 2t - k clears the
   corrupt count and a server lying about dropouts cannot collect t shares of both secrets;
5. the degree works if t1 < t2; any t in (t1, t2] is valid, and t >= 2 always (Shamir needs two
   shares; fcp returns 2 even when t2 = 1); the finder picks t = max(t1 + 1, 2).

The quantile search rounds outwards (away from the median) like fcp's, with the same floating-point
order of operations, which is what makes the table reproduce exactly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

SECURITY_BITS = 40
"""Statistical security parameter sigma: privacy fails with probability below 2^-40."""
CORRECTNESS_BITS = 20
"""Correctness parameter eta: a round fails with probability below 2^-20."""
MAX_CLIENTS = 1_000_000
"""Largest cohort the bounds are validated for (fcp's limit)."""
_EPS = 1e-14  # keeps float rounding of rate * n from moving a count in the insecure direction


@dataclass(frozen=True, slots=True)
class DegreeCheck:
    """Outcome of checking one degree: whether the graph is connected enough, and the t range.

    Attributes:
        connected: the honest-survivor graph disconnects with probability below 2^-41.
        low: the smallest valid threshold.
        high: the largest valid threshold (``low > high`` means no threshold fits).
    """

    connected: bool
    low: int
    high: int

    @property
    def ok(self) -> bool:
        """Whether this degree admits a threshold."""
        return self.connected and self.low <= self.high


class _Hypergeometric:
    """Draws ``sampled`` of ``total`` items of which ``marked`` are marked."""

    def __init__(self, total: int, marked: int, sampled: int) -> None:
        self.total, self.marked, self.sampled = total, marked, sampled

    def _pmf(self, x: float, counted: int) -> float:
        n, s = self.total, self.sampled
        if x < 0 or x > s or x > counted or n + x < counted + s:
            return 0.0
        log_pmf = (
            math.lgamma(s + 1)
            + math.lgamma(counted + 1)
            + math.lgamma(n - counted + 1)
            + math.lgamma(n - s + 1)
            - math.lgamma(x + 1)
            - math.lgamma(s - x + 1)
            - math.lgamma(counted - x + 1)
            - math.lgamma(n + 1)
            - math.lgamma(n - s - counted + x + 1)
        )
        return math.exp(log_pmf)

    def _lower_tail(self, x: float, counted: int) -> float:
        """P[X <= x] for X counting ``counted`` marked items, summed downwards from x."""
        n, s = self.total, self.sampled
        term = self._pmf(x, counted)
        result = 0.0
        while term > result * 1e-16:
            result += term
            term *= x
            term *= n - counted - s + x
            term /= counted - x + 1
            term /= s - x + 1
            x -= 1
        return result

    def cdf(self, x: float) -> float:
        """P[X <= floor(x)], computed from the shorter tail."""
        x = math.floor(x)
        mean = self.marked * float(self.sampled) / self.total
        if x > mean:
            return 1 - self._lower_tail(self.sampled - x - 1, self.total - self.marked)
        return self._lower_tail(x, self.marked)

    def quantile(self, q: float, *, upper: bool = False) -> float:
        """Smallest x with P[X <= x] >= q (lower), or largest x with P[X > x] <= q (upper)."""
        if q > 0.5:
            q, upper = 1 - q, not upper
        if upper:
            return self.sampled - self._lower_quantile(q, self.total - self.marked) - 1
        return self._lower_quantile(q, self.marked)

    def _lower_quantile(self, q: float, counted: int) -> float:
        n, s = self.total, self.sampled
        basic = counted + s - n - 1
        hoeffding = s * (float(counted) / n - math.sqrt(-math.log(q) / (2 * s)))
        x = float(math.floor(max(-1.0, basic, hoeffding)))
        cdf = self._lower_tail(x, counted)
        term = self._pmf(x, counted)
        while cdf < q and x < s:
            if term > 0:
                term /= x + 1
                term /= n - counted - s + x + 1
                term *= counted - x
                term *= s - x
            else:
                term = self._pmf(x + 1, counted)
            cdf += term
            x += 1
        return x - 1


def log_disconnect_probability(
    *, num_clients: int, degree: int, corrupt_rate: float, dropout_rate: float
) -> float:
    """Natural log of the union bound on the honest survivors' graph disconnecting (step 1)."""
    n = num_clients
    bad = math.floor((corrupt_rate + _EPS) * n) + math.floor((dropout_rate + _EPS) * n)
    if degree > bad:
        return -math.inf
    log_gap_pairs = math.log(n) + math.log(n - degree - 1) - math.log(2)
    return (
        log_gap_pairs
        + math.lgamma(bad + 1)
        + math.lgamma(n - degree + 1)
        - math.lgamma(n + 1)
        - math.lgamma(bad - degree + 1)
    )


def check_degree(
    *,
    num_clients: int,
    degree: int,
    corrupt_rate: float,
    dropout_rate: float,
    semi_malicious: bool,
) -> DegreeCheck:
    """Check a sparse degree (2 <= k <= n - 2, even) and return the range of valid thresholds."""
    n = num_clients
    per_event = SECURITY_BITS + 1
    log_disconnect = log_disconnect_probability(
        num_clients=n, degree=degree, corrupt_rate=corrupt_rate, dropout_rate=dropout_rate
    )
    if log_disconnect >= -per_event * math.log(2):
        return DegreeCheck(connected=False, low=0, high=-1)
    corrupt = math.floor((corrupt_rate + _EPS) * n)
    surviving = math.ceil((1 - dropout_rate - _EPS) * n)
    corrupt_neighbours = _Hypergeometric(n, corrupt, degree)
    surviving_neighbours = _Hypergeometric(n, surviving, degree)
    t1 = corrupt_neighbours.quantile(2.0**-per_event / n, upper=True)
    t2 = surviving_neighbours.quantile(2.0**-CORRECTNESS_BITS / n)
    if surviving_neighbours.cdf(t2) < 2.0**-CORRECTNESS_BITS / n:
        t2 += 1
    if semi_malicious:
        t1 = math.ceil((t1 + degree - 1.25) / 2)
    if t2 <= t1:
        return DegreeCheck(connected=True, low=int(t1) + 1, high=int(t2))
    # Shamir needs t >= 2; like fcp, t = 2 is accepted even where the correctness bound alone
    # stops at t2 = 1 (tiny cohorts), so the range is widened to include it.
    low = max(int(t1) + 1, 2)
    return DegreeCheck(connected=True, low=low, high=max(int(t2), low))


def full_graph_threshold_range(
    *, num_clients: int, corrupt_rate: float, dropout_rate: float, semi_malicious: bool
) -> tuple[int, int]:
    """Return the (low, high) valid thresholds of the complete graph (fcp's full-graph rules).

    The threshold must be at least ceil((1 - delta) n) (pinned to the expected survivors), above
    ceil(gamma n) for a curious server or above ceil((n + gamma n) / 2) for a semi-malicious one
    (so that lying about dropouts cannot gather t shares of both secrets of a client), at least 2,
    and at most n.
    """
    n = num_clients
    low = max(2, math.ceil((1 - dropout_rate) * n))
    if semi_malicious:
        low = max(low, math.ceil((n + corrupt_rate * n) / 2) + 1)
    else:
        low = max(low, math.ceil(corrupt_rate * n) + 1)
    return low, n


def smallest_sparse_degree(
    *, num_clients: int, corrupt_rate: float, dropout_rate: float, semi_malicious: bool
) -> tuple[int, DegreeCheck] | None:
    """Return the smallest even degree below n - 1 that admits a threshold, with its check."""
    for degree in range(2, num_clients - 1, 2):
        check = check_degree(
            num_clients=num_clients,
            degree=degree,
            corrupt_rate=corrupt_rate,
            dropout_rate=dropout_rate,
            semi_malicious=semi_malicious,
        )
        if check.ok:
            return degree, check
    return None


def consistency_quorum(*, num_clients: int, threshold: int, corrupt_rate: float) -> int:
    """Return how many signatures on one cohort a client needs before it reveals any share.

    Two sets of q signers among n clients share at least 2q - n of them; with
    q = floor((n + c) / 2) + 1 for c = floor(gamma n) corrupt clients that overlap holds an honest
    client, who signs only one cohort. So a coordinator cannot gather a quorum for two different
    views of who survived (Bonawitz et al. CCS 2017, section 4, round 3 of the active variant:
    its t > (n + c) / 2 plays this role). The quorum is never below the threshold t, so it adds
    nothing to fcp's semi-malicious complete graph, whose t already clears (n + c) / 2.
    """
    corrupt = math.floor((corrupt_rate + _EPS) * num_clients)
    return min(num_clients, max(threshold, (num_clients + corrupt) // 2 + 1))
