"""``pgq run pgq_app:create --batch-size N``, by the function that command calls.

pgqueuer 1.6.0's ``pgq run`` cannot start with the typer release pip installs beside it (its
``--log-level`` option hands a ``str`` to a function that wants its ``LogLevel`` enum:
``AttributeError: 'str' object has no attribute 'name'``). This does what the command does —
the same logging set-up, the same event loop (uvloop), the documented ``pgqueuer.run`` with
the command's defaults — so the worker measured is pgqueuer's own.
"""

from __future__ import annotations

import sys
from datetime import timedelta

from pgqueuer.adapters.cli.cli import asyncio_run
from pgqueuer.adapters.cli.supervisor import run
from pgqueuer.core import logconfig

if __name__ == "__main__":
    batch_size = int(sys.argv[1]) if len(sys.argv) > 1 else 10
    logconfig.setup_fancy_logger(logconfig.LogLevel.INFO)
    asyncio_run(run("pgq_app:create", dequeue_timeout=timedelta(seconds=30), batch_size=batch_size,
                    heartbeat_timeout=timedelta(seconds=30)))
