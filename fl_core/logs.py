"""Log lines of every Bulwark process: text for people, or one JSON object per line."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from enum import StrEnum

__all__ = ["JsonFormatter", "LogFormat", "setup_logging"]


class LogFormat(StrEnum):
    """``--log-format``: lines for people, or one JSON object per line for log collectors."""

    TEXT = "text"
    JSON = "json"


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time (UTC, ISO 8601), level, logger, message."""

    def format(self, record: logging.LogRecord) -> str:
        """The record as one line of JSON."""
        entry = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def setup_logging(verbose: bool, quiet: bool, log_format: str = LogFormat.TEXT) -> None:
    """Log warnings (``--verbose``: everything, ``--quiet``: errors only), as text or JSON."""
    level = logging.DEBUG if verbose else logging.ERROR if quiet else logging.WARNING
    handler = logging.StreamHandler()
    if log_format == LogFormat.JSON:
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    logging.basicConfig(level=level, handlers=[handler], force=True)
