"""Putting jobs in the table from Python: one at a time, or many at once in a few round trips
whatever their number (one INSERT for a few; ids, then COPY, for many).

Both functions run in the caller's transaction when given a connection (the job exists
only if the caller commits: transactional enqueue), or open, commit and close a
connection of their own when given a DSN string.
"""

from __future__ import annotations

import json
import re
import threading
import weakref
from contextlib import contextmanager, suppress
from datetime import datetime, timedelta, timezone
from functools import partial
from typing import Any, Callable, Iterable, Iterator, Mapping

import psycopg
from psycopg.types.json import Jsonb
from psycopg.types.numeric import IntBinaryDumper, IntDumper

from .queries import queries_for
from .registry import options_for
from .units import parse_duration


class JobId(int):
    """The id of an enqueued job; ``created`` is False when a job with the same unique_key
    was already waiting or running and its id is returned instead."""

    created: bool = True  # the class's default lets ids of new jobs skip __new__ below

    def __new__(cls, value: int, created: bool = True) -> "JobId":
        obj = super().__new__(cls, value)
        obj.created = created
        return obj


# New jobs' ids by the thousand: int.__new__ straight, no Python-level call per id (a third of
# a microsecond each, 5% of enqueue_many's time); ``created`` is the class's True.
_new_job_id = partial(int.__new__, JobId)


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
        text = _encode_json(payload)
    except RecursionError:
        raise ValueError(f"payload of job type {job_type!r} is nested too deeply to be stored as JSON") from None
    except (TypeError, ValueError) as error:
        raise TypeError(f"payload of job type {job_type!r} is not JSON-serialisable: {error}") from None
    if "\\u0000" in text and _JSON_NUL.search(text):  # the substring test is the cheap part
        raise ValueError(f"payload of job type {job_type!r} contains a NUL character (\\u0000), which jsonb cannot store")
    _check_unicode(f"payload of job type {job_type!r}", text)
    return text


def _check_unicode(what: str, text: str) -> None:
    """Postgres stores UTF-8: a lone surrogate (a string decoded with ``surrogateescape``, or a
    ``"\\ud800"`` JSON escape) cannot be encoded, and would fail later with a database error."""
    if text.isascii():  # O(1) in CPython, and most text is
        return
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as error:
        bad = text[error.start:error.end]
        raise ValueError(f"{what} is not valid Unicode: it contains the lone surrogate "
                         f"{bad.encode('unicode_escape').decode('ascii')} (undecodable bytes?)") from None


_JSON = json.JSONEncoder(separators=(",", ":"), allow_nan=False, ensure_ascii=False)
_json_local = threading.local()


def _c_json_encoder() -> Any:
    # What JSONEncoder.iterencode() builds on every call (and json.dumps() through it), built
    # once per thread instead: that building is more than half the cost of a small payload.
    return json.encoder.c_make_encoder(  # type: ignore[misc]
        {}, _JSON.default, json.encoder.encode_basestring, None, _JSON.key_separator,
        _JSON.item_separator, False, False, False)


def _encode_json_fast(payload: Any) -> str:
    encoder = getattr(_json_local, "encoder", None)
    if encoder is None:
        encoder = _json_local.encoder = _c_json_encoder()
    try:
        return "".join(encoder(payload, 0))
    except BaseException:
        _json_local.encoder = None  # a failure can leave its circular-reference marks behind
        raise


def _pick_json_encoder() -> Callable[[Any], str]:
    """json.dumps(payload, separators=(",", ":"), allow_nan=False, ensure_ascii=False), exactly."""
    sample = {"s": "\u00e9\n\"\\\U0001f984", "n": [1, -2.5, 1e300, None, True, False], "o": {}, "l": []}
    try:
        if _encode_json_fast(sample) == _JSON.encode(sample) and _encode_json_fast("x") == '"x"':
            return _encode_json_fast
    except Exception:  # noqa: BLE001 - no C accelerator, or its signature changed: use the public way
        pass
    return _JSON.encode


_encode_json = _pick_json_encoder()

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
    """Enqueue many jobs at once; returns their ids in input order.

    Each item is a mapping with ``job_type`` and optionally ``payload``, ``run_at``, ``delay``,
    ``priority``, ``queue``, ``max_attempts``, ``unique_key`` (the arguments of :func:`enqueue`).
    Every item is checked before anything is sent: a bad one raises naming it (``job #N: ...``)
    and inserts nothing. Small batches go in with one INSERT; from :data:`COPY_MIN_ROWS` rows
    without a unique_key on, those go in with COPY, after one statement that reserves their
    ids. A database error on the way leaves the connection as it was before the call: inside
    the caller's transaction the batch runs in a savepoint (rolled back, the transaction still
    usable); with none open, the transaction it began is rolled back (autocommit: its own
    transaction, committed on return). The single INSERT fails as any one statement does
    (nothing of it is written; a transaction it ran in is aborted). A role under row-level
    security may not COPY: such a connection gets the INSERT (the first refusal costs a round
    trip, and is remembered for the connection's life).
    """
    rows = _prepare(jobs, config)
    if not rows:
        return []
    q = queries_for(table)
    with _connection(conn) as c:
        plain = sum(1 for r in rows if r[_KEY] is None)
        if (plain < COPY_MIN_ROWS or c.pgconn.pipeline_status != psycopg.pq.PipelineStatus.OFF
                or c in _NO_COPY):
            return _insert_many(c, q, rows)  # (COPY cannot run in pipeline mode)
        try:
            return _copy_many(c, q, rows)
        except psycopg.errors.FeatureNotSupported:
            # Row-level security applies to this role ("COPY FROM not supported with row-level
            # security"): _copy_many left the connection as it was; INSERT, now and from now on.
            _NO_COPY.add(c)
            return _insert_many(c, q, rows)


# Connections whose role may not COPY into the table (row-level security): they INSERT.
_NO_COPY: weakref.WeakSet[psycopg.Connection] = weakref.WeakSet()


# Below this many rows without a unique_key the single INSERT ... unnest statement is as fast or
# faster: COPY needs four more round trips (ids, savepoint, COPY's own two, release). Measured
# here, one transaction per call, COPY's time over INSERT's: 1.3x at 5 rows, 0.8-1.0x at 50
# (1.0x when the jobs have a delay), 0.75x at 100, 0.6x at 500.
COPY_MIN_ROWS = 50

_FIELDS = frozenset({"job_type", "payload", "run_at", "delay", "priority", "queue", "max_attempts", "unique_key"})
_PLAIN = frozenset({"job_type", "payload"})

# A prepared row is a tuple in the order of _row()'s keys: the tuples cost less than dicts at
# 1,000s per call, which is what enqueue_many() is for.
_TYPE, _PAYLOAD, _QUEUE, _PRIORITY, _RUN_AT, _DELAY, _MAX_ATTEMPTS, _KEY = range(8)


def _prepare(jobs: Iterable[Mapping[str, Any]], config) -> list[tuple]:
    rows: list[tuple] = []
    append = rows.append
    # The common item, {"job_type": t, "payload": p} with t already seen in this call, needs only
    # its payload checked: its queue and priority are t's defaults, found once per type. All
    # other items, and any item whose payload fails, go through _row(), which decides.
    defaults: dict[str, tuple[str, int]] = {}
    for index, item in enumerate(jobs):
        if type(item) is dict and item.keys() <= _PLAIN:
            job_type = item.get("job_type")
            known = defaults.get(job_type) if type(job_type) is str else None
            if known is not None:
                payload = item.get("payload")
                try:
                    text = _encode_json({} if payload is None else payload)
                    if "\\u0000" in text or not text.isascii():  # only such text can hold what jsonb refuses
                        text = _payload_text(job_type, payload)
                except Exception:  # noqa: BLE001 - _row() below raises the error, worded for the user
                    pass
                else:
                    append((job_type, text, known[0], known[1], None, 0.0, None, None))
                    continue
        row = _checked_row(index, item, config)
        append(row)
        if type(item) is dict and item.keys() <= _PLAIN and type(row[_TYPE]) is str:
            defaults[row[_TYPE]] = (row[_QUEUE], row[_PRIORITY])
    return rows


def _checked_row(index: int, item: Any, config) -> tuple:
    if not isinstance(item, Mapping) or "job_type" not in item:
        raise ValueError(f"job #{index + 1}: expected a mapping with a job_type")
    extra = set(item) - _FIELDS
    if extra:
        raise ValueError(f"job #{index + 1}: unknown field(s) {', '.join(sorted(extra))}")
    try:
        r = _row(config=config, **item)
    except (TypeError, ValueError) as error:
        raise type(error)(f"job #{index + 1}: {error}") from None
    return (r["job_type"], r["payload"], r["queue"], r["priority"], r["run_at"], r["delay"], r["max_attempts"],
            r["unique_key"])


def _arrays(rows: list[tuple]) -> dict[str, list]:
    return {
        "job_types": [r[_TYPE] for r in rows],
        "payloads": [Jsonb(r[_PAYLOAD], dumps=_identity) for r in rows],
        "queues": [r[_QUEUE] for r in rows],
        "priorities": [r[_PRIORITY] for r in rows],
        "run_ats": [r[_RUN_AT] for r in rows],
        "delays": [r[_DELAY] for r in rows],
        "max_attempts": [r[_MAX_ATTEMPTS] for r in rows],
        "unique_keys": [r[_KEY] for r in rows],
    }


def _as_params(row: tuple) -> dict[str, Any]:
    return {"job_type": row[_TYPE], "payload": Jsonb(row[_PAYLOAD], dumps=_identity), "queue": row[_QUEUE],
            "priority": row[_PRIORITY], "run_at": row[_RUN_AT], "delay": row[_DELAY],
            "max_attempts": row[_MAX_ATTEMPTS], "unique_key": row[_KEY]}


def _insert_many(c: psycopg.Connection, q, rows: list[tuple]) -> list[JobId]:
    """All rows in one INSERT ... SELECT FROM unnest(...) statement."""
    returned = c.execute(q.job_insert_many, _arrays(rows)).fetchall()
    by_key = {key: id_ for id_, key in returned if key is not None}
    plain = sorted(id_ for id_, key in returned if key is None)
    ids: list[JobId] = []
    plain_iter = iter(plain)
    seen_keys: set[str] = set()
    for r in rows:
        key = r[_KEY]
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
                job_id = _insert_one(c, q, _as_params(r))
                by_key[key] = int(job_id)
                seen_keys.add(key)
                ids.append(job_id)
    return ids


def _copy_many(c: psycopg.Connection, q, rows: list[tuple]) -> list[JobId]:
    """Ids first (one statement), then the rows without a unique_key by COPY and the others by
    INSERT ... ON CONFLICT with those ids, so ids ascend in input order as with one INSERT.

    All of it in one transaction, whose now() is the ids' and the rows', and which a failure
    leaves as it was before the call.
    """
    idle = c.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
    if not idle:
        # Within the caller's transaction: a savepoint to roll back to, not their work with ours.
        with c.transaction():
            return _write_with_ids(c, q, rows)
    if c.autocommit:
        with c.transaction():  # BEGIN ... COMMIT: one transaction, committed on return
            return _write_with_ids(c, q, rows)
    # Not autocommit and no transaction open: the first statement opens the caller's, which
    # they commit. (Connection.transaction() would BEGIN and COMMIT on their behalf.) It holds
    # nothing of theirs yet, so a failure rolls all of it back, for the same round trips as
    # a savepoint would cost on every call.
    try:
        return _write_with_ids(c, q, rows)
    except BaseException:
        if not c.closed:
            with suppress(psycopg.Error):
                c.rollback()
        raise


def _write_with_ids(c: psycopg.Connection, q, rows: list[tuple]) -> list[JobId]:
    # Binary: a thousand ids come back as one array, cheaper to read in binary than in text.
    with c.cursor(binary=True) as cur:
        now, ids = cur.execute(q.jobs_ids_reserve, {"n": len(rows)}).fetchone()
    result: list[JobId | None] = [None] * len(rows)
    keyed = [i for i, r in enumerate(rows) if r[_KEY] is not None]
    if keyed:
        params = _arrays([rows[i] for i in keyed])
        params["ids"] = [ids[i] for i in keyed]
        inserted = {found for (found,) in c.execute(q.job_insert_many_with_ids, params).fetchall()}
        holders: dict[str, int] = {}
        for i in keyed:
            if ids[i] in inserted:
                result[i] = JobId(ids[i], True)
                holders[rows[i][_KEY]] = ids[i]
        for i in keyed:
            if result[i] is None:
                key = rows[i][_KEY]
                if key in holders:  # a repeat of a key this batch inserted, or found held below
                    result[i] = JobId(holders[key], False)
                else:  # held by a job that was there before this batch (or that just finished)
                    result[i] = _insert_one(c, q, _as_params(rows[i]))
                    holders[key] = int(result[i])
    if len(keyed) < len(rows):
        # Jobs due at once take run_at's default, now(), the value the INSERT path computes too:
        # parsing a timestamp per row is a tenth of the server's work for a small job.
        due = all(r[_RUN_AT] is None and r[_DELAY] == 0 for r, done in zip(rows, result) if done is None)
        with c.cursor().copy(q.jobs_copy_due if due else q.jobs_copy) as copy:
            copy.write(_copy_text(rows, ids, now, result, due))
    if not keyed:
        return list(map(_new_job_id, ids))
    return [_new_job_id(ids[i]) if job_id is None else job_id for i, job_id in enumerate(result)]


def _copy_text(rows: list[tuple], ids: list[int], now: datetime, skip: list, due: bool) -> str:
    """The rows not in ``skip`` (the keyed ones, done already) as COPY text, in the columns of
    jobs_copy_due (``due``: all run at now()) or of jobs_copy."""
    names: dict[str, str] = {}  # job types and queues, few per batch, escaped once
    times: dict[Any, str] = {}  # run_at as text, per delay (run_at None) or per run_at given
    lines = []
    append = lines.append
    for i, r in enumerate(rows):
        if skip[i] is not None:
            continue
        job_type, payload, queue, priority, run_at, delay, max_attempts, _ = r
        t = names.get(job_type)
        if t is None:
            t = names[job_type] = _copy_escape(job_type)
        qu = names.get(queue)
        if qu is None:
            qu = names[queue] = _copy_escape(queue)
        # json.dumps escapes every control character, so a payload holds no tab or line break
        # of its own: a backslash is all that COPY text needs escaped in it.
        if "\\" in payload:
            payload = payload.replace("\\", "\\\\")
        attempts = _NULL if max_attempts is None else max_attempts
        if due:
            append(f"{ids[i]}\t{t}\t{payload}\t{qu}\t{priority}\t{attempts}\n")
            continue
        when = times.get(run_at if run_at is not None else delay)
        if when is None:
            when = times[run_at if run_at is not None else delay] = _copy_time(now, run_at, delay)
        append(f"{ids[i]}\t{t}\t{payload}\t{qu}\t{priority}\t{when}\t{attempts}\n")
    return "".join(lines)


def _copy_time(now: datetime, run_at: datetime | None, delay: float) -> str:
    if run_at is not None:
        return str(run_at)  # what psycopg sends for a datetime parameter, so the same instant
    # now() + make_interval(secs => delay) exactly: Postgres rounds secs * 1e6 half to even
    # (rint), as round() does, and adds those microseconds.
    return str(now + timedelta(microseconds=round(delay * 1e6)))


_NULL = "\\N"  # NULL in COPY text
_COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"})


def _copy_escape(text: str) -> str:
    return text.translate(_COPY_ESCAPES)


def _identity(text: str) -> str:
    return text
