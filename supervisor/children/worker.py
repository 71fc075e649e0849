"""The child process: receives jobs from the supervisor, runs their handlers, records outcomes.

Started by the pool as ``python -m supervisor.children.worker FD`` (a fresh interpreter, so
it never inherits a connection, a thread or a lock from the supervisor). It imports the
handler modules, opens its own connection, says ``ready``, then runs one job at a time.
When the handler wrote through ``job.conn``, the outcome is written by the child itself,
fenced by the job's lock, in the same transaction as those writes. A success with nothing to
commit is reported to the supervisor, which records many of them in one statement.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import ctypes
import datetime as dt
import json
import os
import pickle
import select
import signal
import socket
import sys
import threading
import time
import traceback
from typing import Any

import psycopg
from psycopg.pq import TransactionStatus

from .. import logs
from ..backoff import retry_delay
from ..db import connect, describe_error
from ..queries import queries_for
from ..registry import Job, get_handler, handlers, import_handlers, options_for
from ..units import format_duration, mask_secrets
from . import protocol

MAX_ERROR = 64 * 1024  # last_error is cut to this, keeping the head and the tail of a traceback


def _die_with_parent(parent_pid: int) -> None:
    """Ask the kernel to SIGKILL us when the supervisor dies (no orphans, even after kill -9)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        os._exit(1)


def _title(text: str) -> None:
    try:
        import setproctitle

        setproctitle.setproctitle(f"jobsupervisor: {text}")
    except ImportError:
        pass


def truncate_error(text: str, limit: int = MAX_ERROR) -> str:
    if len(text) <= limit:
        return text
    head = limit * 3 // 4
    tail = limit - head - 100
    return text[:head] + f"\n… [{len(text) - head - tail} characters cut] …\n" + text[-tail:]


def clean_error(text: str) -> str:
    """An error as last_error and the log can hold it: Postgres text takes no NUL and no lone
    surrogate (an exception message may carry either: binary data, undecodable file names), and
    a password a handler or a library quoted is masked like in every log line."""
    text = mask_secrets(text.replace("\x00", "\\x00"))
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _rss_bytes() -> int:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return 0


class Worker:
    def __init__(self, sock: socket.socket, parent_pid: int):
        self.sock = sock
        self.inbuf = protocol.LineBuffer()
        # Messages read but not acted on yet: the supervisor may queue several jobs ahead.
        # After boot, a reader thread fills it (read_forever); ``ready`` guards it.
        self.inbox: collections.deque[dict[str, Any]] = collections.deque()
        self.ready = threading.Condition()
        self.send_lock = threading.Lock()
        self.closed = False
        self.parent_pid = parent_pid
        self.pid = os.getpid()
        self.conn: psycopg.Connection | None = None
        self.config: Any = None
        self.dsn = ""
        self.queries: Any = None
        # Over children.max_memory: the supervisor will recycle us after this job; what it
        # queued here meanwhile goes back at once rather than run in an oversized process.
        self.retiring = False
        self.options: dict[str, Any] = {}  # options_for() per job type: the config is fixed for our life
        self.log = logs.get_logger()

    # --- messages -------------------------------------------------------------------
    def send(self, message: dict[str, Any]) -> None:
        data = protocol.encode(message)
        with self.send_lock:  # the reader thread answers 'release' while a job runs
            self.sock.sendall(data)

    def read(self) -> dict[str, Any] | None:
        """The next message (before the reader thread runs: the hello)."""
        while not self.inbox:
            if not self.receive():
                return None
        return self.inbox.popleft()

    def receive(self) -> bool:
        """Wait for data and add its messages to the inbox; False once the supervisor closed
        its end."""
        data = self.sock.recv(65536)
        if not data:
            return False
        for line in self.inbuf.feed(data):
            try:
                self.inbox.append(protocol.decode(line))
            except (RecursionError, ValueError) as error:
                self.inbox.append(self.undecodable_run(line, error))
        return True

    def read_forever(self) -> None:
        """The reader thread: the supervisor may queue jobs ahead of the one running, and ask
        for them back at any time (the current job turned out long, a stop, a recycle): a
        'release' is answered at once, even while a handler runs, so the jobs can start
        elsewhere instead of waiting behind it. Only jobs not started yet are released."""
        try:
            while self.receive_shared():
                pass
        except BaseException:  # noqa: BLE001 - a reader that cannot go on ends the child's loop
            pass
        with self.ready:
            self.closed = True
            self.ready.notify()

    def receive_shared(self) -> bool:
        try:
            data = self.sock.recv(65536)
        except OSError:
            return False
        if not data:
            return False
        messages = []
        for line in self.inbuf.feed(data):
            try:
                messages.append(protocol.decode(line))
            except (RecursionError, ValueError) as error:
                messages.append(self.undecodable_run(line, error))
        if not messages:
            return True
        with self.ready:  # once for all of them: the supervisor sends queued jobs many at a time
            for message in messages:
                op = message.get("op")
                if op in (protocol.RELEASE, protocol.STOP):
                    self.release_queued()
                    if op == protocol.STOP:
                        self.inbox.append(message)
                elif op == protocol.RUN and self.retiring:
                    self.send({"op": protocol.RELEASED, "ids": [message["job"]["id"]]})
                else:
                    self.inbox.append(message)
            self.ready.notify()
        return True

    def release_queued(self) -> None:
        """Drop the queued jobs (not started) and tell the supervisor which; called holding
        ``self.ready``. Always answers, with no ids when nothing was queued."""
        released = [m["job"]["id"] for m in self.inbox if m.get("op") == protocol.RUN]
        self.inbox = collections.deque(m for m in self.inbox if m.get("op") != protocol.RUN)
        self.send({"op": protocol.RELEASED, "ids": released})

    def next_message(self) -> dict[str, Any] | None:
        """The next message for the main thread: None once the supervisor is gone."""
        with self.ready:
            while not self.inbox and not self.closed:
                self.ready.wait()
            if self.closed:  # it closed the socket: it is gone or wants us gone
                return None
            return self.inbox.popleft()

    def retire(self) -> None:
        """Over children.max_memory: the supervisor recycles us after this job, so what it
        queued here goes back now rather than run in an oversized process."""
        with self.ready:
            self.retiring = True
            if any(m.get("op") == protocol.RUN for m in self.inbox):
                self.release_queued()

    @staticmethod
    def undecodable_run(line: bytes, error: BaseException) -> dict[str, Any]:
        """A ``run`` message whose payload Python's json cannot load, though Postgres stored it
        (jsonb takes nesting far deeper than Python's recursion limit, and integers longer than
        its 4300 digits): the job must fail with that reason, not kill the child every attempt.
        The payload is the last key of the message (see protocol.encode_run), and ``,"payload":``
        cannot occur inside a JSON string, so the job's spec is everything before it."""
        head, found, _ = line.partition(b',"payload":')
        if not found:
            raise error
        spec = protocol.decode(head + b"}}")["job"]
        reason = "nested too deeply" if isinstance(error, RecursionError) else str(error)
        return {"op": protocol.RUN, "job": spec,
                "payload_error": f"the payload cannot be loaded in Python: {reason}"}

    # --- start ------------------------------------------------------------------------
    def boot(self) -> bool:
        hello = self.read()
        if hello is None or hello.get("op") != protocol.HELLO:
            return False
        self.config = pickle.loads(base64.b64decode(hello["config"]))
        self.dsn = hello["dsn"]
        logs.configure("json", self.config.logging.level)
        self.log = logs.get_logger(runner=hello.get("runner"))
        self.queries = queries_for(self.config.database.table)
        try:
            import_handlers(self.config.imports, self.config.base_dir)
        except BaseException as error:  # noqa: BLE001 - any import failure is a boot error
            detail = "".join(traceback.format_exception_only(type(error), error)).strip()
            where = traceback.extract_tb(error.__traceback__)
            origin = f" ({where[-1].filename}:{where[-1].lineno})" if where else ""
            self.send({"op": protocol.BOOT_ERROR, "error": f"importing handlers failed: {detail}{origin}"})
            return False
        if not handlers():
            modules = ", ".join(self.config.imports) or "none"
            self.send({"op": protocol.BOOT_ERROR,
                       "error": f"no job handlers registered (imports: {modules}); add modules with @job handlers to 'imports'"})
            return False
        self.ensure_connection()
        types = {name: options_for(name, self.config).to_dict() for name in handlers()}
        self.send({"op": protocol.READY, "pid": self.pid, "types": types})
        return True

    def ensure_connection(self) -> psycopg.Connection:
        """Connect (again), waiting out a database that is away; gives up only if the parent is gone."""
        if self.conn is not None and not self.conn.closed and not self.conn.broken:
            return self.conn
        delay = 0.1
        lost = self.conn is not None
        while True:
            try:
                self.conn = connect(self.dsn, autocommit=False)
                if lost:
                    self.log.info("db_reconnected", role="child")
                return self.conn
            except psycopg.Error as error:
                if os.getppid() != self.parent_pid:
                    os._exit(1)
                self.log.warning("db_unavailable", role="child", error=describe_error(error), retry_in=delay)
                time.sleep(delay)
                delay = min(delay * 2, 5.0)

    def connection_for_job(self) -> psycopg.Connection:
        """The connection a job will run on, replaced first if it was cut while we were idle
        (server restart, failover, idle_session_timeout, pg_terminate_backend). psycopg learns
        of a cut only on the next statement, which would be the handler's: its attempt would
        fail and count for a reason that has nothing to do with the job."""
        conn = self.ensure_connection()
        if self._cut_while_idle(conn):
            self._rollback()
            try:
                conn.close()
            except psycopg.Error:
                pass
            conn = self.ensure_connection()
        return conn

    @staticmethod
    def _cut_while_idle(conn: psycopg.Connection) -> bool:
        # An idle connection has nothing to say: its socket turns readable when the server
        # closes it (or, rarely, sends a notice). Only then is a round trip spent to find out.
        try:
            poller = select.poll()  # not select(): no limit on the fd number
            poller.register(conn.pgconn.socket, select.POLLIN)
            if not poller.poll(0):
                return False
        except (OSError, ValueError, psycopg.Error):
            return True
        try:
            conn.execute("SELECT 1")
            conn.rollback()
            return False
        except psycopg.Error:
            return True

    # --- the loop -----------------------------------------------------------------------
    def serve(self) -> None:
        _title("child idle")
        threading.Thread(target=self.read_forever, name="supervisor-reader", daemon=True).start()
        while True:
            message = self.next_message()
            if message is None:
                return
            op = message.get("op")
            if op == protocol.RUN:
                # Reported at once, whatever is queued behind it: the supervisor learns which
                # job runs now (its deadline, and whom to blame if this process dies).
                result = self.run(message["job"], message.get("payload_error"))
                self.send(result)
                if self.config.children.max_memory and result.get("rss", 0) > self.config.children.max_memory:
                    self.retire()
                if not self.inbox:
                    _title("child idle")
            elif op == protocol.STOP:
                return

    def run(self, spec: dict[str, Any], payload_error: str | None = None) -> dict[str, Any]:
        job_id = spec["id"]
        job_type = spec["job_type"]
        lock = spec["lock"]
        _title(f"child running {job_type}#{job_id}")
        started = time.perf_counter()
        handler = get_handler(job_type)
        opts = self.options.get(job_type)
        if opts is None:
            opts = self.options[job_type] = options_for(job_type, self.config)
        conn = self.connection_for_job()
        job = Job(job_id, job_type, spec.get("payload"), spec["attempts"],
                  spec.get("max_attempts") or opts.max_attempts, spec["queue"], spec.get("priority", 0),
                  dt.datetime.fromtimestamp(spec["run_at"], dt.timezone.utc) if spec.get("run_at") else None,
                  conn, lock)
        error_text: str | None = None
        try:
            if payload_error is not None:
                raise ValueError(payload_error)
            if handler is None:
                raise LookupError(f"no handler for job type {job_type!r} in this child")
            if handler.is_async:
                asyncio.run(handler.func(job))
            else:
                handler.func(job)
        except BaseException as error:  # noqa: BLE001 - a handler's sys.exit is a failure too
            error_text = truncate_error(clean_error("".join(traceback.format_exception(error)).rstrip()))
            short = clean_error("".join(traceback.format_exception_only(type(error), error)).strip()[:4000])
        duration_ms = round((time.perf_counter() - started) * 1000, 3)
        result: dict[str, Any] = {"op": protocol.DONE, "id": job_id, "duration_ms": duration_ms}
        if error_text is None:
            result.update(self.record_success(job_id, lock, spec["attempts"], opts))
        else:
            delay = self.backoff(spec["attempts"], opts)
            result.update(self.record_failure(job_id, lock, error_text, delay, opts.max_attempts))
            result["error"] = short[:2000]
        if self.config.children.max_memory:
            result["rss"] = _rss_bytes()
        # CLOCK_MONOTONIC is the machine's, not the process': the supervisor's deadline for the
        # job queued behind this one counts from here, not from when it reads this message.
        result["at"] = time.monotonic()
        return result

    @staticmethod
    def execute_alone(conn: psycopg.Connection, query: str, params: dict[str, Any]) -> psycopg.Cursor:
        """Run one statement as its own transaction in one round trip (not BEGIN, statement,
        COMMIT: three). Only when no transaction is open, i.e. the handler wrote nothing
        through job.conn that would have to commit together with the outcome."""
        conn.autocommit = True
        try:
            return conn.execute(query, params)
        finally:
            if not conn.closed:
                conn.autocommit = False

    @staticmethod
    def backoff(attempts: int, opts: Any) -> float:
        return retry_delay(attempts, kind=opts.backoff, delay=opts.backoff_delay,
                           maximum=opts.backoff_max, jitter=opts.backoff_jitter)

    def record_success(self, job_id: int, lock: str, attempts: int, opts: Any) -> dict[str, Any]:
        conn = self.conn
        params = {"id": job_id, "lock": lock}
        try:
            if conn.info.transaction_status == TransactionStatus.IDLE:
                # Nothing of the handler's must commit with the outcome: the supervisor records
                # it, batched with other children's (one statement for many jobs, no round trip
                # here). Fenced by our lock all the same.
                return {"outcome": "ok"}
            cur = conn.execute(self.queries.job_set_succeeded, params)
            if cur.rowcount == 1:
                conn.commit()
                return {"outcome": "succeeded"}
            conn.rollback()
            return {"outcome": "lost"}
        except psycopg.OperationalError as error:
            return self.after_connection_loss(job_id, lock, error)
        except psycopg.Error as error:
            # The handler left the transaction unusable (it caught an SQL error and went on):
            # its writes cannot be committed, so this attempt failed.
            text = f"handler returned, but its transaction could not commit: {describe_error(error)}"
            return (self.record_failure(job_id, lock, text, self.backoff(attempts, opts), opts.max_attempts)
                    | {"error": text[:2000]})

    def record_failure(self, job_id: int, lock: str, error_text: str, delay: float, max_attempts: int) -> dict[str, Any]:
        params = {"id": job_id, "lock": lock, "error": error_text, "delay": delay,
                  "default_max_attempts": max_attempts}
        self._rollback()
        try:
            row = self._write_failure(params)
        except psycopg.OperationalError:
            # Cut off mid-write: the update is fenced, so writing it again on a new connection is safe.
            self._rollback()
            row = self._write_failure(params)
        if row is None:
            return {"outcome": "lost"}
        return {"outcome": row[0], "run_at": row[1]}

    def _write_failure(self, params: dict[str, Any]) -> Any:
        conn = self.ensure_connection()  # rolled back before: no transaction is open
        return self.execute_alone(conn, self.queries.job_set_failed_or_retry, params).fetchone()

    def after_connection_loss(self, job_id: int, lock: str, error: BaseException) -> dict[str, Any]:
        """The commit of a success was cut off: we cannot know whether it happened. Give the job
        back (fenced: a no-op if the commit did happen) so nothing is lost."""
        self.log.warning("job_completion_interrupted", job_id=job_id, error=describe_error(error))
        self._rollback()
        conn = self.ensure_connection()
        cur = conn.execute(self.queries.job_return, {"id": job_id, "lock": lock})
        conn.commit()
        if cur.rowcount == 1:
            return {"outcome": "returned", "error": "database connection lost while recording success"}
        row = conn.execute(f"SELECT status FROM {queries_for(self.config.database.table).table} WHERE id = %s",
                           (job_id,)).fetchone()
        conn.commit()
        return {"outcome": row[0] if row and row[0] == "succeeded" else "lost"}

    def _rollback(self) -> None:
        if self.conn is None:
            return
        try:
            self.conn.rollback()
        except psycopg.Error:
            try:
                self.conn.close()
            except psycopg.Error:
                pass


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    fd = int(argv[0])
    parent_pid = int(argv[1])
    _die_with_parent(parent_pid)
    # Only the supervisor decides when to drain: the terminal's Ctrl-C is not for us.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    signal.signal(signal.SIGTTIN, signal.SIG_IGN)
    signal.signal(signal.SIGTTOU, signal.SIG_IGN)
    _title("child starting")
    sock = socket.socket(fileno=fd)
    worker = Worker(sock, parent_pid)
    try:
        if not worker.boot():
            return protocol.EXIT_BOOT_ERROR
        worker.serve()
    except (BrokenPipeError, ConnectionResetError):
        return 0  # the supervisor is gone
    return 0


if __name__ == "__main__":
    sys.exit(main())
