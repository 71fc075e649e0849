"""Putting jobs in the table from Python: one at a time or many in one round trip.

Both functions run in the caller's transaction when given a connection (the job exists
only if the caller commits: transactional enqueue), or open, commit and close a
connection of their own when given a DSN string.
"""

from __future__ import annotations

import json
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from typing import Any, Iterable, Iterator, Mapping

import psycopg
from psycopg.types.json import Jsonb

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
        text = json.dumps(payload, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as error:
        raise TypeError(f"payload of job type {job_type!r} is not JSON-serialisable: {error}") from None
    if "\\u0000" in text:
        raise ValueError(f"payload of job type {job_type!r} contains a NUL character, which jsonb cannot store")
    return text


def _run_at(run_at: datetime | str | None) -> datetime | None:
    if run_at is None:
        return None
    if isinstance(run_at, str):
        run_at = datetime.fromisoformat(run_at)
    if run_at.tzinfo is None:  # naive datetimes are taken as UTC, the only unambiguous reading
        run_at = run_at.replace(tzinfo=timezone.utc)
    return run_at


def _delay(delay: float | str | timedelta | None) -> float:
    if delay is None:
        return 0.0
    if isinstance(delay, timedelta):
        return delay.total_seconds()
    return parse_duration(delay)


def _row(job_type: str, payload: Any = None, *, run_at=None, delay=None, priority=None, queue=None,
         max_attempts=None, unique_key=None, config=None) -> dict[str, Any]:
    if not isinstance(job_type, str) or not job_type:
        raise ValueError("job_type must be a non-empty string")
    if run_at is not None and delay is not None:
        raise ValueError("give run_at or delay, not both")
    if max_attempts is not None and (not isinstance(max_attempts, int) or max_attempts < 1):
        raise ValueError(f"max_attempts must be an integer >= 1, got {max_attempts!r}")
    opts = options_for(job_type, config)
    return {
        "job_type": job_type,
        "payload": _payload_text(job_type, payload),
        "queue": queue if queue is not None else opts.queue,
        "priority": int(priority if priority is not None else opts.priority),
        "run_at": _run_at(run_at),
        "delay": _delay(delay),
        "max_attempts": max_attempts,
        "unique_key": unique_key,
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
        for _ in range(5):
            found = c.execute(q.job_insert, row).fetchone()
            if found is not None:
                return JobId(found[0], True)
            existing = c.execute(q.job_get_by_unique_key, {"unique_key": unique_key}).fetchone()
            if existing is not None:
                return JobId(existing[0], False)
            # The holder finished between our insert and our look-up: insert again.
        raise RuntimeError(f"could not enqueue {job_type!r} with unique_key {unique_key!r}: key kept changing hands")


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
        rows.append(_row(config=config, **item))
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
                if existing is None:
                    found = c.execute(q.job_get_by_unique_key, {"unique_key": key}).fetchone()
                    existing = found[0] if found else None
                if existing is None:
                    raise RuntimeError(f"could not enqueue {r['job_type']!r} with unique_key {key!r}")
                ids.append(JobId(existing, False))
        return ids


def _identity(text: str) -> str:
    return text
