"""Shared machinery of the benchmark harness: databases, processes, clients, statistics.

The harness itself runs with the project's Python (it needs psycopg and psutil, both
dependencies of jobsupervisor). Each system's workers and clients run as subprocesses with
that system's own interpreter: ours with the harness' Python, the peers in their own
virtualenvs under bench/.venvs/.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator
from urllib.parse import urlsplit, urlunsplit

import psutil
import psycopg

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
APPS = BENCH / "apps"
VENVS = BENCH / ".venvs"


class BenchError(RuntimeError):
    """A workload could not be measured (a worker died, a drain stalled...)."""


# ---------------------------------------------------------------------------------------------
# Databases
# ---------------------------------------------------------------------------------------------
def with_dbname(dsn: str, dbname: str) -> str:
    if "://" in dsn:
        parts = urlsplit(dsn)
        return urlunsplit((parts.scheme, parts.netloc, "/" + dbname, parts.query, parts.fragment))
    return f"{dsn} dbname={dbname}"


class Server:
    """The one Postgres server every system runs against; a fresh database per workload."""

    _counter = itertools.count(1)

    def __init__(self, dsn: str, keep: bool = False):
        self.dsn = dsn
        self.keep = keep
        self.admin_dsn = dsn

    def version(self) -> str:
        with psycopg.connect(self.admin_dsn, autocommit=True) as conn:
            return conn.execute("SHOW server_version").fetchone()[0]

    def setting(self, name: str) -> str:
        with psycopg.connect(self.admin_dsn, autocommit=True) as conn:
            return conn.execute(f"SHOW {name}").fetchone()[0]

    @contextmanager
    def fresh_db(self, tag: str) -> Iterator[str]:
        name = f"bench_{tag}_{os.getpid()}_{next(self._counter)}"[:63]
        with psycopg.connect(self.admin_dsn, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            conn.execute(f'CREATE DATABASE "{name}"')
        try:
            yield with_dbname(self.dsn, name)
        finally:
            if not self.keep:
                with psycopg.connect(self.admin_dsn, autocommit=True) as conn:
                    conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def query(dsn: str, sql: str, params: Any = None) -> list[tuple]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        return conn.execute(sql, params).fetchall()


def execute(dsn: str, sql: str, params: Any = None) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(sql, params)


def query_one(dsn: str, sql: str, params: Any = None) -> tuple:
    return query(dsn, sql, params)[0]


# ---------------------------------------------------------------------------------------------
# Processes
# ---------------------------------------------------------------------------------------------
def app_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(APPS), str(REPO)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    env.pop("JOBSUPERVISOR_CONFIG", None)
    env.pop("NOTIFY_SOCKET", None)
    env["PYTHONUNBUFFERED"] = "1"
    env.update({k: str(v) for k, v in extra.items()})
    return env


class Worker:
    """One worker process of some system, started in its own session so that it and
    everything it spawned can be stopped together."""

    def __init__(self, cmd: list[str], env: dict[str, str], log_path: Path, cwd: Path | None = None):
        self.cmd = cmd
        self.log_path = log_path
        self.log = open(log_path, "ab")
        self.proc = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL, stdout=self.log,
                                     stderr=subprocess.STDOUT, start_new_session=True, cwd=cwd or APPS)
        self.ps = psutil.Process(self.proc.pid)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def children(self) -> list[psutil.Process]:
        try:
            return self.ps.children(recursive=True)
        except psutil.NoSuchProcess:
            return []

    def cpu(self) -> float:
        """CPU seconds (user + system) of the worker process itself."""
        t = self.ps.cpu_times()
        return t.user + t.system

    def children_cpu(self) -> float:
        return sum(map(cpu_of, self.children()))

    def tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> None:
        if self.alive():
            try:
                os.kill(self.proc.pid, sig)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        # Whatever is left of its session (children of a killed worker) goes too.
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            pass
        self.log.close()


def rss_mb(proc: psutil.Process) -> float:
    try:
        return proc.memory_info().rss / 2**20
    except psutil.NoSuchProcess:
        return float("nan")


def wait_for(predicate: Callable[[], Any], timeout: float, interval: float = 0.1, what: str = "",
             check: Callable[[], None] | None = None) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if check is not None:
            check()
        if time.monotonic() > deadline:
            raise BenchError(f"timed out after {timeout:.0f}s waiting for {what or predicate}")
        time.sleep(interval)


def wait_settled(procs: list[psutil.Process], window: float = 0.3, threshold: float = 0.02, timeout: float = 15.0) -> None:
    """Wait until none of ``procs`` burns more than ``threshold`` CPU seconds per ``window``:
    imports and start-up done."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        before = [cpu_of(p) for p in procs]
        time.sleep(window)
        after = [cpu_of(p) for p in procs]
        if all(a - b < threshold for a, b in zip(after, before)):
            return


def cpu_of(p: psutil.Process) -> float:
    try:
        t = p.cpu_times()
        return t.user + t.system
    except psutil.NoSuchProcess:
        return 0.0


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_client(python: str, script: str, mode: str, args: dict[str, Any], env: dict[str, str],
               timeout: float = 600.0) -> dict[str, Any]:
    """Run one of bench/apps/*_client.py in the system's interpreter; its last stdout line is JSON."""
    proc = subprocess.run([python, str(APPS / script), mode, json.dumps(args)], env=env, cwd=APPS,
                          capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise BenchError(f"{script} {mode} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------------------------------
# Virtualenvs of the peers
# ---------------------------------------------------------------------------------------------
def ensure_venv(name: str, requirements: list[str], log: Callable[[str], None]) -> Path:
    """bench/.venvs/<name> with exactly ``requirements`` from PyPI; created on first use and
    reused while the pinned list is unchanged."""
    venv = VENVS / name
    marker = venv / "bench-requirements.txt"
    wanted = "\n".join(requirements) + "\n"
    python = venv / "bin" / "python"
    if python.exists() and marker.exists() and marker.read_text() == wanted:
        return python
    log(f"installing {', '.join(requirements)} into {venv.relative_to(REPO)} (first use)")
    VENVS.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", *requirements],
                   check=True)
    marker.write_text(wanted)
    return python


# ---------------------------------------------------------------------------------------------
# Numbers
# ---------------------------------------------------------------------------------------------
def summary(values: list[float]) -> tuple[float, float, float] | None:
    vals = [v for v in values if v is not None and v == v]
    if not vals:
        return None
    return min(vals), statistics.median(vals), max(vals)


def percentile(values: list[float], p: float) -> float:
    vals = sorted(values)
    if not vals:
        return float("nan")
    k = (len(vals) - 1) * p / 100
    lo, hi = int(k), min(int(k) + 1, len(vals) - 1)
    return vals[lo] + (vals[hi] - vals[lo]) * (k - lo)


def calibrate_burn(target: float = 0.005) -> int:
    """Iterations of ``benchlib.burn`` that take ``target`` seconds of one core here (the
    median of a few timings, so a busy moment does not skew it)."""
    sys.path.insert(0, str(APPS))
    import benchlib

    n = 10_000
    while True:
        t = time.perf_counter()
        benchlib.burn(n)
        if time.perf_counter() - t > 0.02:
            break
        n *= 2
    samples = []
    for _ in range(7):
        t = time.perf_counter()
        benchlib.burn(n)
        samples.append(time.perf_counter() - t)
    per_iter = statistics.median(samples) / n
    return max(1, int(target / per_iter))


def tmpdir(prefix: str) -> Path:
    return Path(tempfile.mkdtemp(prefix=prefix))
