"""Coordinator side: check contributions, keep them for the key holder, and add ciphertexts.

The coordinator holds only the `PublicContext` (no secret key: it cannot decrypt, see
`he.context`). It checks every contribution's receipt and ciphertexts (`he.envelope`,
`he.encoding`) as it arrives, so a bad one is refused at once with its reason, and keeps the
accepted envelopes byte for byte: `Aggregator.request` is what goes to the key holder, which
checks them all again and adds them itself (it never decrypts a sum the coordinator built;
see `he.request`). It refuses a second contribution from the same owner, more than
``max_owners`` contributions, and a request below the largest k any contributor asked for (the
key holder enforces its own k again). `Aggregator.result` (the coordinator's own encrypted sum)
stays for callers that want it; the key holder refuses it.

Steps of `Aggregator.add`:
    1. parse the envelope, bounded by the sizes the spec implies;
    2. check the receipt's digest against the ciphertexts (hashed on another core while
       steps 3 and 4 run; nothing is added unless it matches), its binding (job, round,
       fingerprint, spec, payload) and its signature against the enrolment;
    3. refuse a duplicate owner or one past ``max_owners``;
    4. load every ciphertext and check parameters, level, size and scale;
    5. add slot-wise into the running sums.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from functools import cache
from typing import Any

from he._wire import digest_section
from he.context import PublicContext
from he.encoding import add_into, load_sections, max_ciphertext_bytes, max_sections, serialize
from he.envelope import (
    EncryptedAggregate,
    Receipt,
    check_id,
    check_round,
    decode_contribution,
    digest_mismatch,
    load_enrolment,
)
from he.errors import BelowMinimumCohort, BindingError
from he.masking import Cohort
from he.request import DecryptionRequest
from he.spec import Spec, vector_lengths


@cache
def _digest_pool(pid: int) -> ThreadPoolExecutor:
    """The thread that hashes contributions while the caller parses them.

    One per process id, so that a forked child gets a live one of its own.
    """
    return ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"he-digest-{pid}")


class Aggregator:
    """Sums the contributions of one job round; needs no secret key.

    Not thread-safe: call `add` from one thread (or guard it with a lock).
    """

    def __init__(
        self,
        public: PublicContext,
        *,
        spec: Spec,
        job_id: str,
        round: int,
        enrolment: Mapping[str, bytes],
        attempt: int | None = None,
    ) -> None:
        """Prepare to sum contributions.

        Args:
            public: the key holder's public context.
            spec: the job's statistics or vector spec.
            job_id: the job every contribution must name.
            round: the round every contribution must name.
            enrolment: owner id -> raw Ed25519 public key of every owner of the job.
            attempt: the attempt every contribution must name (None: any; then `request`
                needs it).

        Raises:
            SpecError: the spec's sums could overflow these parameters.
            BindingError: malformed ids or enrolment.
        """
        spec.check_params(public.params)
        self._public = public
        self._spec = spec
        self._job_id = check_id(job_id, "job_id")
        self._round = check_round(round)
        self._attempt = attempt
        self._keys = load_enrolment(enrolment)
        self._envelopes: list[bytes] = []
        self._n_int, self._n_real = vector_lengths(spec)
        self._receipts: list[Receipt] = []
        self._sums: dict[str, list[Any] | None] = {"integers": None, "reals": None}

    @property
    def contributors(self) -> tuple[str, ...]:
        """Owner ids added so far."""
        return tuple(r.owner_id for r in self._receipts)

    def _max_blob_bytes(self) -> int:
        return max(max_ciphertext_bytes(p) for p in self._public.params)

    def _max_blobs(self) -> int:
        return max_sections(self._public.params, self._spec, self._n_int, self._n_real)

    def add(self, contribution: bytes) -> Receipt:
        """Check one owner's contribution and add it to the sums.

        Returns:
            The verified receipt.

        Raises:
            DecodeError: malformed bytes or ciphertexts.
            ContextMismatch: a contribution under another context fingerprint.
            BindingError: another job, round or spec; unknown owner; bad signature; duplicate.
        """
        receipt, bfv, ckks, section = decode_contribution(
            contribution,
            max_blobs=self._max_blobs(),
            max_blob_bytes=self._max_blob_bytes(),
            check_digest=False,
        )
        # SHA-256 over megabytes of ciphertexts runs on another core (hashlib releases the GIL
        # for the one call over the whole section) while they are parsed and checked below;
        # nothing is added before the digest matches, and a mismatch is the error reported
        # even when the parse fails too.
        digest = _digest_pool(os.getpid()).submit(digest_section, section)
        try:
            loaded = self._check_and_load(receipt, bfv, ckks)
        except Exception:
            if digest.result() != receipt.ciphertext_digest:
                raise digest_mismatch(receipt) from None
            raise
        if digest.result() != receipt.ciphertext_digest:
            raise digest_mismatch(receipt)
        for part, vectors in loaded.items():
            if vectors:
                self._sums[part] = add_into(self._sums[part], vectors)
        self._receipts.append(receipt)
        self._envelopes.append(bytes(contribution))
        return receipt

    def _check_and_load(
        self, receipt: Receipt, bfv: tuple[bytes, ...], ckks: tuple[bytes, ...]
    ) -> dict[str, list[Any]]:
        """Steps 2 to 4: binding and signature, duplicates, then every ciphertext."""
        receipt.verify(
            self._keys,
            job_id=self._job_id,
            round=self._round,
            fingerprint=self._public.fingerprint,
            spec=self._spec,
            attempt=self._attempt,
        )
        if receipt.owner_id in self.contributors:
            raise BindingError(f"owner {receipt.owner_id!r} already contributed to this round")
        if len(self._receipts) >= self._spec.max_owners:
            raise BindingError(f"max_owners={self._spec.max_owners} contributions already added")
        loaded = load_sections(
            self._public.tenseal,
            self._public.params,
            self._spec,
            bfv,
            ckks,
            lengths=(self._n_int, self._n_real),
            what=f"contribution of {receipt.owner_id!r}",
        )
        return loaded

    def request(
        self, attempt: int | None = None, *, cohort: Cohort | None = None
    ) -> DecryptionRequest:
        """The accepted contributions, unchanged, for the key holder to assemble and decrypt.

        Args:
            attempt: the attempt the contributions name (default: the one given at creation).
            cohort: the attempt's masking cohort, relayed as the owners advertised it.

        Raises:
            BelowMinimumCohort: fewer contributors than the largest k any of them asked for.
            BindingError: no attempt is known.
        """
        self._check_k()
        chosen = self._attempt if attempt is None else attempt
        if chosen is None:
            raise BindingError("a decryption request needs the attempt its contributions name")
        return DecryptionRequest(
            job_id=self._job_id,
            round=self._round,
            attempt=chosen,
            spec=self._spec,
            contributions=tuple(self._envelopes),
            cohort=cohort,
        )

    def _check_k(self) -> None:
        required = max([2, *(r.min_contributors for r in self._receipts)])
        if len(self._receipts) < required:
            raise BelowMinimumCohort(contributors=len(self._receipts), required=required)

    def result(self) -> EncryptedAggregate:
        """The encrypted sum with every receipt, for the key holder.

        Raises:
            BelowMinimumCohort: fewer contributors than the largest k any of them asked for.
        """
        self._check_k()
        return EncryptedAggregate(
            job_id=self._job_id,
            round=self._round,
            fingerprint=self._public.fingerprint,
            spec=self._spec,
            receipts=tuple(self._receipts),
            bfv=tuple(serialize(self._sums["integers"] or [])),
            ckks=tuple(serialize(self._sums["reals"] or [])),
        )


def add_ciphertexts(
    public: PublicContext,
    contributions: Iterable[bytes],
    *,
    spec: Spec,
    job_id: str,
    round: int,
    enrolment: Mapping[str, bytes],
) -> EncryptedAggregate:
    """Sum a batch of contributions (see `Aggregator` for the checks)."""
    aggregator = Aggregator(public, spec=spec, job_id=job_id, round=round, enrolment=enrolment)
    for contribution in contributions:
        aggregator.add(contribution)
    return aggregator.result()
