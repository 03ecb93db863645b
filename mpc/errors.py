"""Errors raised by mpc.

The tree::

    MpcError
    ├── ParameterError (ValueError)        a parameter is outside its allowed range; names the field
    ├── InsufficientSharesError (ValueError)  fewer Shamir shares than needed to reconstruct
    ├── InvalidShareError (ValueError)     a share is malformed, duplicated or out of the field
    ├── InvalidMessage (ValueError)        a protocol response fails validation (coordinator side)
    └── ProtocolAbort                      this party's part of the round stops (stage, reason)
        └── CoordinatorMisbehaviour        ... because the coordinator deviated from the protocol

``ProtocolAbort`` carries the stage at which the round stopped and a human-readable reason; it
crosses the wire as a value (stage, reason) that the transport puts in its result message.
"""

from __future__ import annotations


class MpcError(Exception):
    """Root of every error raised by the mpc package."""


class ParameterError(MpcError, ValueError):
    """A parameter or configuration value is outside its allowed range."""


class InsufficientSharesError(MpcError, ValueError):
    """Fewer Shamir shares than the threshold were supplied."""


class InvalidShareError(MpcError, ValueError):
    """A Shamir share is malformed, duplicated, or outside the field."""


class InvalidMessage(MpcError, ValueError):
    """A protocol response failed validation; the reason names what is wrong."""


class ProtocolAbort(MpcError):
    """This party's part of a secure-aggregation round aborts.

    Attributes:
        stage: the protocol stage at which the round stopped (a ``Stage`` value).
        reason: why, in words.
    """

    def __init__(self, stage: str, reason: str) -> None:
        super().__init__(f"secure aggregation aborted at stage {stage!s}: {reason}")
        self.stage = stage
        self.reason = reason

    def __reduce__(self) -> tuple[type[ProtocolAbort], tuple[str, str]]:
        return (type(self), (self.stage, self.reason))


class CoordinatorMisbehaviour(ProtocolAbort):
    """The client aborts because a request from the coordinator breaks the protocol."""
