"""The courier (supervisor/courier.py): one statement at a time on its own connection in a
thread, its answer announced through a pipe the supervisor's selector watches. Against the
real Postgres: answers arrive without blocking the caller, a broken connection comes back as
an error (not an exception in the loop) and the next statement runs on a new connection."""

from __future__ import annotations

import selectors
import time

import psycopg
import pytest

from conftest import wait_for
from supervisor.courier import Courier
from supervisor.db import connect


def open_for(dsn: str):
    return lambda: connect(dsn, autocommit=True, application_name="jobsupervisor-claims")


def answer_of(courier: Courier, timeout: float = 10.0):
    selector = selectors.DefaultSelector()
    selector.register(courier, selectors.EVENT_READ)
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if selector.select(deadline - time.monotonic()):
                answer = courier.take()
                if answer is not None:
                    return answer
        raise AssertionError("no answer from the courier")
    finally:
        selector.close()


def test_a_statement_runs_while_the_caller_goes_on(dsn):
    courier = Courier(open_for(dsn))
    try:
        started = time.monotonic()
        courier.send("SELECT pg_sleep(0.3), %(x)s::int + 1", {"x": 41}, context="ctx")
        assert time.monotonic() - started < 0.2  # sending did not wait for the statement
        assert courier.busy and courier.context == "ctx"
        assert courier.take() is None  # not there yet: take never blocks
        with pytest.raises(RuntimeError):
            courier.send("SELECT 1", {})  # one at a time
        answer = answer_of(courier)
        assert answer.error is None and answer.rows == [("", 42)] and answer.context == "ctx"
        assert answer.seconds >= 0.3
        assert not courier.busy
        courier.send("SELECT 2", {})
        assert answer_of(courier).rows == [(2,)]
    finally:
        courier.close()


def test_a_broken_connection_is_an_answer_and_the_next_statement_reconnects(dsn, db):
    courier = Courier(open_for(dsn))
    try:
        courier.send("SELECT pg_backend_pid()", {})
        (first_pid,), = answer_of(courier).rows
        courier.send("SELECT pg_sleep(5)", {})
        wait_for(lambda: db.execute("SELECT count(*) FROM pg_stat_activity WHERE pid = %s AND state = 'active'",
                                    (first_pid,)).fetchone()[0], message="the statement running")
        db.execute("SELECT pg_terminate_backend(%s)", (first_pid,))
        answer = answer_of(courier)
        assert answer.rows is None and isinstance(answer.error, psycopg.OperationalError)
        courier.send("SELECT pg_backend_pid()", {})
        (second_pid,), = answer_of(courier).rows
        assert second_pid != first_pid
    finally:
        courier.close()


def test_wait_gives_the_answer_at_shutdown_and_close_ends_the_thread(dsn):
    courier = Courier(open_for(dsn))
    courier.send("SELECT pg_sleep(0.2), 7", {})
    answer = courier.wait(10.0)
    assert answer is not None and answer.rows == [("", 7)]
    courier.close()
    assert not courier._thread.is_alive()
