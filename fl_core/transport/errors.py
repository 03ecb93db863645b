"""Map fl_core errors to gRPC status codes and back, at the boundary only.

The server aborts a call with the status code of the error's class and names the class in the
``bulwark-error`` trailer; the client turns a failed call back into the same class (looked up in an
explicit table, never by evaluating what arrived), so code on both sides speaks fl_core errors.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager

import grpc

from .. import errors as e

ERROR_TRAILER = "bulwark-error"

# Most specific first: the first matching class decides the code.
_TO_STATUS: tuple[tuple[type[e.FlCoreError], grpc.StatusCode], ...] = (
    (e.PayloadTooLarge, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (e.CodecError, grpc.StatusCode.INVALID_ARGUMENT),
    (e.StaleResult, grpc.StatusCode.FAILED_PRECONDITION),
    (e.DuplicateResult, grpc.StatusCode.ALREADY_EXISTS),
    (e.UnknownClient, grpc.StatusCode.NOT_FOUND),
    (e.ProtocolError, grpc.StatusCode.INVALID_ARGUMENT),
    (e.ConfigError, grpc.StatusCode.FAILED_PRECONDITION),
    (e.PolicyRefused, grpc.StatusCode.PERMISSION_DENIED),
    (e.TransportUnavailable, grpc.StatusCode.UNAVAILABLE),
    (e.FlCoreError, grpc.StatusCode.INTERNAL),
)

_BY_NAME: dict[str, type[e.FlCoreError]] = {
    cls.__name__: cls
    for cls in (
        e.PayloadTooLarge,
        e.CodecError,
        e.StaleResult,
        e.DuplicateResult,
        e.UnknownClient,
        e.ProtocolError,
        e.ConfigError,
        e.PolicyRefused,
        e.StoreError,
        e.TransportUnavailable,
    )
}


def status_for(error: e.FlCoreError) -> grpc.StatusCode:
    """Return the gRPC status code for ``error``."""
    for cls, code in _TO_STATUS:
        if isinstance(error, cls):
            return code
    return grpc.StatusCode.INTERNAL  # pragma: no cover - FlCoreError is the last entry


def error_from_rpc(exc: grpc.aio.AioRpcError | grpc.RpcError) -> e.FlCoreError:
    """Turn a failed call into the fl_core error it stands for."""
    code = exc.code() if hasattr(exc, "code") else None
    details = (exc.details() if hasattr(exc, "details") else None) or str(code)
    name = ""
    trailers = exc.trailing_metadata() if hasattr(exc, "trailing_metadata") else None
    for key, value in trailers or ():
        if key == ERROR_TRAILER:
            name = value if isinstance(value, str) else value.decode()
    if name in _BY_NAME:
        cls = _BY_NAME[name]
        return cls(details) if cls is not e.PolicyRefused else e.PolicyRefused(details)
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return e.TransportTimeout(details)
    if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED, grpc.StatusCode.UNKNOWN):
        return e.TransportUnavailable(details)
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
        return e.PayloadTooLarge(details)
    return e.TransportError(f"{code}: {details}")


@contextmanager
def map_grpc_errors() -> Iterator[None]:
    """Re-raise any gRPC error inside the block as the matching fl_core error.

    A call that was cancelled because its task is being cancelled stays a cancellation (it must
    not turn into a retryable "unavailable").
    """
    try:
        yield
    except grpc.RpcError as exc:
        task = _current_task()
        if task is not None and task.cancelling():
            raise asyncio.CancelledError from exc
        raise error_from_rpc(exc) from exc


def _current_task() -> asyncio.Task[object] | None:
    try:
        return asyncio.current_task()
    except RuntimeError:  # no running loop (a synchronous caller)
        return None
