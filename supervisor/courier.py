"""The supervisor's second connection: the statement of its hot path, run while the loop goes on.

While a backlog of quick jobs drains, the supervisor's work is one statement after another:
record the successes children reported and claim their next jobs (``jobs_record_and_claim``).
Run on the loop's own connection, every one of them stops the loop for Postgres' share of
the work (a few milliseconds for a few hundred jobs) while the children, fed by the loop, run
dry. The courier runs that statement on its own connection in a thread: the loop sends it,
keeps reading and feeding children, and takes the answer when the courier's pipe wakes its
selector. One statement at a time; the thread touches nothing but its connection, the request
and the answer.

The GIL is no obstacle: the thread spends its time waiting on the socket (psycopg releases the
GIL there), and Postgres does the work on another core.
"""

from __future__ import annotations

import os
import select
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import psycopg

from .db import close_quietly

JOIN_TIMEOUT = 2.0  # a statement still running at exit is abandoned (the thread is a daemon)


@dataclass
class Answer:
    rows: list[tuple] | None  # None when the statement failed
    error: BaseException | None
    context: Any = None  # what the caller attached to the request
    seconds: float = 0.0  # from the request to the answer (wall)


@dataclass
class _Request:
    query: str
    params: dict[str, Any]
    context: Any
    sent: float = field(default=0.0)


class Courier:
    """One statement at a time on a connection of its own, answered through a pipe."""

    def __init__(self, connect: Callable[[], psycopg.Connection]):
        self._connect = connect
        self._conn: psycopg.Connection | None = None
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        self._lock = threading.Lock()
        self._has_request = threading.Condition(self._lock)
        self._request: _Request | None = None
        self._answer: Answer | None = None
        self._closing = False
        self._thread: threading.Thread | None = None
        self.busy = False  # a request is out: its answer has not been taken yet
        self.context: Any = None  # the context of the request that is out

    def fileno(self) -> int:
        """Readable when an answer waits (register it with the loop's selector)."""
        return self._wake_r

    def send(self, query: str, params: dict[str, Any], context: Any = None) -> None:
        if self.busy:
            raise RuntimeError("the courier carries one statement at a time")
        if self._thread is None:
            self._thread = threading.Thread(target=self._serve, name="jobsupervisor-courier", daemon=True)
            self._thread.start()
        self.busy = True
        self.context = context
        with self._lock:
            self._request = _Request(query, params, context, time.monotonic())
            self._has_request.notify()

    def take(self) -> Answer | None:
        """The answer, if it is here (never blocks)."""
        try:
            while os.read(self._wake_r, 64):
                pass
        except BlockingIOError:
            pass
        with self._lock:
            answer, self._answer = self._answer, None
        if answer is not None:
            self.busy = False
            self.context = None
        return answer

    def wait(self, timeout: float) -> Answer | None:
        """Block until the answer of the request that is out arrives (shutdown only)."""
        deadline = time.monotonic() + timeout
        while self.busy:
            answer = self.take()
            if answer is not None:
                return answer
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            select.select([self._wake_r], [], [], left)
        return None

    def close(self) -> None:
        """Stop the thread (after the statement it runs, if any) and close the connection."""
        with self._lock:
            self._closing = True
            self._has_request.notify()
        if self._thread is not None:
            self._thread.join(JOIN_TIMEOUT)
        if self._thread is None or not self._thread.is_alive():
            close_quietly(self._conn)
            self._conn = None
        for fd in (self._wake_r, self._wake_w):
            try:
                os.close(fd)
            except OSError:
                pass

    # --- the thread ---------------------------------------------------------------------------
    def _serve(self) -> None:
        while True:
            with self._lock:
                while self._request is None and not self._closing:
                    self._has_request.wait()
                if self._closing:
                    return
                request, self._request = self._request, None
            answer = self._run(request)
            with self._lock:
                self._answer = answer
            try:
                os.write(self._wake_w, b"!")
            except OSError:
                return  # closed under us: the supervisor is exiting

    def _run(self, request: _Request) -> Answer:
        try:
            if self._conn is None:
                self._conn = self._connect()
            rows = self._conn.execute(request.query, request.params).fetchall()
            return Answer(rows, None, request.context, time.monotonic() - request.sent)
        except psycopg.Error as error:
            # Whatever it was, the next statement starts on a new connection: a statement
            # that failed half-way leaves nothing we could trust on this one.
            close_quietly(self._conn)
            self._conn = None
            return Answer(None, error, request.context, time.monotonic() - request.sent)

