"""What every ``bulwark`` command shares.

One-line errors, job loading, logging, TLS credentials, identity keys, and running a participant
over gRPC. Kept free of torch, so that commands that do not train start quickly. Messages are
printed as plain text: a message that names ``[train]`` must print ``[train]``, so nothing that
carries user data or an error's text goes through rich markup.
"""

from __future__ import annotations

import asyncio
import ipaddress
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.console import Console
from rich.text import Text

from ..config import JobConfig, load_job
from ..errors import FlCoreError
from ..logs import LogFormat as LogFormat
from ..logs import setup_logging as setup_logging

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from ..client.runtime import Participant
    from ..federation import Roster

console = Console(stderr=True)


class Backend(StrEnum):
    """Where ``bulwark simulate`` runs the data owners."""

    LOCAL = "local"
    RAY = "ray"


class Transport(StrEnum):
    """How ``bulwark simulate`` and ``bulwark stats`` connect the simulated parties."""

    INMEMORY = "inmemory"
    GRPC = "grpc"


def fail(message: str) -> typer.Exit:
    """Print ``error: message`` (plain text, never markup) and return the exit to raise (2)."""
    console.print(Text.assemble(("error:", "bold red"), " ", message), soft_wrap=True)
    return typer.Exit(code=2)


def warn(label: str, message: str) -> None:
    """Print ``label: message`` with the label highlighted and the message as plain text."""
    console.print(Text.assemble((f"{label}:", "yellow"), " ", message), soft_wrap=True)


def identity_key(path: Path | None) -> Ed25519PrivateKey:
    """Load (or create, mode 0600) an Ed25519 identity key, or fail naming the file."""
    from ..identity import load_identity

    try:
        return load_identity(path)
    except FlCoreError as exc:
        raise fail(str(exc)) from None


def roster(federation: Path | None, authority: Path | None) -> Roster | None:
    """The verified roster of ``--federation`` against the pinned ``--authority`` key, or fail."""
    if federation is None and authority is None:
        return None
    if federation is None or authority is None:
        raise fail("--federation and --authority go together")
    from ..federation import Roster

    try:
        return Roster.load(federation, authority)
    except FlCoreError as exc:
        raise fail(str(exc)) from None


def load(job_file: Path) -> JobConfig:
    """Load a job file, or fail naming the file and what is wrong."""
    try:
        return load_job(job_file)
    except FlCoreError as exc:
        raise fail(f"{job_file}: {exc}") from None


def check_address(address: str, option: str, *, listen: bool = False) -> str:
    """``address`` if it is ``HOST:PORT`` with a port in range, else a one-line error.

    A dial without a port used to wait silently for gRPC's default; it is refused at once.
    """
    host, sep, port = address.rpartition(":")
    low = 0 if listen else 1
    if not sep or not host or not port.isdigit() or not low <= int(port) <= 65535:
        raise fail(f"{option} {address}: expected HOST:PORT with a port in [{low}, 65535]")
    return address


def is_loopback(address: str) -> bool:
    """Whether ``host:port`` names a loopback host."""
    host = address.rsplit(":", 1)[0].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def server_credentials(
    address: str,
    *,
    tls_cert: Path | None,
    tls_key: Path | None,
    tls_client_ca: Path | None = None,
    insecure: bool = False,
) -> Any:
    """TLS credentials for a server on ``address``; plaintext only on loopback or ``insecure``."""
    import grpc

    if tls_cert or tls_key:
        if not (tls_cert and tls_key):
            raise fail("--tls-cert and --tls-key go together")
        try:
            return grpc.ssl_server_credentials(
                [(tls_key.read_bytes(), tls_cert.read_bytes())],
                root_certificates=tls_client_ca.read_bytes() if tls_client_ca else None,
                require_client_auth=tls_client_ca is not None,
            )
        except OSError as exc:
            raise fail(f"cannot read TLS files: {exc}") from None
    if not is_loopback(address) and not insecure:
        raise fail(
            f"{address} is not a loopback address: give --tls-cert and --tls-key "
            "(or --insecure, for a trusted network only)"
        )
    return None


def channel_credentials(
    coordinator: str,
    tls_ca: Path | None,
    *,
    tls_cert: Path | None = None,
    tls_key: Path | None = None,
) -> Any:
    """TLS credentials for dialling ``coordinator``; plaintext only on loopback.

    With ``tls_cert`` and ``tls_key`` the client presents a certificate (mutual TLS).
    """
    if (tls_cert is None) != (tls_key is None):
        raise fail("--tls-cert and --tls-key go together")
    if tls_cert is not None and tls_ca is None:
        raise fail("a client certificate (--tls-cert) needs the coordinator's CA (--tls-ca)")
    if tls_ca is not None:
        import grpc

        try:
            return grpc.ssl_channel_credentials(
                root_certificates=tls_ca.read_bytes(),
                private_key=tls_key.read_bytes() if tls_key else None,
                certificate_chain=tls_cert.read_bytes() if tls_cert else None,
            )
        except OSError as exc:
            raise fail(f"cannot read TLS files: {exc}") from None
    if not is_loopback(coordinator):
        raise fail(f"{coordinator} is not a loopback address: give --tls-ca")
    return None


def participate(me: Participant, coordinator: str, job: JobConfig, credentials: Any) -> str:
    """Run ``me`` against the coordinator over gRPC until the job ends; return a summary line."""
    from ..transport.grpc_client import GrpcClientTransport

    async def main() -> str:
        transport = GrpcClientTransport(coordinator, limits=job.limits, credentials=credentials)
        try:
            done = await me.run(transport)
        finally:
            await transport.close()
        return f"{me.name}: job {done.status} after {me.tasks_done} tasks"

    try:
        return asyncio.run(main())
    except FlCoreError as exc:
        raise fail(f"{me.name}: {exc}") from None
