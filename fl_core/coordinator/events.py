"""Progress events a coordinator emits while a job runs (for displays and logs).

Kinds: ``client_joined``, ``resumed``, ``round_started``, ``stage_progress``, ``round_completed``
(its data are the round's metrics), ``round_aborted`` and ``job_done``; statistics jobs add
their own.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Event:
    """Progress of the job, for displays and logs."""

    kind: str
    round: int = 0
    data: dict[str, object] = field(default_factory=dict)


EventSink = Callable[[Event], None]
