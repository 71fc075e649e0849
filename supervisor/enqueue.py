"""Putting jobs in the table from Python: one at a time or many in one round trip.

Both functions run in the caller's transaction when given a connection (the job exists
only if the caller commits: transactional enqueue), or open, commit and close a
connection of their own when given a DSN string.
"""

from __future__ import annotations

import json
import re
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from typing import Any, Iterable, Iterator, Mapping

import psycopg
from psycopg.types.json import Jsonb
from psycopg.types.numeric import IntBinaryDumper, IntDumper

from .queries import queries_for
from .registry import options_for
from .units import parse_duration


class JobId(int):
    """The id of an enqueued job; ``created`` is False when a job with the same unique_key
    was already waiting or running and its id is returned instead."""

    created: bool

    def __new__(cls, value: int, created: bool = True) -> "JobId":
        obj = super().__new__(cls, value)
        obj.created = created
        return obj


# A JobId goes to Postgres as the bigint it is, alone or in a list. Left to itself psycopg
# sizes a list of int subclasses from one element: [JobId(64000), JobId(1)] was sent as
# smallint[] and failed with "value out of range", ids straight from enqueue_many() included.
# These stay dispatchers like psycopg's own int dumpers (same oid), so lists mixing JobIds and
# plain ints are still accepted.
class _JobIdDumper(IntDumper):
    def upgrade(self, obj: int, format: Any) -> Any:
        return self._int8_dumper


class _JobIdBinaryDumper(IntBinaryDumper):
    def upgrade(self, obj: int, format: Any) -> Any:
        return self._int8_dumper


psycopg.adapters.register_dumper(JobId, _JobIdDumper)
psycopg.adapters.register_dumper(JobId, _JobIdBinaryDumper)


@contextmanager
def _connection(conn_or_dsn) -> Iterator[psycopg.Connection]:
    if isinstance(conn_or_dsn, str):
        from .db import connect

        with connect(conn_or_dsn, autocommit=False) as conn:
            yield conn
            conn.commit()
    else:
        yield conn_or_dsn


def _payload_text(job_type: str, payload: Any) -> str:
    if payload is None:
        payload = {}
    try:
        # ensure_ascii=False: the text goes to Postgres as UTF-8 either way, and encoding it
        # below is what finds a lone surrogate (which jsonb refuses) before it gets there.
        text = json.dumps(payload, separators=(",", ":"), allow_nan=False, ensure_ascii=False)
    except RecursionError:
        raise ValueError(f"payload of job type {job_type!r} is nested too deeply to be stored as JSON") from None
    except (TypeError, ValueError) as error:
        raise TypeError(f"payload of job type {job_type!r} is not JSON-serialisable: {error}") from None
    if _JSON_NUL.search(text):
        raise ValueError(f"payload of job type {job_type!r} contains a NUL character (\\u0000), which jsonb cannot store")
    _check_unicode(f"payload of job type {job_type!r}", text)
    return text


def _check_unicode(what: str, text: str) -> None:
    """Postgres stores UTF-8: a lone surrogate (a string decoded with ``surrogateescape``, or a
    ``"\\ud800"`` JSON escape) cannot be encoded, and would fail later with a database error."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as error:
        bad = text[error.start:error.end]
        raise ValueError(f"{what} is not valid Unicode: it contains the lone surrogate "
                         f"{bad.encode('unicode_escape').decode('ascii')} (undecodable bytes?)") from None


# A JSON-escaped NUL: "\u0000" preceded by an even number of backslashes (an escaped
# backslash followed by the text "u0000" is not a NUL and jsonb stores it fine).
_JSON_NUL = re.compile(r"(?<!\\)(?:\\\\)*\\u0000")

_INT32 = (-(2**31), 2**31 - 1)


def _text(name: str, value: Any, *, optional: bool) -> str | None:
    if value is None and optional:
        return None
    if not isinstance(value, str) or not value:
        raise ValueError(f"{name} must be a non-empty string, got {value!r}")
    if "\x00" in value:
        raise ValueError(f"{name} {value!r} contains a NUL character, which Postgres text cannot store")
    _check_unicode(f"{name} {value!r}", value)
    return value


def _int(name: str, value: Any, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    if not low <= value <= _INT32[1]:
        raise ValueError(f"{name} must be an integer from {low} to {_INT32[1]}, got {value!r}")
    return value


def _run_at(run_at: datetime | str | None) -> datetime | None:
    if run_at is None:
        return None
    if isinstance(run_at, str):
        try:
            run_at = datetime.fromisoformat(run_at)
        except ValueError:
            raise ValueError(f"run_at must be an ISO 8601 time like 2026-01-31T12:00:00+00:00, got {run_at!r}") from None
    if not isinstance(run_at, datetime):
        raise ValueError(f"run_at must be a datetime or an ISO 8601 string, got {run_at!r}")
    if run_at.tzinfo is None:  # naive datetimes are taken as UTC, the only unambiguous reading
        run_at = run_at.replace(tzinfo=timezone.utc)
    return run_at


def _delay(delay: float | str | timedelta | None) -> float:
    if delay is None:
        return 0.0
    if isinstance(delay, timedelta):
        seconds = delay.total_seconds()
        if seconds < 0:
            raise ValueError(f"delay must not be negative, got {delay!r}")
    else:
        try:
            seconds = parse_duration(delay)
        except ValueError as error:
            raise ValueError(f"delay: {error}") from None
    if seconds > _MAX_DELAY:
        raise ValueError(f"delay must be at most {_MAX_DELAY:.0f} seconds (about 100 years), got {delay!r}")
    return seconds


_MAX_DELAY = 100 * 365.25 * 86400


def _row(job_type: str, payload: Any = None, *, run_at=None, delay=None, priority=None, queue=None,
         max_attempts=None, unique_key=None, config=None) -> dict[str, Any]:
    _text("job_type", job_type, optional=False)
    if run_at is not None and delay is not None:
        raise ValueError("give run_at or delay, not both")
    if max_attempts is not None:
        _int("max_attempts", max_attempts, 1)
    opts = options_for(job_type, config)
    return {
        "job_type": job_type,
        "payload": _payload_text(job_type, payload),
        "queue": _text("queue", queue if queue is not None else opts.queue, optional=False),
        "priority": _int("priority", priority if priority is not None else opts.priority, _INT32[0]),
        "run_at": _run_at(run_at),
        "delay": _delay(delay),
        "max_attempts": max_attempts,
        "unique_key": _text("unique_key", unique_key, optional=True),
    }


def enqueue(conn, job_type: str, payload: Any = None, *, run_at: datetime | str | None = None,
            delay: float | str | timedelta | None = None, priority: int | None = None,
            queue: str | None = None, max_attempts: int | None = None, unique_key: str | None = None,
            table: str = "jobs", config=None) -> JobId:
    """Enqueue one job and return its id (a :class:`JobId`).

    ``conn`` is a psycopg connection (the insert joins its transaction) or a DSN string.
    Queue and priority default to the job type's registered options.
    """
    row = _row(job_type, payload, run_at=run_at, delay=delay, priority=priority, queue=queue,
               max_attempts=max_attempts, unique_key=unique_key, config=config)
    row["payload"] = Jsonb(row["payload"], dumps=_identity)
    q = queries_for(table)
    with _connection(conn) as c:
        return _insert_one(c, q, row)


def _insert_one(c: psycopg.Connection, q, row: dict[str, Any]) -> JobId:
    """Insert one prepared row, or return the live job holding its unique_key."""
    for _ in range(5):
        found = c.execute(q.job_insert, row).fetchone()
        if found is not None:
            return JobId(found[0], True)
        existing = c.execute(q.job_get_by_unique_key, {"unique_key": row["unique_key"]}).fetchone()
        if existing is not None:
            return JobId(existing[0], False)
        # The holder finished between our insert and our look-up: insert again.
    raise RuntimeError(f"could not enqueue {row['job_type']!r} with unique_key {row['unique_key']!r}: "
                       "key kept changing hands")


def enqueue_many(conn, jobs: Iterable[Mapping[str, Any]], *, table: str = "jobs", config=None) -> list[JobId]:
    """Enqueue many jobs in one statement; returns their ids in input order.

    Each item is a mapping with ``job_type`` and optionally ``payload``, ``run_at``, ``delay``,
    ``priority``, ``queue``, ``max_attempts``, ``unique_key`` (the arguments of :func:`enqueue`).
    """
    rows = []
    for index, item in enumerate(jobs):
        if not isinstance(item, Mapping) or "job_type" not in item:
            raise ValueError(f"job #{index + 1}: expected a mapping with a job_type")
        extra = set(item) - {"job_type", "payload", "run_at", "delay", "priority", "queue",
                             "max_attempts", "unique_key"}
        if extra:
            raise ValueError(f"job #{index + 1}: unknown field(s) {', '.join(sorted(extra))}")
        try:
            rows.append(_row(config=config, **item))
        except (TypeError, ValueError) as error:
            raise type(error)(f"job #{index + 1}: {error}") from None
    if not rows:
        return []
    params = {
        "job_types": [r["job_type"] for r in rows],
        "payloads": [Jsonb(r["payload"], dumps=_identity) for r in rows],
        "queues": [r["queue"] for r in rows],
        "priorities": [r["priority"] for r in rows],
        "run_ats": [r["run_at"] for r in rows],
        "delays": [r["delay"] for r in rows],
        "max_attempts": [r["max_attempts"] for r in rows],
        "unique_keys": [r["unique_key"] for r in rows],
    }
    q = queries_for(table)
    with _connection(conn) as c:
        returned = c.execute(q.job_insert_many, params).fetchall()
        by_key = {key: id_ for id_, key in returned if key is not None}
        plain = sorted(id_ for id_, key in returned if key is None)
        ids: list[JobId] = []
        plain_iter = iter(plain)
        seen_keys: set[str] = set()
        for r in rows:
            key = r["unique_key"]
            if key is None:
                ids.append(JobId(next(plain_iter), True))
            elif key in by_key and key not in seen_keys:
                seen_keys.add(key)
                ids.append(JobId(by_key[key], True))
            else:
                existing = by_key.get(key)
                if existing is not None:
                    ids.append(JobId(existing, False))
                else:  # held by a job that was there before this batch (or that just finished)
                    job_id = _insert_one(c, q, dict(r, payload=Jsonb(r["payload"], dumps=_identity)))
                    by_key[key] = int(job_id)
                    seen_keys.add(key)
                    ids.append(job_id)
        return ids


def _identity(text: str) -> str:
    return text
