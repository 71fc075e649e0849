"""enqueue / enqueue_many against a real Postgres (SPEC §3)."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone

import psycopg
import pytest
from psycopg.pq import TransactionStatus

from conftest import job_row, run_cli
from supervisor import JobId, enqueue, enqueue_many, job
from supervisor.config import config_from_dict
from supervisor.enqueue import COPY_MIN_ROWS
from supervisor.queries import channel_name

MAILER = "test_enqueue_mailer"


@job(MAILER, queue="emails", priority=5)
def mailer(job):  # never run here: only its registered options matter
    pass


def count(conn: psycopg.Connection) -> int:
    return conn.execute("SELECT count(*) FROM jobs").fetchone()[0]


def test_enqueue_returns_id_and_row_has_fields_and_defaults(db):
    job_id = enqueue(db, "noop", {"a": 1, "nested": {"list": [1, "two", None]}})
    assert isinstance(job_id, JobId) and isinstance(job_id, int)
    assert job_id.created is True
    row = job_row(db, job_id)
    assert row["job_type"] == "noop"
    assert row["payload"] == {"a": 1, "nested": {"list": [1, "two", None]}}
    assert row["status"] == "queued"
    assert row["queue"] == "default"
    assert row["priority"] == 0
    assert row["attempts"] == 0
    assert row["max_attempts"] is None  # NULL: the job type's setting applies
    assert row["unique_key"] is None
    assert row["locked_by"] is None and row["locked_at"] is None
    assert row["last_error"] is None and row["finished_at"] is None
    assert row["run_at"] == row["created_at"]  # due at once: now() of the enqueue transaction
    assert row["created_at"] == row["updated_at"]

    given = enqueue(db, "noop", None, queue="q1", priority=-3, max_attempts=2, unique_key="u1")
    row = job_row(db, given)
    assert (row["payload"], row["queue"], row["priority"], row["max_attempts"], row["unique_key"]) == (
        {}, "q1", -3, 2, "u1")
    assert enqueue(db, "noop", [1, 2]) > given  # any JSON value is a payload
    assert count(db) == 3


def test_enqueue_joins_the_callers_transaction(dsn, db):
    with psycopg.connect(dsn) as conn:  # not autocommit: enqueue runs in our transaction
        job_id = enqueue(conn, "noop", {"n": 1})
        assert conn.execute("SELECT count(*) FROM jobs WHERE id = %s", (job_id,)).fetchone()[0] == 1
        assert count(db) == 0  # not visible to others before commit
        conn.rollback()
        assert count(conn) == 0

        with pytest.raises(RuntimeError):
            with conn.transaction():
                enqueue(conn, "noop", {"n": 2})
                enqueue_many(conn, [{"job_type": "noop"}] * 3)
                raise RuntimeError("the caller's work failed")
        conn.commit()
    assert count(db) == 0

    with psycopg.connect(dsn) as conn:
        job_id = enqueue(conn, "noop", {"n": 3})
        conn.commit()
    assert job_row(db, job_id)["payload"] == {"n": 3}


def test_enqueue_with_dsn_string_commits_by_itself(dsn, db):
    job_id = enqueue(dsn, "noop", {"via": "dsn"})
    assert job_row(db, job_id)["payload"] == {"via": "dsn"}
    ids = enqueue_many(dsn, [{"job_type": "noop", "payload": {"i": i}} for i in range(3)])
    assert [job_row(db, i)["payload"] for i in ids] == [{"i": 0}, {"i": 1}, {"i": 2}]


def test_run_at_and_delay(db):
    aware = datetime(2031, 5, 6, 7, 8, 9, 123456, tzinfo=timezone(timedelta(hours=2)))
    assert job_row(db, enqueue(db, "noop", run_at=aware))["run_at"] == aware
    naive = datetime(2031, 5, 6, 7, 8, 9)
    assert job_row(db, enqueue(db, "noop", run_at=naive))["run_at"] == naive.replace(tzinfo=timezone.utc)
    past = datetime.now(timezone.utc) - timedelta(days=1)
    assert job_row(db, enqueue(db, "noop", run_at=past))["run_at"] == past
    iso = "2031-01-02T03:04:05+00:00"
    assert job_row(db, enqueue(db, "noop", run_at=iso))["run_at"] == datetime(2031, 1, 2, 3, 4, 5, tzinfo=timezone.utc)

    # delay is relative to the database's now() (the enqueue transaction's, = created_at).
    for delay, seconds in ((30, 30), (2.5, 2.5), ("5m", 300), ("1h30m", 5400), (timedelta(days=2), 172800)):
        row = job_row(db, enqueue(db, "noop", delay=delay))
        assert row["run_at"] - row["created_at"] == timedelta(seconds=seconds), delay
    rows = [job_row(db, i) for i in enqueue_many(db, [{"job_type": "noop", "delay": "10s"},
                                                      {"job_type": "noop", "run_at": naive}])]
    assert rows[0]["run_at"] - rows[0]["created_at"] == timedelta(seconds=10)
    assert rows[1]["run_at"] == naive.replace(tzinfo=timezone.utc)

    before = count(db)
    with pytest.raises(ValueError, match="run_at or delay"):
        enqueue(db, "noop", run_at=aware, delay=5)
    with pytest.raises(ValueError, match="run_at or delay"):
        enqueue_many(db, [{"job_type": "noop"}, {"job_type": "noop", "run_at": aware, "delay": "5s"}])
    for bad in ("5 parsecs", -1, timedelta(seconds=-1)):
        with pytest.raises(ValueError, match="delay"):
            enqueue(db, "noop", delay=bad)
    with pytest.raises(ValueError, match="run_at"):
        enqueue(db, "noop", run_at="next tuesday")
    assert count(db) == before


def test_unique_key(db):
    first = enqueue(db, "noop", {"n": 1}, unique_key="report:42")
    assert first.created is True
    again = enqueue(db, "noop", {"n": 2}, unique_key="report:42")
    assert again == first and again.created is False
    assert count(db) == 1
    assert job_row(db, first)["payload"] == {"n": 1}

    # Still held while running and while waiting to be retried.
    for status in ("running", "retry"):
        db.execute("UPDATE jobs SET status = %s WHERE id = %s", (status, first))
        held = enqueue(db, "noop", unique_key="report:42")
        assert (held, held.created) == (first, False)

    # Once finished, the key is free again.
    db.execute("UPDATE jobs SET status = 'succeeded', finished_at = now() WHERE id = %s", (first,))
    second = enqueue(db, "noop", {"n": 3}, unique_key="report:42")
    assert second != first and second.created is True
    assert count(db) == 2
    for status in ("failed", "cancelled"):
        db.execute("UPDATE jobs SET status = %s, finished_at = now() WHERE id = %s", (status, second))
        second = enqueue(db, "noop", unique_key="report:42")
        assert second.created is True
    assert count(db) == 4

    # Different keys and no key do not interfere.
    other = enqueue(db, "noop", unique_key="report:43")
    assert other.created and other != second
    assert enqueue(db, "noop").created and enqueue(db, "noop").created


def test_enqueue_many_ten_thousand_in_input_order(db):
    n = 10_000
    types = ("noop", "effect", "sleep")
    ids = enqueue_many(db, [{"job_type": types[i % 3], "payload": {"i": i}, "priority": (i * 7919) % 13}
                            for i in range(n)])
    assert len(ids) == n and len(set(ids)) == n
    assert all(isinstance(i, JobId) and i.created for i in ids)
    assert db.execute("SELECT count(*), count(DISTINCT created_at) FROM jobs").fetchone() == (n, 1)
    index_of = dict(db.execute("SELECT id, (payload->>'i')::int FROM jobs").fetchall())
    assert [index_of[job_id] for job_id in ids] == list(range(n))
    wrong = db.execute("""SELECT count(*) FROM jobs
                          WHERE job_type <> (ARRAY['noop','effect','sleep'])[1 + (payload->>'i')::int % 3]
                             OR priority <> ((payload->>'i')::int * 7919) % 13""").fetchone()[0]
    assert wrong == 0
    assert enqueue_many(db, []) == []


def test_enqueue_many_with_unique_keys(db):
    existing = enqueue(db, "noop", {"tag": "existing"}, unique_key="k-old")
    finished = enqueue(db, "noop", {"tag": "finished"}, unique_key="k-done")
    db.execute("UPDATE jobs SET status = 'succeeded', finished_at = now() WHERE id = %s", (finished,))

    batch = [
        {"job_type": "noop", "payload": {"tag": "a"}},
        {"job_type": "noop", "payload": {"tag": "k1"}, "unique_key": "k1"},
        {"job_type": "noop", "payload": {"tag": "old-dup"}, "unique_key": "k-old"},
        {"job_type": "noop", "payload": {"tag": "b"}},
        {"job_type": "noop", "payload": {"tag": "k1-dup"}, "unique_key": "k1"},
        {"job_type": "noop", "payload": {"tag": "k2"}, "unique_key": "k2"},
        {"job_type": "noop", "payload": {"tag": "old-dup2"}, "unique_key": "k-old"},
        {"job_type": "noop", "payload": {"tag": "done-new"}, "unique_key": "k-done"},
        {"job_type": "noop", "payload": {"tag": "c"}},
        {"job_type": "noop", "payload": {"tag": "done-dup"}, "unique_key": "k-done"},
    ]
    ids = enqueue_many(db, batch)
    assert len(ids) == len(batch)
    assert [i.created for i in ids] == [True, True, False, True, False, True, False, True, True, False]
    assert ids[2] == ids[6] == existing
    assert ids[4] == ids[1]
    assert ids[9] == ids[7] != finished
    tag = dict(db.execute("SELECT id, payload->>'tag' FROM jobs").fetchall())
    assert [tag[i] for i in ids] == ["a", "k1", "existing", "b", "k1", "k2", "existing", "done-new", "c", "done-new"]
    assert count(db) == 2 + 6  # the two before, and six new rows
    live = db.execute("""SELECT unique_key, count(*) FROM jobs WHERE unique_key IS NOT NULL
                         AND status IN ('queued', 'retry', 'running') GROUP BY unique_key""").fetchall()
    assert sorted(live) == [("k-done", 1), ("k-old", 1), ("k1", 1), ("k2", 1)]

    # The same batch again creates only the plain jobs.
    again = enqueue_many(db, batch)
    assert [i.created for i in again] == [key is None for key in (b.get("unique_key") for b in batch)]
    assert [again[i] for i in (1, 2, 4, 5, 6, 7, 9)] == [ids[i] for i in (1, 2, 4, 5, 6, 7, 9)]


class NotJson:
    pass


@pytest.mark.parametrize("payload, match", [
    ({"obj": NotJson()}, "not JSON-serialisable"),
    ({"when": datetime(2030, 1, 1)}, "not JSON-serialisable"),
    ({1, 2}, "not JSON-serialisable"),
    ({"x": float("nan")}, "not JSON-serialisable"),
    ({"s": "a\x00b"}, "NUL"),
    ({"k\x00": 1}, "NUL"),
    (["\x00"], "NUL"),
])
def test_bad_payloads_are_refused_and_insert_nothing(db, payload, match):
    with pytest.raises((TypeError, ValueError), match=match) as info:
        enqueue(db, "noop", payload)
    assert "noop" in str(info.value)
    with pytest.raises((TypeError, ValueError), match=match) as info:
        enqueue_many(db, [{"job_type": "noop", "payload": {"ok": 1}}, {"job_type": "noop", "payload": payload}])
    assert "job #2" in str(info.value)
    assert count(db) == 0


@pytest.mark.parametrize("kwargs, match", [
    ({"job_type": "a\x00b"}, "job_type.*NUL"),
    ({"job_type": ""}, "job_type"),
    ({"job_type": "noop", "queue": "q\x00"}, "queue.*NUL"),
    ({"job_type": "noop", "unique_key": "k\x00"}, "unique_key.*NUL"),
    ({"job_type": "noop", "queue": 5}, "queue"),
    ({"job_type": "noop", "priority": "high"}, "priority"),
    ({"job_type": "noop", "priority": 2**31}, "priority"),
    ({"job_type": "noop", "max_attempts": 0}, "max_attempts"),
    ({"job_type": "noop", "max_attempts": 2**40}, "max_attempts"),
])
def test_bad_arguments_are_refused_and_insert_nothing(db, kwargs, match):
    job_type = kwargs.pop("job_type")
    with pytest.raises(ValueError, match=match):
        enqueue(db, job_type, {}, **kwargs)
    with pytest.raises(ValueError, match=match):
        enqueue_many(db, [{"job_type": "noop"}, {"job_type": job_type, **kwargs}])
    assert count(db) == 0


def test_text_that_only_looks_like_an_escaped_nul_is_fine(db):
    tricky = {"backslash_u0000": "\\u0000", "double": "\\\\u0000", "key\\u0000": 1}
    job_id = enqueue(db, "noop", tricky)
    assert job_row(db, job_id)["payload"] == tricky
    with pytest.raises(ValueError, match="NUL"):
        enqueue(db, "noop", {"s": "\\\x00"})  # a backslash, then a real NUL


def test_queue_and_priority_come_from_handler_then_config(db):
    row = job_row(db, enqueue(db, MAILER, {"to": "a@example.com"}))
    assert (row["queue"], row["priority"]) == ("emails", 5)
    row = job_row(db, enqueue(db, MAILER, queue="urgent", priority=9))
    assert (row["queue"], row["priority"]) == ("urgent", 9)
    row = job_row(db, enqueue(db, "unregistered_type"))
    assert (row["queue"], row["priority"]) == ("default", 0)

    config = config_from_dict({"jobs": {MAILER: {"queue": "bulk_mail", "priority": 1}}}, env={})
    row = job_row(db, enqueue(db, MAILER, config=config))
    assert (row["queue"], row["priority"]) == ("bulk_mail", 1)
    row = job_row(db, enqueue(db, MAILER, priority=7, config=config))  # explicit arguments win over both
    assert (row["queue"], row["priority"]) == ("bulk_mail", 7)
    only_priority = config_from_dict({"jobs": {MAILER: {"priority": 2}}}, env={})
    row = job_row(db, enqueue(db, MAILER, config=only_priority))
    assert (row["queue"], row["priority"]) == ("emails", 2)

    ids = enqueue_many(db, [{"job_type": MAILER}, {"job_type": MAILER, "queue": "x"}, {"job_type": "noop"}],
                       config=config)
    assert [(job_row(db, i)["queue"], job_row(db, i)["priority"]) for i in ids] == [
        ("bulk_mail", 1), ("x", 1), ("default", 0)]
    ids = enqueue_many(db, [{"job_type": MAILER}])
    assert (job_row(db, ids[0])["queue"], job_row(db, ids[0])["priority"]) == ("emails", 5)


# --- enqueue_many through COPY: batches with COPY_MIN_ROWS or more jobs --------------------------
BIG = COPY_MIN_ROWS + 30


@pytest.fixture
def copies(monkeypatch) -> list[str]:
    """The COPY statements run in this test: which path a batch took."""
    seen: list[str] = []
    original = psycopg.Cursor.copy

    def copy(self, statement, *args, **kwargs):
        seen.append(str(statement))
        return original(self, statement, *args, **kwargs)

    monkeypatch.setattr(psycopg.Cursor, "copy", copy)
    return seen


def plain_jobs(n: int, start: int = 0) -> list[dict]:
    return [{"job_type": "noop", "payload": {"i": i}} for i in range(start, start + n)]


def test_copy_path_returns_ids_ascending_in_input_order(db, copies):
    n = 3 * COPY_MIN_ROWS + 7
    ids = enqueue_many(db, [{"job_type": ("noop", "effect")[i % 2], "payload": {"i": i}} for i in range(n)])
    assert len(copies) == 1 and copies[0].startswith('COPY "jobs" (id, ')
    assert "run_at" not in copies[0]  # all due at once: the column's default, now()
    assert len(ids) == n and len(set(ids)) == n and ids == sorted(ids)
    assert all(type(i) is JobId and i.created for i in ids)
    assert db.execute("SELECT count(*) FROM jobs WHERE id = ANY(%s)", (ids,)).fetchone()[0] == n  # back to SQL
    index_of = dict(db.execute("SELECT id, (payload->>'i')::int FROM jobs").fetchall())
    assert [index_of[i] for i in ids] == list(range(n))
    assert db.execute("SELECT count(*) FROM jobs WHERE job_type <> (ARRAY['noop','effect'])[1 + (payload->>'i')::int % 2]"
                      ).fetchone()[0] == 0

    # Below the threshold: the one INSERT statement, no COPY.
    small = enqueue_many(db, plain_jobs(COPY_MIN_ROWS - 1))
    assert len(copies) == 1
    assert small == sorted(small) and min(small) > max(ids)

    # Any iterable, as before.
    more = enqueue_many(db, (job for job in plain_jobs(BIG)))
    assert len(copies) == 2 and len(more) == BIG and min(more) > max(small)

    # In pipeline mode, where COPY is not available: the INSERT, whatever the size.
    with db.pipeline():
        piped = enqueue_many(db, plain_jobs(BIG))
    assert len(copies) == 2 and len(piped) == BIG and piped == sorted(piped) and min(piped) > max(more)


def test_copy_path_with_unique_keys_mixed_in(db, copies):
    existing = enqueue(db, "noop", {"tag": "existing"}, unique_key="k-old")
    finished = enqueue(db, "noop", {"tag": "finished"}, unique_key="k-done")
    db.execute("UPDATE jobs SET status = 'succeeded', finished_at = now() WHERE id = %s", (finished,))
    keyed = {3: "k1", 10: "k-old", 20: "k1", 30: "k2", 40: "k-old", 50: "k-done", 60: "k-done", BIG - 1: "k3"}
    batch = [{"job_type": "noop", "payload": {"i": i}, **({"unique_key": keyed[i]} if i in keyed else {})}
             for i in range(BIG)]
    ids = enqueue_many(db, batch)
    assert len(copies) == 1
    repeats = {10, 20, 40, 60}
    assert [j.created for j in ids] == [i not in repeats for i in range(BIG)]
    assert ids[10] == ids[40] == existing
    assert ids[20] == ids[3]
    assert ids[60] == ids[50] != finished
    new = [j for j in ids if j.created]
    assert new == sorted(new) and len(set(new)) == len(new)  # plain and keyed rows alike, in input order
    index_of = dict(db.execute("SELECT id, (payload->>'i')::int FROM jobs WHERE payload ? 'i'").fetchall())
    assert [index_of[j] for j in new] == [i for i in range(BIG) if i not in repeats]
    assert count(db) == 2 + len(new)
    live = db.execute("""SELECT unique_key, count(*) FROM jobs WHERE unique_key IS NOT NULL
                         AND status IN ('queued', 'retry', 'running') GROUP BY unique_key""").fetchall()
    assert sorted(live) == [("k-done", 1), ("k-old", 1), ("k1", 1), ("k2", 1), ("k3", 1)]

    # The same batch again creates only the plain jobs; every keyed one finds its job.
    again = enqueue_many(db, batch)
    assert [j.created for j in again] == [i not in keyed for i in range(BIG)]
    assert [again[i] for i in sorted(keyed)] == [ids[i] for i in sorted(keyed)]
    assert min(j for j in again if j.created) > max(ids)

    # A big batch of keyed jobs only.
    only_keyed = enqueue_many(db, [{"job_type": "noop", "unique_key": f"u{i % 40}"} for i in range(BIG + 40)])
    assert [j.created for j in only_keyed] == [i < 40 for i in range(BIG + 40)]
    assert [only_keyed[i] for i in range(40, BIG + 40)] == [only_keyed[i % 40] for i in range(40, BIG + 40)]


def _deep(levels: int):
    value: object = "bottom"
    for i in range(levels):
        value = {"level": i, "down": [value]}
    return value


ODD_PAYLOADS = [
    {"emoji": "\U0001f984\U0001f4a5", "cjk": "\u6f22\u5b57\u304b\u306a", "rtl": "\u05e9\u05dc\u05d5\u05dd \u0645\u0631\u062d\u0628\u0627",
     "combining": "e\u0301", "bom": "\ufeff", "separators": "\u2028\u2029\x85", "nbsp": "\xa0"},
    {"tab": "a\tb", "newline": "a\nb", "cr": "a\rb", "backslash": "back\\slash", "copy_null": "\\N",
     "end_of_copy": "\\.", "trailing": "x\\", "quotes": "\"'", "controls": "\x01\x1f\x7f", "escaped_u": "\\u0000"},
    {"nested": {"a": [1, {"b": [None, True, False, {"c": "deep"}]}], "e": {}, "l": []},
     "big": 2**62, "neg": -1.5e-300, "f": 0.1},
    {"key\twith\ttabs\\": "v", "": "empty key", "\\N": None},
    _deep(60),
    [], [1, "two", None], "just a string", "", 0, False, 3.25, None,
]
ODD_NAMES = [("noop", None), ("odd\ttype\\with\nbreaks\r", "q\\N\tx"), ("\u00e9t\u00e9 \U0001f4e6", "\\.")]


def test_copy_path_stores_payloads_and_names_exactly(dsn, db, copies):
    items = [{"job_type": job_type, "payload": payload, **({"queue": queue} if queue else {})}
             for job_type, queue in ODD_NAMES for payload in ODD_PAYLOADS]
    batch = (items * (BIG // len(items) + 1))[:max(BIG, len(items))]
    ids = enqueue_many(db, batch)
    assert len(copies) == 1
    with psycopg.connect(dsn) as conn:  # the single-job path, for comparison
        singles = [enqueue(conn, **item) for item in items]
        conn.commit()
    got = {row[0]: row[1:] for row in db.execute("SELECT id, job_type, queue, payload, payload::text FROM jobs")}
    for job_id, item in zip(ids, batch):
        job_type, queue, payload, _ = got[job_id]
        expected = {} if item["payload"] is None else item["payload"]
        assert (job_type, queue, payload) == (item["job_type"], item.get("queue", "default"), expected)
    for job_id, single in zip(ids, singles):  # jsonb's own text: the very same value
        assert got[job_id][3] == got[single][3]


def _rows_for_comparison(conn: psycopg.Connection, ids: list[int], items: list[dict]) -> list[tuple]:
    from psycopg.rows import dict_row

    with conn.cursor(row_factory=dict_row) as cur:
        rows = {r["id"]: r for r in cur.execute("SELECT * FROM jobs WHERE id = ANY(%s)", (ids,))}
    out = []
    for job_id, item in zip(ids, items):
        r = rows[job_id]
        # A delay is relative to the enqueueing transaction's now(), which created_at is.
        when = r["run_at"] if "run_at" in item else r["run_at"] - r["created_at"]
        out.append((r["job_type"], r["payload"], r["queue"], r["priority"], r["max_attempts"], r["unique_key"],
                    r["status"], r["attempts"], when, r["created_at"] == r["updated_at"], r["locked_by"],
                    r["locked_at"], r["last_error"], r["finished_at"]))
    return out


def test_copy_path_rows_equal_single_enqueue_rows(dsn, db, copies):
    variants = [
        {}, {"delay": 30}, {"delay": 2.5}, {"delay": "5m"}, {"delay": "1h30m"}, {"delay": timedelta(days=2)},
        {"delay": 0.0000015}, {"delay": 0.0000025}, {"delay": 1e-7}, {"delay": 123.4567895},
        {"delay": timedelta(microseconds=1)}, {"delay": 0}, {"delay": "250ms"}, {"delay": 86400 * 365 * 99.5},
        {"run_at": datetime(2031, 5, 6, 7, 8, 9, 123456, tzinfo=timezone(timedelta(hours=2)))},
        {"run_at": datetime(2031, 5, 6, 7, 8, 9)},
        {"run_at": "2031-01-02T03:04:05+00:00"},
        {"run_at": datetime.now(timezone.utc) - timedelta(days=1)},
        {"run_at": datetime(2030, 1, 1, tzinfo=timezone(timedelta(hours=-3, minutes=-30)))},
        {"run_at": datetime(1999, 12, 31, 23, 59, 59, 999999, tzinfo=timezone.utc)},
        {"priority": -7}, {"priority": 2**31 - 1}, {"priority": -(2**31)}, {"queue": "other"},
        {"max_attempts": 1}, {"max_attempts": 2**31 - 1},
        {"queue": "q", "priority": 3, "max_attempts": 2, "delay": "10s"},
    ]
    items = [{"job_type": "noop", "payload": {"v": n}, **kw} for n, kw in enumerate(variants)]
    items += [{"job_type": MAILER, "payload": {"v": "mailer"}}, {"job_type": MAILER, "priority": 1},
              {"job_type": MAILER, "queue": "urgent", "delay": 5}]
    batch = items * (BIG // len(items) + 1)
    with psycopg.connect(dsn) as conn:
        singles = [enqueue(conn, **item) for item in items]
        conn.commit()
    with psycopg.connect(dsn) as conn:
        ids = enqueue_many(conn, batch)
        conn.commit()
    assert len(copies) == 1 and "run_at" in copies[0]
    expected = _rows_for_comparison(db, singles, items)
    assert _rows_for_comparison(db, ids, batch) == expected * (len(batch) // len(items))
    # One transaction, one now(): created_at and the run_at of jobs due at once are all the same.
    assert db.execute("""SELECT count(DISTINCT created_at), count(*) FILTER (WHERE payload = '{"v": 0}' AND run_at <> created_at)
                         FROM jobs WHERE id = ANY(%s)""", (ids,)).fetchone() == (1, 0)


def test_payload_text_is_what_json_dumps_gives_and_failures_leave_no_trace(db):
    import json

    from supervisor.enqueue import _encode_json

    for payload in ODD_PAYLOADS + [{"x": 1.0, "y": -0.0, "z": 10**30, "t": (1, 2)}, "\u00e9", 5, None]:
        assert _encode_json(payload) == json.dumps(payload, separators=(",", ":"), allow_nan=False, ensure_ascii=False)
    # A payload that fails half-way, then succeeds once fixed: nothing of the failure stays
    # behind in the (reused) encoder, such as its marks for circular references.
    inner = {"bad": NotJson()}
    payload = {"inner": inner, "list": [inner]}
    for _ in range(2):
        with pytest.raises(TypeError, match="job #2: .*not JSON-serialisable"):
            enqueue_many(db, [{"job_type": "noop"}, {"job_type": "noop", "payload": payload}])
    inner["bad"] = "fixed"
    assert job_row(db, enqueue_many(db, [{"job_type": "noop", "payload": payload}] * 2)[1])["payload"] == payload
    circular: dict = {}
    circular["self"] = circular
    with pytest.raises(TypeError, match="job #1: .*Circular reference"):
        enqueue_many(db, [{"job_type": "noop", "payload": circular}] * BIG)


def test_copy_path_fires_the_notify_trigger(dsn, db, copies):
    channel = channel_name("jobs")
    with psycopg.connect(dsn, autocommit=True) as listener:
        listener.execute(f'LISTEN "{channel}"')
        with psycopg.connect(dsn) as producer:
            ids = enqueue_many(producer, [{"job_type": "noop", "payload": {"i": i}, "delay": 3600 - i}
                                          for i in range(BIG)])
            assert list(listener.notifies(timeout=0.3)) == []  # nothing before the commit
            producer.commit()
        assert len(copies) == 1
        heard = list(listener.notifies(timeout=5.0, stop_after=1))
        assert [n.channel for n in heard] == [channel]  # once per statement, not per row
        earliest = db.execute("SELECT extract(epoch FROM min(run_at))::text FROM jobs WHERE id = ANY(%s)",
                              (ids,)).fetchone()[0]
        assert heard[0].payload == earliest
        assert list(listener.notifies(timeout=0.3)) == []

        # An autocommit connection: the batch commits, and wakes listeners, by itself.
        more = enqueue_many(db, plain_jobs(BIG))
        heard = list(listener.notifies(timeout=5.0, stop_after=1))
        due = db.execute("SELECT extract(epoch FROM min(run_at))::text FROM jobs WHERE id = ANY(%s)",
                         (more,)).fetchone()[0]
        assert [n.payload for n in heard] == [due]

        # Rolled back: no notification.
        with psycopg.connect(dsn) as producer:
            enqueue_many(producer, plain_jobs(BIG))
            producer.rollback()
        assert list(listener.notifies(timeout=0.3)) == []


def test_copy_path_joins_the_callers_transaction(dsn, db, copies):
    with psycopg.connect(dsn) as conn:  # not autocommit
        ids = enqueue_many(conn, plain_jobs(BIG))
        assert conn.execute("SELECT count(*) FROM jobs").fetchone()[0] == BIG
        assert count(db) == 0  # not visible to others before commit
        conn.rollback()
        assert count(conn) == 0

        with pytest.raises(RuntimeError):
            with conn.transaction():
                enqueue_many(conn, plain_jobs(BIG))
                raise RuntimeError("the caller's work failed")
        conn.commit()
        assert count(db) == 0

        # The caller's own statements before and after commit with it, at the same now().
        first = enqueue(conn, "noop", {"before": True})
        ids = enqueue_many(conn, plain_jobs(BIG))
        last = enqueue(conn, "noop", {"after": True})
        assert count(db) == 0
        conn.commit()
    assert count(db) == BIG + 2
    assert db.execute("SELECT count(DISTINCT created_at) FROM jobs").fetchone()[0] == 1
    assert first < min(ids) and max(ids) < last

    # Autocommit: one transaction of its own (one now()), committed on return.
    with psycopg.connect(dsn, autocommit=True) as conn:
        ids = enqueue_many(conn, plain_jobs(BIG))
        assert conn.info.transaction_status == TransactionStatus.IDLE
    assert db.execute("SELECT count(*), count(DISTINCT created_at) FROM jobs WHERE id = ANY(%s)",
                      (ids,)).fetchone() == (BIG, 1)

    # Autocommit, inside the caller's transaction block: part of it.
    with psycopg.connect(dsn, autocommit=True) as conn:
        with pytest.raises(RuntimeError):
            with conn.transaction():
                enqueue_many(conn, plain_jobs(BIG))
                raise RuntimeError("the caller's work failed")
    assert count(db) == 2 * BIG + 2
    assert len(copies) == 5


BAD_ITEMS = [
    ({"job_type": "noop", "payload": {"x": float("nan")}}, TypeError, "not JSON-serialisable"),
    ({"job_type": "noop", "payload": {"s": "\ud800"}}, ValueError, "lone surrogate"),
    ({"job_type": "no\x00op"}, ValueError, "job_type.*NUL"),
    ({"job_type": "noop", "colour": "blue"}, ValueError, "unknown field"),
    ({"job_type": "noop", "priority": "high"}, ValueError, "priority"),
    ({"job_type": "noop", "delay": "5 parsecs"}, ValueError, "delay"),
    ({"job_type": "noop", "unique_key": "k\x00"}, ValueError, "unique_key.*NUL"),
    ("noop", ValueError, "expected a mapping"),
]


@pytest.mark.parametrize("bad, error, match", BAD_ITEMS)
@pytest.mark.parametrize("where", ["first", "middle", "last"])
def test_copy_path_invalid_item_inserts_nothing(dsn, db, bad, error, match, where):
    batch = plain_jobs(BIG)
    position = {"first": 0, "middle": BIG // 2, "last": BIG}[where]
    batch.insert(position, bad)
    batch[1 if position != 1 else 2] = dict(batch[1], unique_key="some-key")
    with pytest.raises(error, match=f"^job #{position + 1}: .*{match}"):
        enqueue_many(db, batch)
    with psycopg.connect(dsn) as conn:  # no transaction of the caller's open: none is left open
        with pytest.raises(error, match=f"^job #{position + 1}: "):
            enqueue_many(conn, batch)
        assert conn.info.transaction_status == TransactionStatus.IDLE
        mine = enqueue(conn, "noop", {"mine": True})  # the caller's transaction stays usable, its work kept
        with pytest.raises(error, match=f"^job #{position + 1}: "):
            enqueue_many(conn, batch)
        assert conn.info.transaction_status == TransactionStatus.INTRANS
        assert conn.execute("SELECT array_agg(id) FROM jobs").fetchone()[0] == [mine]
        conn.commit()
    assert db.execute("SELECT array_agg(id) FROM jobs").fetchone()[0] == [mine]


def test_copy_path_database_error_leaves_the_callers_transaction_as_it_was(dsn, db):
    # A rule of the deployment's own that Python cannot check: the database refuses mid-COPY.
    db.execute("ALTER TABLE jobs ADD CONSTRAINT test_no_boom CHECK (NOT payload ? 'boom')")
    boom = plain_jobs(BIG) + [{"job_type": "noop", "payload": {"boom": 1}}] + plain_jobs(5)
    keyed_boom = plain_jobs(BIG) + [{"job_type": "noop", "payload": {"boom": 2}, "unique_key": "b"}]
    for batch in (boom, keyed_boom):
        with psycopg.connect(dsn) as conn:
            mine = enqueue(conn, "noop", {"mine": True})
            with pytest.raises(psycopg.errors.CheckViolation):
                enqueue_many(conn, batch)
            assert conn.info.transaction_status == TransactionStatus.INTRANS  # not aborted
            assert conn.execute("SELECT array_agg(id) FROM jobs").fetchone()[0] == [mine]
            conn.rollback()
        with psycopg.connect(dsn, autocommit=True) as conn:
            with pytest.raises(psycopg.errors.CheckViolation):
                enqueue_many(conn, batch)
            assert conn.info.transaction_status == TransactionStatus.IDLE
        with psycopg.connect(dsn) as conn:  # no transaction open before: none left open, none broken
            with pytest.raises(psycopg.errors.CheckViolation):
                enqueue_many(conn, batch)
            assert conn.info.transaction_status == TransactionStatus.IDLE
            assert conn.execute("SELECT count(*) FROM jobs").fetchone()[0] == 0
            conn.rollback()
    assert count(db) == 0
    assert len(enqueue_many(db, plain_jobs(BIG))) == BIG  # and the table takes batches again


def test_cli_enqueue_from_stdin_takes_the_copy_path(make_config, db):
    import json

    lines = [json.dumps({"job_type": "noop", "payload": {"i": i}}) for i in range(BIG)]
    lines[5] = json.dumps({"job_type": "effect", "payload": {"i": 5}, "in": "1h", "queue": "q2", "priority": 3})
    lines[7] = json.dumps({"job_type": "noop", "payload": {"i": 7}, "unique_key": "u"})
    lines[9] = json.dumps({"job_type": "noop", "payload": {"i": 9}, "unique_key": "u"})
    result = run_cli("-c", str(make_config()), "enqueue", "-", input="\n".join(lines) + "\n")
    assert result.returncode == 0, result.stderr
    out = result.stdout.splitlines()
    ids = [int(line.split()[0]) for line in out]
    assert len(ids) == BIG and ids[7] == ids[9] and "existing" in out[9]
    assert f"enqueued {BIG - 1} job(s)" in result.stderr
    index_of = dict(db.execute("SELECT id, (payload->>'i')::int FROM jobs").fetchall())
    assert [index_of[i] for i in ids] == [9 - 2 if i == 9 else i for i in range(BIG)]
    row = job_row(db, ids[5])
    assert (row["job_type"], row["queue"], row["priority"], row["run_at"] - row["created_at"]) == (
        "effect", "q2", 3, timedelta(hours=1))
    assert db.execute("SELECT count(*), count(DISTINCT created_at) FROM jobs").fetchone() == (BIG - 1, 1)


def test_a_role_under_row_level_security_enqueues_many_by_insert(dsn, db):
    """COPY FROM is refused to a role that row-level security applies to: enqueue_many falls
    back to its INSERT, in each of the caller's transaction modes, and the policy still holds."""
    role = f"jstenant_{uuid.uuid4().hex[:8]}"
    db.execute(f'CREATE ROLE "{role}" LOGIN')
    try:
        db.execute(f'GRANT SELECT, INSERT, UPDATE ON jobs TO "{role}"')
        db.execute(f'GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO "{role}"')
        db.execute("ALTER TABLE jobs ENABLE ROW LEVEL SECURITY")
        db.execute(f"""CREATE POLICY tenant ON jobs TO "{role}" USING (true) WITH CHECK (queue <> 'forbidden')""")
        tenant_dsn = psycopg.conninfo.make_conninfo(dsn, user=role)
        with psycopg.connect(tenant_dsn, autocommit=True) as conn:
            first = enqueue_many(conn, plain_jobs(BIG))
            again = enqueue_many(conn, plain_jobs(BIG))  # remembered: straight to INSERT
        assert first == sorted(first) and again == sorted(again) and first[-1] < again[0]
        with psycopg.connect(tenant_dsn) as conn:
            mine = enqueue(conn, "noop", {"mine": True})
            inside = enqueue_many(conn, plain_jobs(BIG))
            assert conn.info.transaction_status == TransactionStatus.INTRANS
            conn.commit()
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                enqueue_many(conn, [{"job_type": "noop", "queue": "forbidden"} for _ in range(BIG)])
            conn.rollback()
        assert count(db) == 2 * BIG + 1 + len(inside)
        assert db.execute("SELECT count(*) FROM jobs WHERE queue = 'forbidden'").fetchone()[0] == 0
        assert job_row(db, mine)["payload"] == {"mine": True}
    finally:
        db.execute("ALTER TABLE jobs DISABLE ROW LEVEL SECURITY")
        db.execute(f'DROP OWNED BY "{role}"')
        db.execute(f'DROP ROLE "{role}"')
