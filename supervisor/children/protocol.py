"""The messages between the supervisor and a child: one JSON object per line on a socketpair.

supervisor -> child: ``hello`` (connection parameters and config, once), ``run`` (one job;
several may be queued ahead, run in order), ``release`` (give back the queued jobs not started
yet), ``stop`` (finish the current job, release the queued ones, then exit).
child -> supervisor: ``ready`` (handlers imported, connected; lists its job types),
``boot_error`` (cannot start: the supervisor stops instead of respawning), ``released`` (the
ids of queued jobs dropped unstarted after ``release`` or ``stop``), ``done`` (a job's
outcome: already recorded in the database by the child, or, with outcome ``ok``, a success
the supervisor records, batched with others, because the handler wrote nothing through
job.conn that would have to commit with it; ``at``: the child's time.monotonic() when it
sent it, the moment the next job queued in its socket started, which the supervisor may read
a few milliseconds later while reports are batched).
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


_ENCODER = json.JSONEncoder(separators=(",", ":"), default=str)  # json.dumps builds one per call
_DONE_OK_KEYS = frozenset({"op", "id", "duration_ms", "outcome", "rss", "at"})


def encode(message: dict[str, Any]) -> bytes:
    if message.get("outcome") == "ok" and message.get("op") == DONE and message.keys() <= _DONE_OK_KEYS:
        # A success the supervisor records: one per job, the child's hot path.
        line = _done_ok(message.get("id"), message.get("duration_ms"), message.get("rss"), message.get("at"))
        if line is not None:
            return line
    return _ENCODER.encode(message).encode("utf-8") + b"\n"


def _done_ok(job_id: Any, duration_ms: Any, rss: Any, at: Any) -> bytes | None:
    """What the encoder writes for such a ``done`` message (keys in this order), formatted
    directly; None for values it would write otherwise."""
    if (type(job_id) is not int or type(duration_ms) is not float or duration_ms - duration_ms != 0.0
            or (rss is not None and type(rss) is not int)
            or (at is not None and (type(at) is not float or at - at != 0.0))):
        return None
    tail = ("" if rss is None else f',"rss":{rss}') + ("" if at is None else f',"at":{at!r}')
    return f'{{"op":"done","id":{job_id},"duration_ms":{duration_ms!r},"outcome":"ok"{tail}}}\n'.encode("ascii")


_RUN_KEYS = ("id", "job_type", "queue", "priority", "run_at", "attempts", "max_attempts", "lock")
_json_strings: dict[str, str] = {}  # job types, queues and locks repeat: each is encoded once


def _json_string(text: str) -> str:
    encoded = _json_strings.get(text)
    if encoded is None:
        if len(_json_strings) >= 4096:
            _json_strings.clear()
        encoded = _json_strings[text] = json.dumps(text)
    return encoded


def encode_run(job: dict[str, Any], payload_json: str) -> bytes:
    """A ``run`` message that embeds the payload's JSON text as it came from Postgres,
    so the supervisor never parses or re-serialises payloads. The supervisor writes one per
    job: the usual job (these keys, in this order, of these types) is formatted directly,
    byte for byte what json.dumps would write, in a fraction of its time."""
    if tuple(job) == _RUN_KEYS:
        job_id, job_type, queue, priority, run_at, attempts, max_attempts, lock = job.values()
        if (type(job_id) is int and type(priority) is int and type(attempts) is int
                and type(job_type) is str and type(queue) is str and type(lock) is str
                and (max_attempts is None or type(max_attempts) is int)
                and (run_at is None or (type(run_at) is float and run_at - run_at == 0.0))):
            return (f'{{"op":"run","job":{{"id":{job_id},"job_type":{_json_string(job_type)},'
                    f'"queue":{_json_string(queue)},"priority":{priority},'
                    f'"run_at":{"null" if run_at is None else repr(run_at)},"attempts":{attempts},'
                    f'"max_attempts":{"null" if max_attempts is None else max_attempts},'
                    f'"lock":{_json_string(lock)},"payload":{payload_json}}}}}\n').encode("utf-8")
    head = json.dumps({"op": RUN, "job": job}, separators=(",", ":"), default=str)
    # head ends with "}}": splice the payload in as job["payload"].
    return (head[:-2] + ',"payload":' + payload_json + "}}\n").encode("utf-8")


_DONE_OK_HEAD = b'{"op":"done","id":'
_DONE_OK_MIDDLE = b',"outcome":"ok","at":'


def decode(line: bytes) -> dict[str, Any]:
    if line.startswith(_DONE_OK_HEAD) and line.endswith(b"}"):
        # What _done_ok writes, one per job: read without the JSON parser.
        job_id, found, rest = line[len(_DONE_OK_HEAD):-1].partition(b',"duration_ms":')
        duration, middle, at = rest.partition(_DONE_OK_MIDDLE)
        if (found and middle and job_id.isdigit() and duration[:1].isdigit() and at[:1].isdigit()
                and b"_" not in duration and b"_" not in at):
            try:
                return {"op": DONE, "id": int(job_id), "duration_ms": float(duration), "outcome": "ok",
                        "at": float(at)}
            except ValueError:
                pass
    return json.loads(line)


class LineBuffer:
    """Accumulates bytes from a non-blocking fd and yields complete lines."""

    def __init__(self, limit: int | None = None):
        self.buf = bytearray()
        self.limit = limit

    def feed(self, data: bytes) -> list[bytes]:
        lines: list[bytes] = []
        if b"\n" in data:
            if self.buf:
                data = bytes(self.buf) + data
                self.buf.clear()
            lines = data.split(b"\n")
            self.buf += lines.pop()  # what follows the last newline: the start of the next line
        else:
            self.buf += data
        if self.limit is not None and len(self.buf) > self.limit:
            lines.append(bytes(self.buf))
            self.buf.clear()
        return lines

    def rest(self) -> bytes:
        data = bytes(self.buf)
        self.buf.clear()
        return data
