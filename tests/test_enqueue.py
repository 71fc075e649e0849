"""enqueue / enqueue_many against a real Postgres (SPEC §3)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import psycopg
import pytest

from conftest import job_row
from supervisor import JobId, enqueue, enqueue_many, job
from supervisor.config import config_from_dict

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
