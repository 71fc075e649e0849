"""The messages between the supervisor and a child: one JSON object per line on a socketpair.

supervisor -> child: ``hello`` (connection parameters and config, once), ``run`` (one job;
several may be queued ahead, run in order), ``release`` (give back the queued jobs not started
yet), ``stop`` (finish the current job, release the queued ones, then exit).
child -> supervisor: ``ready`` (handlers imported, connected; lists its job types),
``boot_error`` (cannot start: the supervisor stops instead of respawning), ``released`` (the
ids of queued jobs dropped unstarted after ``release`` or ``stop``), ``done`` (a job's
outcome: already recorded in the database by the child, or, with outcome ``ok``, a success
the supervisor records, batched with others, because the handler wrote nothing through
job.conn that would have to commit with it).
"""

from __future__ import annotations

import json
from typing import Any

# A child's fd numbers for its end of the control socket are passed on the command line.
HELLO = "hello"
RUN = "run"
STOP = "stop"
RELEASE = "release"
RELEASED = "released"
READY = "ready"
BOOT_ERROR = "boot_error"
DONE = "done"

# Exit status of a child that could not boot (import error in the handlers, bad config).
EXIT_BOOT_ERROR = 3


def encode(message: dict[str, Any]) -> bytes:
    return json.dumps(message, separators=(",", ":"), default=str).encode("utf-8") + b"\n"


def encode_run(job: dict[str, Any], payload_json: str) -> bytes:
    """A ``run`` message that embeds the payload's JSON text as it came from Postgres,
    so the supervisor never parses or re-serialises payloads."""
    head = json.dumps({"op": RUN, "job": job}, separators=(",", ":"), default=str)
    # head ends with "}}": splice the payload in as job["payload"].
    return (head[:-2] + ',"payload":' + payload_json + "}}\n").encode("utf-8")


def decode(line: bytes) -> dict[str, Any]:
    return json.loads(line)


class LineBuffer:
    """Accumulates bytes from a non-blocking fd and yields complete lines."""

    def __init__(self, limit: int | None = None):
        self.buf = bytearray()
        self.limit = limit

    def feed(self, data: bytes) -> list[bytes]:
        self.buf += data
        lines = []
        while True:
            idx = self.buf.find(b"\n")
            if idx < 0:
                break
            lines.append(bytes(self.buf[:idx]))
            del self.buf[: idx + 1]
        if self.limit is not None and len(self.buf) > self.limit:
            lines.append(bytes(self.buf))
            self.buf.clear()
        return lines

    def rest(self) -> bytes:
        data = bytes(self.buf)
        self.buf.clear()
        return data
