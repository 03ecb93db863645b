"""Errors raised by he.

The tree::

    HeError
    ├── ParameterError (ValueError)      an HE parameter is inconsistent; names field and limit
    │   └── InsecureParameters          below the HomomorphicEncryption.org security table
    ├── SpecError (ValueError)           a statistics or vector spec is wrong; names the field
    ├── DataError (ValueError)           an owner's table or vector does not fit its spec
    ├── DecodeError (ValueError)         bytes do not decode to the expected envelope, dtype or size
    ├── ContextMismatch                  a different context fingerprint or foreign parameters
    ├── BindingError                     job, round, spec, owner or signature does not match
    ├── MissingSecretKey                 decryption was asked of something without a secret key
    ├── NotAnAggregate                   the key holder was asked to decrypt one owner's input
    ├── BelowMinimumCohort               fewer distinct contributors than the threshold k
    └── DecryptionError                  decryption failed, was out of range or over its budget

TenSEAL's own ``ValueError``/``RuntimeError`` are mapped at the boundary (``raise ... from``).
"""

from __future__ import annotations


class HeError(Exception):
    """Root of every error he raises on purpose."""


class ParameterError(HeError, ValueError):
    """An HE parameter is missing, inconsistent or outside its allowed range."""


class InsecureParameters(ParameterError):
    """The parameters give less than the required security level."""


class SpecError(HeError, ValueError):
    """A statistics or vector spec is malformed; the message names the field."""


class DataError(HeError, ValueError):
    """An owner's data does not fit the spec (shape, non-finite values, row limit)."""


class DecodeError(HeError, ValueError):
    """Bytes do not decode to the expected envelope, dtype, shape or size."""


class ContextMismatch(HeError):
    """A context or ciphertext belongs to another key or other parameters."""


class BindingError(HeError):
    """A contribution is bound to another job, round or spec, or its signature is wrong."""


class MissingSecretKey(HeError):
    """Decryption needs the secret key, which only the key holder has."""


class NotAnAggregate(HeError):
    """The key holder was asked to decrypt something that is not an aggregate."""


class BelowMinimumCohort(HeError):
    """An aggregate has fewer distinct contributors than the threshold k."""

    def __init__(self, *, contributors: int, required: int) -> None:
        super().__init__(
            f"aggregate has {contributors} distinct contributor(s); at least {required} required"
        )
        self.contributors = contributors
        self.required = required


class DecryptionError(HeError):
    """Decryption failed, produced values out of range, or exceeded the decryption budget."""
