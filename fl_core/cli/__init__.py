"""The ``bulwark`` command line, one module per role.

| module | commands |
| --- | --- |
| `simulate.py` | `bulwark simulate` (a whole federation on this machine) |
| `coordinator.py` | `bulwark coordinator` |
| `client.py` | `bulwark client` (a data owner of a training job) |
| `keyholder.py` | `bulwark keyholder` |
| `stats.py` | `bulwark stats`, `stats-coordinator`, `stats-owner` |
| `budget.py` | `bulwark budget show` |
| `data.py` | `bulwark data withdraw`, `bulwark data show` (withdrawn records) |
| `audit.py` | `bulwark audit verify`, `bulwark audit export` |
| `report.py` | `bulwark report` |
| `keys.py` | `bulwark public-key` |
| `code.py` | `bulwark code-hash` (the `[code]` pin of an installed model package) |
| `certs.py` | `bulwark certs init`, `bulwark certs issue` (a federation CA and its certificates) |
| `_common.py` | one-line errors, job loading, logging, TLS, identities, running a participant |
| `_dial.py` | one health call before a participant joins: TLS failures end it at once |
| `_progress.py` | the progress display and the summary table |

Errors that a user can act on (a wrong job field, a missing data set, an unreachable coordinator)
are printed as one line of plain text naming what is wrong, with exit status 2; never a traceback.
"""

from __future__ import annotations

import os
import sys
import warnings

__all__ = ["main"]


def main() -> None:
    """Entry point of the ``bulwark`` console script."""
    # gRPC's C core logs every failed TLS handshake as raw INFO lines on stderr; the command
    # reports the cause itself, in one line (cli/_dial.py). Set before grpc is first imported;
    # an explicit GRPC_VERBOSITY (for debugging) wins.
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
    from ._app import build_app
    from ._common import console

    # Opacus's per-example hooks trigger this torch warning on every backward pass; the filter
    # inside fl_core.dp.dpsgd is per call and not thread-safe, so the application sets it once.
    warnings.filterwarnings("ignore", message=".*Full backward hook is firing.*")
    try:
        build_app()()
    except KeyboardInterrupt:
        console.print("interrupted")
        sys.exit(130)
