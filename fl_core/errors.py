"""Errors raised by fl_core.

The tree::

    FlCoreError
    ├── ConfigError (ValueError)            a job file or config object is wrong; names the field
    ├── CodecError (ValueError)             bytes from the wire do not decode to what was expected
    ├── DatasetUnavailable (FileNotFoundError)  a data set's files are not installed (names where)
    ├── PolicyRefused                        the owner refuses a task (with the reason)
    │   └── BudgetExceeded                   ... because the privacy budget would be overspent
    ├── RoundAborted                         a round could not complete (stage, reason)
    ├── ProtocolError                        a result does not fit the task that was sent
    │   ├── StaleResult                      for a round, attempt or stage that is not current
    │   ├── DuplicateResult                  a second result for the same task
    │   └── UnknownClient                    a client id the coordinator does not know
    ├── StoreError                           the coordinator's SQLite state is inconsistent
    ├── LedgerTampered                       the owner's privacy ledger fails its hash-chain check
    ├── AuditTampered                        an audit log fails its hash-chain check (names where)
    └── TransportError                       the network failed
        ├── TransportTimeout (TimeoutError)
        ├── TransportUnavailable (ConnectionError)
        └── PayloadTooLarge (ValueError)

Errors that cross the wire travel as values (a status code and a reason), never as pickled objects;
`fl_core.transport` maps them to gRPC status codes and back.
"""

from __future__ import annotations


class FlCoreError(Exception):
    """Root of every error fl_core raises on purpose."""


class ConfigError(FlCoreError, ValueError):
    """A configuration value is missing, has the wrong type or lies outside its allowed range."""


class CodecError(FlCoreError, ValueError):
    """Bytes do not decode to the expected message, dtype, shape, size or range."""


class DatasetUnavailable(FlCoreError, FileNotFoundError):
    """A data set's files are not where they were looked for; the message says how to get them."""


class PolicyRefused(FlCoreError):
    """The data owner's policy refuses a task; nothing was sent."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class BudgetExceeded(PolicyRefused):
    """The task would spend more privacy budget than the owner's cap allows."""


class RoundAborted(FlCoreError):
    """A round stopped before producing an aggregate.

    Attributes:
        stage: the stage at which the round stopped.
        reason: why, in words a person can act on.
    """

    def __init__(self, *, stage: str, reason: str) -> None:
        super().__init__(f"round aborted at stage {stage!r}: {reason}")
        self.stage = stage
        self.reason = reason


class ProtocolError(FlCoreError, ValueError):
    """A message does not fit the protocol state (wrong task, wrong stage, wrong sender)."""


class StaleResult(ProtocolError):
    """A result for a job, round, attempt or stage that is not the current one."""


class DuplicateResult(ProtocolError):
    """A second result for a task that already has one."""


class UnknownClient(ProtocolError):
    """A client id that the coordinator has not registered (or has forgotten after a restart)."""


class StoreError(FlCoreError):
    """The coordinator's persistent state cannot be read or is inconsistent."""


class LedgerTampered(FlCoreError):
    """The owner's privacy ledger fails its hash-chain check; nothing is charged until fixed."""


class AuditTampered(FlCoreError):
    """An audit log's hash chain is broken; the message names the first entry out of place."""


class TransportError(FlCoreError):
    """The transport failed to deliver a message."""


class TransportTimeout(TransportError, TimeoutError):
    """A call did not complete before its deadline."""


class TransportUnavailable(TransportError, ConnectionError):
    """The peer cannot be reached (yet); callers retry with backoff."""


class PayloadTooLarge(TransportError, ValueError):
    """A message exceeds a configured size, chunk-count or total-byte limit."""
