"""De-identification before use: what the owner does to its table before any task reads it.

The owner's policy declares (``fl_core.client.policy.OwnerPolicy``):

- ``pseudonymize_columns``: identifier columns replaced by keyed pseudonyms,
  HMAC-SHA256 under an owner-held key (:func:`load_pseudonym_key`, a file created with mode
  0600), so the same person gets the same pseudonym in every run of this owner and nobody
  without the key can recompute or reverse it;
- ``drop_columns``: direct identifiers (names, phone numbers) removed from the table as soon as
  it is read;
- ``quasi_identifiers`` and ``min_k_anonymity``: the table is refused when some combination of
  quasi-identifier values is shared by fewer than ``min_k_anonymity`` rows (k-anonymity).

None of these columns may be a feature or the label of the job's ``[schema]``: an identifier
never reaches a model (the job is refused, naming the column). :class:`Deidentified` records
what was done (columns pseudonymized and dropped, the smallest equivalence class); the owner
writes it to its audit log and the report shows it.

Notes:
    HMAC-SHA256 with a 256-bit random key is a keyed pseudonymization in the sense of GDPR
    Art. 4(5) (the key is the "additional information kept separately"); an unkeyed hash of a
    low-entropy identifier would be reversible by enumeration. k-anonymity follows Sweeney,
    "k-Anonymity: A Model for Protecting Privacy", IJUFKS 10(5), 2002: each release row must be
    indistinguishable from at least k-1 others on the quasi-identifiers. It does not protect
    against attribute disclosure within a class (l-diversity), which the job's DP addresses.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from ..errors import ConfigError, PolicyRefused

KEY_BYTES = 32
"""Length of the pseudonymization key (256 bits)."""

PSEUDONYM_DOMAIN = b"bulwark-pseudonym-v1\x00"
"""Separates these HMACs from any other use of the key; the column name follows it."""


def load_pseudonym_key(path: str | os.PathLike[str]) -> bytes:
    """The owner's pseudonymization key from ``path`` (hex), created with mode 0600 if missing.

    Raises:
        ConfigError: the file is not 64 hex digits, or is readable by others.
    """
    file = Path(path)
    if not file.exists():
        file.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="ascii") as fh:
            fh.write(secrets.token_hex(KEY_BYTES) + "\n")
    if file.stat().st_mode & 0o077:
        raise ConfigError(f"pseudonym key {file} is readable by others: chmod 600 it")
    text = file.read_text(encoding="ascii", errors="replace").strip()
    try:
        key = bytes.fromhex(text)
    except ValueError:
        key = b""
    if len(key) != KEY_BYTES:
        raise ConfigError(f"pseudonym key {file} must hold {2 * KEY_BYTES} hex digits")
    return key


def pseudonymize(key: bytes, column: str, values: npt.NDArray[Any]) -> npt.NDArray[np.str_]:
    """HMAC-SHA256 pseudonyms (hex) of ``values`` of ``column`` under ``key``."""
    prefix = PSEUDONYM_DOMAIN + column.encode() + b"\x00"
    return np.array(
        [
            hmac.new(key, prefix + str(v).encode(), hashlib.sha256).hexdigest()
            for v in values.tolist()
        ],
        dtype=np.str_,
    )


def smallest_class(columns: Mapping[str, npt.NDArray[Any]], quasi: tuple[str, ...]) -> int:
    """The size of the smallest equivalence class over the quasi-identifiers (0: no rows)."""
    if not quasi:
        return 0
    rows = zip(*(columns[q].tolist() for q in quasi), strict=True)
    counts = Counter(rows)
    return min(counts.values()) if counts else 0


@dataclass(frozen=True, slots=True, kw_only=True)
class Deidentified:
    """What de-identification did to one table (written to the owner's audit log).

    Attributes:
        pseudonymized: columns replaced by keyed pseudonyms.
        dropped: direct identifiers removed (those the table had).
        quasi_identifiers: the columns k-anonymity was checked over.
        smallest_class: the smallest equivalence class found (0: none checked).
        min_k: the policy's k (0: no check).
        rows: rows checked.
    """

    pseudonymized: tuple[str, ...]
    dropped: tuple[str, ...]
    quasi_identifiers: tuple[str, ...]
    smallest_class: int
    min_k: int
    rows: int

    def detail(self) -> dict[str, object]:
        """The audit entry's details."""
        return {
            "pseudonymized": list(self.pseudonymized),
            "dropped": list(self.dropped),
            "quasi_identifiers": list(self.quasi_identifiers),
            "smallest_class": self.smallest_class,
            "min_k": self.min_k,
            "rows": self.rows,
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class Deidentifier:
    """The owner's de-identification rules (from its policy) and its pseudonymization key.

    Args:
        pseudonymize_columns: identifier columns to pseudonymize.
        drop_columns: direct identifiers to drop.
        quasi_identifiers: columns k-anonymity is checked over.
        min_k: the least equivalence-class size (0: no check).
        key: the owner's key (needed when ``pseudonymize_columns`` is not empty).
    """

    pseudonymize_columns: tuple[str, ...] = ()
    drop_columns: tuple[str, ...] = ()
    quasi_identifiers: tuple[str, ...] = ()
    min_k: int = 0
    key: bytes = b""

    def __post_init__(self) -> None:
        if self.pseudonymize_columns and len(self.key) != KEY_BYTES:
            raise ConfigError("policy.pseudonymize_columns needs the owner's pseudonym key")
        both = set(self.pseudonymize_columns) & set(self.drop_columns)
        if both:
            raise ConfigError(f"columns {sorted(both)} are both pseudonymized and dropped")
        if self.min_k and not self.quasi_identifiers:
            raise ConfigError("policy.min_k_anonymity needs policy.quasi_identifiers")

    @property
    def active(self) -> bool:
        """Whether there is anything to do."""
        return bool(self.pseudonymize_columns or self.drop_columns or self.min_k)

    def reads(self) -> tuple[str, ...]:
        """The columns de-identification reads (pseudonymized and quasi-identifiers)."""
        return tuple(dict.fromkeys([*self.pseudonymize_columns, *self.quasi_identifiers]))

    def check_used(self, used: tuple[str, ...], *, where: str) -> None:
        """Refuse when an identifier column would reach a model or a statistic.

        Raises:
            PolicyRefused: naming the column.
        """
        for name in used:
            if name in self.drop_columns or name in self.pseudonymize_columns:
                raise PolicyRefused(
                    f"{where} reads column {name!r}, which the owner's policy declares an "
                    "identifier (policy.drop_columns / pseudonymize_columns)"
                )

    def apply(
        self, columns: Mapping[str, npt.NDArray[Any]]
    ) -> tuple[dict[str, npt.NDArray[Any]], Deidentified]:
        """Drop, pseudonymize and check k-anonymity of ``columns`` (one array per column).

        Returns:
            The de-identified columns and what was done.

        Raises:
            ConfigError: a pseudonymized or quasi-identifier column the table lacks.
            PolicyRefused: the smallest equivalence class is below ``min_k``.
        """
        missing = [c for c in self.reads() if c not in columns]
        if missing:
            raise ConfigError(f"the owner's table lacks the policy's columns {missing}")
        out = {k: v for k, v in columns.items() if k not in self.drop_columns}
        rows = len(next(iter(columns.values()))) if columns else 0
        smallest = smallest_class(columns, self.quasi_identifiers)
        report = Deidentified(
            pseudonymized=self.pseudonymize_columns,
            dropped=tuple(c for c in self.drop_columns if c in columns),
            quasi_identifiers=self.quasi_identifiers,
            smallest_class=smallest,
            min_k=self.min_k,
            rows=rows,
        )
        if self.min_k and rows and smallest < self.min_k:
            raise PolicyRefused(
                f"the owner's table is not {self.min_k}-anonymous over "
                f"{list(self.quasi_identifiers)}: its smallest equivalence class has {smallest} "
                f"rows (policy.min_k_anonymity = {self.min_k})"
            )
        for name in self.pseudonymize_columns:
            out[name] = pseudonymize(self.key, name, columns[name])
        return out, report
