"""Dial the coordinator once before a participant starts: fail fast, naming the cause.

A participant's own loop retries every unavailable call until ``--connect-timeout``, because a
coordinator that restarts or is not up yet is normal. A TLS handshake that fails is not: gRPC
reports it as the same ``UNAVAILABLE``, so a plaintext client against a TLS coordinator, a client
without an accepted certificate under mutual TLS, or a wrong CA used to retry silently until the
timeout. Before the participant joins, :func:`preflight` makes one call with a deadline to the
coordinator's standard gRPC health service (which every coordinator serves, under the same
credentials as the job's service) and reads gRPC's error text: a refused connection is retried
until the timeout; a failed handshake ends the command at once with one line that says what to
change.
"""

from __future__ import annotations

import time
from typing import Any

from ._common import fail

CALL_TIMEOUT_S = 5.0
"""Deadline of one health call: a coordinator that accepts the connection answers in far less."""

RETRY_S = 0.5
"""Pause between attempts while the coordinator is unreachable."""

CLOSED_ATTEMPTS = 3
"""How many times a connection closed during the handshake is seen before it counts as refused.

A coordinator that is stopping can close a connection once; one that closes every attempt
rejects this client's TLS settings.
"""


def handshake_cause(details: str, *, tls: bool) -> str | None:
    """What a failed connection's gRPC error text says about TLS, or ``None`` if nothing.

    Args:
        details: the ``details()`` of the failed call.
        tls: whether this client dialled with TLS credentials.

    Returns:
        A sentence naming the cause and what to do, or ``None`` when the text shows no TLS
        failure (the coordinator is unreachable, or the error is something else).
    """
    text = details.lower()
    if "certificate_verify_failed" in text or "unable to get local issuer" in text:
        return (
            "the coordinator's certificate does not chain to --tls-ca: give the CA that "
            "issued the coordinator's certificate"
        )
    if "hostname" in text or "peer name" in text or "subject alternative" in text:
        return (
            "the coordinator's certificate does not name the host dialled: dial a name in "
            "its certificate, or issue one with that --san"
        )
    if "handshake" in text or "ssl_error" in text or "tsi_" in text or "wrong_version" in text:
        if not tls:
            return "the coordinator did not speak plaintext: it requires TLS, give --tls-ca"
        return (
            "the TLS handshake failed: the coordinator may not use TLS, or it refused this "
            f"client's certificate ({details.rsplit(': ', 1)[-1] or details})"
        )
    if "socket closed" in text or "connection reset" in text:
        if not tls:
            return (
                "the coordinator closed the connection during the handshake: it requires TLS, "
                "give --tls-ca (and --tls-cert/--tls-key under mutual TLS)"
            )
        return (
            "the coordinator closed the connection during the TLS handshake: it requires a "
            "client certificate (mutual TLS) issued by the CA it trusts; give --tls-cert and "
            "--tls-key"
        )
    return None


def preflight(
    coordinator: str, credentials: Any, *, connect_timeout: float, options: list[Any] | None = None
) -> None:
    """Return once ``coordinator`` answers a health call; fail at once on a TLS failure.

    Args:
        coordinator: ``host:port`` to dial.
        credentials: the ``grpc.ChannelCredentials`` the participant will use, or ``None`` for
            plaintext (loopback only).
        connect_timeout: seconds to keep retrying an unreachable coordinator.
        options: gRPC channel options (the participant's own, so that a TLS name override or a
            message limit applies to this call too).

    Raises:
        typer.Exit: (exit status 2, one line) the handshake failed, or the coordinator stayed
            unreachable for ``connect_timeout`` seconds.
    """
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    deadline = time.monotonic() + connect_timeout
    closed = 0
    while True:
        remaining = deadline - time.monotonic()
        if credentials is None:
            channel = grpc.insecure_channel(coordinator, options=options or [])
        else:
            channel = grpc.secure_channel(coordinator, credentials, options=options or [])
        try:
            health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=max(0.1, min(CALL_TIMEOUT_S, remaining))
            )
            return
        except grpc.RpcError as exc:
            code: grpc.StatusCode = exc.code()
            details: str = exc.details() or ""
            if code not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                return  # the coordinator answered (a server without a health service, say)
            cause = handshake_cause(details, tls=credentials is not None)
            if cause is not None:
                closed += 1
                if "closed the connection" not in cause or closed >= CLOSED_ATTEMPTS:
                    raise fail(f"cannot connect to {coordinator}: {cause}") from None
            last = details.rsplit(": ", 1)[-1] or str(code)
        finally:
            channel.close()
        if deadline - time.monotonic() <= 0:
            raise fail(
                f"coordinator unreachable for {connect_timeout:g} s at {coordinator}: {last}; "
                "check the address and that the coordinator is running (or raise "
                "--connect-timeout)"
            )
        time.sleep(min(RETRY_S, max(0.0, deadline - time.monotonic())))
