"""Shared fixtures: a real Postgres (``$JOBSUPERVISOR_TEST_DSN`` or the embedded server),
one fresh database per test cloned from a migrated template, config files, and the real
``jobsupervisor`` command started as a subprocess."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Iterator
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
TESTS = Path(__file__).resolve().parent
sys.path.insert(0, str(TESTS))
JOBSUPERVISOR = [sys.executable, "-m", "supervisor.cli"]


def wait_for(predicate: Callable[[], Any], timeout: float = 15.0, interval: float = 0.02, message: str = "") -> Any:
    """Poll ``predicate`` until it returns something truthy; fail the test at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {message or predicate}")
        time.sleep(interval)


def with_dbname(dsn: str, dbname: str) -> str:
    if "://" in dsn:
        parts = urlsplit(dsn)
        return urlunsplit((parts.scheme, parts.netloc, "/" + dbname, parts.query, parts.fragment))
    return f"{dsn} dbname={dbname}"


# --- tests that must run alone ------------------------------------------------------------------
# The suite runs on several pytest-xdist workers at once, each test in its own database. A test
# marked ``exclusive`` touches what every test shares (it restarts the Postgres server): it
# waits until no other test runs, and no test starts while it runs. Two flock(2) files shared
# by the workers make a readers-writer lock; the turnstile, held by a waiting exclusive test,
# keeps new tests from starving it. The lock is per user, not per run: two runs at once on one
# machine share one server too.
def _lock_dir() -> Path:
    return Path(tempfile.gettempdir()) / f"jobsupervisor-tests-{os.getuid()}"


@contextlib.contextmanager
def sharing_the_server(exclusive: bool = False) -> Iterator[None]:
    """Hold the server shared (any test's normal work) or alone (restarting it). Reentrant:
    waiting at the turnstile while holding the lock would deadlock with a waiting writer."""
    import fcntl

    global _holding
    if _holding:
        yield
        return
    directory = _lock_dir()
    directory.mkdir(exist_ok=True)
    with open(directory / "turnstile", "a") as turnstile, open(directory / "server", "a") as lock:
        fcntl.flock(turnstile, fcntl.LOCK_EX)
        try:
            fcntl.flock(lock, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        finally:
            fcntl.flock(turnstile, fcntl.LOCK_UN)
        _holding = True
        try:
            yield
        finally:
            _holding = False
            fcntl.flock(lock, fcntl.LOCK_UN)


_holding = False


@pytest.fixture(autouse=True)
def _share_the_server(request: pytest.FixtureRequest) -> Iterator[None]:
    with sharing_the_server(exclusive=request.node.get_closest_marker("exclusive") is not None):
        yield


@pytest.fixture(scope="session")
def server_dsn() -> Iterator[str]:
    """A DSN with rights to create databases."""
    dsn = os.environ.get("JOBSUPERVISOR_TEST_DSN")
    if dsn:
        yield dsn
        return
    from supervisor.embedded import embedded_dsn, release

    data_dir = tempfile.mkdtemp(prefix="jobsupervisor-test-pg-")
    yield embedded_dsn(data_dir)
    release(data_dir)


@pytest.fixture(scope="session")
def template_db(server_dsn: str) -> Iterator[str]:
    """A database migrated once (tables ``jobs`` and ``other_jobs``), cloned by every test."""
    from supervisor.migrate import migrate

    name = f"jstpl_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    with sharing_the_server():
        with psycopg.connect(server_dsn, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        with psycopg.connect(with_dbname(server_dsn, name), autocommit=True) as conn:
            migrate(conn, "jobs")
            from jobhandlers import EFFECTS_DDL

            conn.execute(EFFECTS_DDL)
    yield name
    with sharing_the_server(), psycopg.connect(server_dsn, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def dsn(server_dsn: str, template_db: str) -> Iterator[str]:
    """A fresh, migrated database for this test only."""
    name = f"jstest_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server_dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template_db}"')
    yield with_dbname(server_dsn, name)
    with psycopg.connect(server_dsn, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def empty_dsn(server_dsn: str) -> Iterator[str]:
    """A fresh database with no schema at all (for migration tests)."""
    name = f"jsempty_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server_dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield with_dbname(server_dsn, name)
    with psycopg.connect(server_dsn, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def db(dsn: str) -> Iterator[psycopg.Connection]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        yield conn


def deep_merge(base: dict, extra: dict) -> dict:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


@pytest.fixture
def make_config(tmp_path: Path, dsn: str) -> Callable[..., Path]:
    """Write a config for this test's database; keyword arguments are merged in."""
    counter = iter(range(1000))

    def make(extra: dict | None = None, name: str | None = None) -> Path:
        data = {
            "database": {"dsn": dsn},
            "imports": ["jobhandlers"],
            "children": {"min": 1, "max": 2, "kill_grace": "1s"},
            "poll_interval": "1s",
            "heartbeat_interval": "1s",
            "shutdown_timeout": "10s",
        }
        data = deep_merge(data, extra or {})
        path = tmp_path / (name or f"config{next(counter)}.yaml")
        path.write_text(yaml.safe_dump(data))
        return path

    return make


def cli_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(TESTS), str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.pop("JOBSUPERVISOR_CONFIG", None)
    env.pop("NOTIFY_SOCKET", None)
    env.update(extra)
    return env


def run_cli(*args: str, input: str | None = None, env: dict[str, str] | None = None,
            timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([*JOBSUPERVISOR, *args], input=input, capture_output=True, text=True,
                          env=env or cli_env(), timeout=timeout)


class SupervisorProcess:
    """The real ``jobsupervisor`` command in its own session, its JSON log in a file."""

    def __init__(self, config: Path, log_path: Path, env: dict[str, str] | None = None, args: tuple[str, ...] = ()):
        self.config = config
        self.log_path = log_path
        self.log_file = open(log_path, "wb")
        self.proc = subprocess.Popen([*JOBSUPERVISOR, "-c", str(config), *args], stdout=self.log_file,
                                     stderr=subprocess.STDOUT, env=env or cli_env(), start_new_session=True)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def events(self) -> list[dict[str, Any]]:
        out = []
        for line in self.log_path.read_bytes().splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                out.append({"event": "<not json>", "raw": line.decode("utf-8", "replace")})
        return out

    def find(self, event: str, **match: Any) -> list[dict[str, Any]]:
        return [e for e in self.events() if e.get("event") == event
                and all(e.get(k) == v for k, v in match.items())]

    def wait_event(self, event: str, timeout: float = 20.0, count: int = 1, **match: Any) -> dict[str, Any]:
        found = wait_for(lambda: len(self.find(event, **match)) >= count and self.find(event, **match),
                         timeout, message=f"log event {event} {match or ''} x{count}\n{self.tail()}")
        return found[count - 1]

    def wait_ready(self, timeout: float = 30.0) -> None:
        self.wait_event("supervisor_started", timeout)
        # Serving once a child has said ready: its first claim shows in the runners table soon,
        # but the simplest sign is that no child is still starting.
        wait_for(lambda: self.find("child_started"), timeout)

    def signal(self, sig: int) -> None:
        os.kill(self.proc.pid, sig)

    def wait_exit(self, timeout: float = 30.0) -> int:
        return self.proc.wait(timeout)

    def children(self) -> list[int]:
        import psutil

        try:
            return [c.pid for c in psutil.Process(self.proc.pid).children()]
        except psutil.NoSuchProcess:
            return []

    def started_children(self) -> list[int]:
        """Every child pid this supervisor ever logged as started (also after it is gone)."""
        return [e["child_pid"] for e in self.find("child_started") if e.get("pid") == self.proc.pid]

    def tail(self, n: int = 30) -> str:
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(lines[-n:])

    def kill_all(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            pass
        self.log_file.close()


@pytest.fixture
def start_supervisor(tmp_path: Path) -> Iterator[Callable[..., SupervisorProcess]]:
    started: list[SupervisorProcess] = []

    def start(config: Path, *, env: dict[str, str] | None = None, ready: bool = True,
              args: tuple[str, ...] = ()) -> SupervisorProcess:
        proc = SupervisorProcess(config, tmp_path / f"supervisor{len(started)}.log", env=env, args=args)
        started.append(proc)
        if ready:
            proc.wait_event("supervisor_started")
        return proc

    yield start
    for proc in started:
        # Children are in their own process groups: kill them by pid too, including any that
        # outlived a supervisor the test killed (psutil no longer lists them as its children).
        kids = set(proc.children())
        proc.kill_all()
        kids.update(pid for pid in proc.started_children() if is_worker(pid))
        for pid in kids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def is_worker(pid: int) -> bool:
    """Is ``pid`` a live (not zombie) jobsupervisor child process?"""
    import psutil

    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return False
        cmdline = " ".join(proc.cmdline())
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return False
    # Before setproctitle runs the command line names the module; after, the title.
    return "supervisor.children.worker" in cmdline or cmdline.startswith("jobsupervisor: child")


def job_row(conn: psycopg.Connection, job_id: int) -> dict[str, Any]:
    from psycopg.rows import dict_row

    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute("SELECT * FROM jobs WHERE id = %s", (job_id,)).fetchone()


def statuses(conn: psycopg.Connection) -> dict[str, int]:
    return dict(conn.execute("SELECT status, count(*) FROM jobs GROUP BY status").fetchall())
