"""Transports between coordinator and clients: gRPC and in-memory, one interface."""

from .base import (
    ClientTransport,
    CoordinatorEndpoint,
    JobDone,
    JoinReply,
    JoinRequest,
    PullReply,
    Refusal,
    Result,
    Task,
    TaskHeader,
    Wait,
)
from .inmemory import InMemoryTransport

__all__ = [
    "ClientTransport",
    "CoordinatorEndpoint",
    "InMemoryTransport",
    "JobDone",
    "JoinReply",
    "JoinRequest",
    "PullReply",
    "Refusal",
    "Result",
    "Task",
    "TaskHeader",
    "Wait",
]
