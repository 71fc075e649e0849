"""Handlers that misbehave on request, for the fault-injection suite (imported as
``faults.handlers``; ``tests/`` is on the children's PYTHONPATH).

Every handler leaves evidence in the ``effects`` table (created by ``tests/jobhandlers.py``):

* ``started`` — first thing, on the child's own side connection (autocommit): one row per
  attempt that began. Effects like this are *at least once*.
* ``ran`` — through ``job.conn``: it commits only together with the job's ``succeeded`` row,
  so a succeeded job has exactly one, written by its last attempt, and a failed, killed,
  timed-out or crashed attempt leaves none. Effects like this are *exactly once*.

The invariant checker (``faults/invariants.py``) holds the table to those two promises.
"""

from __future__ import annotations

import ctypes
import hashlib
import json
import os
import random
import resource
import signal
import sys
import time

import psycopg

from supervisor import job

MiB = 1024 * 1024
HOSTILE_TYPE = "x'); DROP TABLE jobs; --\"<b>é"
HOSTILE_QUEUE = "q' OR '1'='1\"; --"

_side: psycopg.Connection | None = None
_hog: list[bytearray] = []  # memory a "hog" job leaves behind in its child


# --- evidence ----------------------------------------------------------------------------------
def _side_connection(job) -> psycopg.Connection:
    global _side
    if _side is None or _side.closed or _side.broken:
        _side = psycopg.connect(job.conn.info.dsn, password=job.conn.info.password, autocommit=True,
                                application_name="jobsupervisor-test-side", connect_timeout=5)
    return _side


def record_outside(job, kind: str = "started") -> None:
    """One effect row on the child's side connection (reconnecting once if it was cut)."""
    global _side
    for attempt in (1, 2):
        try:
            _side_connection(job).execute(
                "INSERT INTO effects (job_id, attempt, kind, pid) VALUES (%s, %s, %s, %s)",
                (job.id, job.attempts, kind, os.getpid()))
            return
        except psycopg.OperationalError:
            if _side is not None:
                try:
                    _side.close()
                except psycopg.Error:
                    pass
            _side = None
            if attempt == 2:
                raise


def record_inside(job, kind: str = "ran") -> None:
    """One effect row through job.conn: committed only with the job's success."""
    job.conn.execute("INSERT INTO effects (job_id, attempt, kind, pid) VALUES (%s, %s, %s, %s)",
                     (job.id, job.attempts, kind, os.getpid()))


# --- ways to misbehave ---------------------------------------------------------------------------
def _vm_size() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    return 0


def exhaust_memory(headroom: int = 256 * MiB) -> None:
    """Allocate until the address space runs out (RLIMIT_AS: the rest of the machine is safe),
    so Python raises MemoryError in the middle of the handler; the limit is restored after."""
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    resource.setrlimit(resource.RLIMIT_AS, (_vm_size() + headroom, hard))
    hog: list[bytearray] | None = []
    try:
        while True:
            hog.append(bytearray(8 * MiB))
    finally:
        hog = None
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def misbehave(job, how: str) -> None:
    p = job.payload if isinstance(job.payload, dict) else {}
    if how == "raise":
        raise RuntimeError(f"raised as asked (attempt {job.attempts})")
    if how == "exit":
        os._exit(7)
    if how == "sigkill":
        os.kill(os.getpid(), signal.SIGKILL)
    if how == "segfault":
        ctypes.string_at(0)
    if how == "abort":
        os.abort()
    if how == "stop":  # hung: a stopped process cannot act on SIGTERM
        os.kill(os.getpid(), signal.SIGSTOP)
        time.sleep(3600)
    if how == "hang":  # hung and deaf to SIGTERM
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        time.sleep(3600)
    if how == "sleep":
        time.sleep(float(p.get("seconds", 30)))
    if how == "memory":
        exhaust_memory()
    if how == "hog":  # resident memory kept after the job returns (a leak)
        for _ in range(int(p.get("mb", 256)) // 8):
            chunk = bytearray(8 * MiB)
            chunk[::4096] = b"x" * len(chunk[::4096])  # touch every page: resident, not just reserved
            _hog.append(chunk)


# --- handlers ----------------------------------------------------------------------------------
@job("chaos", max_attempts=3, backoff_delay="0s")
def chaos(job):
    """started (outside), ran (inside), then misbehaves as ``how`` on attempts <= ``times``;
    ``sleep`` seconds of work after that."""
    p = job.payload
    record_outside(job, "started")
    record_inside(job, "ran")
    if job.attempts <= int(p.get("times", 0)):
        misbehave(job, p.get("how", "raise"))
    if p.get("sleep"):
        time.sleep(float(p["sleep"]))


@job("chaos_timed", max_attempts=3, timeout="1s", backoff_delay="0s")
def chaos_timed(job):
    """chaos with a 1 s timeout."""
    chaos(job)


@job("hold", max_attempts=3, backoff_delay="0s")
def hold(job):
    """started, ran, then waits (first attempt only) until the file ``release`` exists."""
    p = job.payload
    record_outside(job, "started")
    record_inside(job, "ran")
    if job.attempts == 1 and p.get("release"):
        deadline = time.monotonic() + float(p.get("seconds", 60))
        while time.monotonic() < deadline and not os.path.exists(p["release"]):
            time.sleep(0.02)


@job("hold_timed", max_attempts=3, timeout="2s", backoff_delay="0s")
def hold_timed(job):
    """hold with a 2 s timeout."""
    hold(job)


SOAK_MAX_ATTEMPTS = 6


@job("soak", max_attempts=SOAK_MAX_ATTEMPTS, timeout="1s", backoff_delay="0s")
def soak(job):
    """A no-op-ish job whose misbehaviour is drawn from a seeded RNG (seed, id, attempt), so a
    run can be replayed: ``f`` fails (raises), ``k`` SIGKILLs its child, ``x`` exits the
    child, ``t`` outlives the 1 s timeout, ``w`` works (sleeps) 50 ms; ``doomed`` always
    raises; ``track`` records ``started`` on the side connection too."""
    p = job.payload
    if p.get("track"):
        record_outside(job, "started")
    record_inside(job, "ran")
    if p.get("doomed"):
        raise RuntimeError(f"doomed job, attempt {job.attempts}")
    r = random.Random(f"{p['seed']}:{job.id}:{job.attempts}").random()
    for key, how in (("f", "raise"), ("k", "sigkill"), ("x", "exit"), ("t", "sleep"), ("w", "work")):
        chance = float(p.get(key, 0))
        if r < chance:
            if how == "work":
                time.sleep(0.05)
                return
            misbehave(job, how)
        r -= chance


@job("echo_check", max_attempts=1, backoff_delay="0s")
def echo_check(job):
    """Proves the payload arrived intact: a blob against its SHA-256, or a value against an
    ASCII-escaped copy of itself. Records ``ran`` (inside) and what it saw."""
    p = job.payload
    if "blob" in p:
        got = hashlib.sha256(p["blob"].encode("utf-8")).hexdigest()
        if got != p["sha256"]:
            raise AssertionError(f"blob corrupted: {got} != {p['sha256']}")
    if "ascii" in p and json.loads(p["ascii"]) != p["value"]:
        raise AssertionError("value corrupted in transit")
    if "depth" in p:
        node, depth = p["nested"], 0
        while isinstance(node, list) and node:
            node, depth = node[0], depth + 1
        if depth != p["depth"]:
            raise AssertionError(f"nesting {depth} != {p['depth']}")
    record_inside(job, "ran")


@job(HOSTILE_TYPE, queue=HOSTILE_QUEUE, max_attempts=1)
def hostile_named(job):
    record_inside(job, "ran")


class _Unprintable(Exception):
    def __str__(self) -> str:
        raise ValueError("and my __str__ raises too")


@job("huge_error", max_attempts=2, backoff_delay="0s")
def huge_error(job):
    """Raises an exception whose message is megabytes long, with a NUL, a lone surrogate and
    invalid-UTF-8-looking bytes in it (``unprintable``: one whose __str__ raises)."""
    p = job.payload
    record_inside(job, "ran")
    if p.get("unprintable"):
        raise _Unprintable()
    size = int(p.get("size", 4 * MiB))
    odd = " nul:\x00 surrogate:\udcff bell:\x07 "
    body = "HEAD-MARKER" + odd + "é" * (size // 2) + odd + "z" * (size // 2) + odd + "TAIL-MARKER"
    raise ValueError(body)


@job("loud", max_attempts=1)
def loud(job):
    """Prints megabytes to stdout and stderr: many lines, one giant line without a newline,
    invalid UTF-8, carriage returns, and lines that look like JSON but are not log records."""
    p = job.payload
    mb = int(p.get("mb", 4))
    for i in range(mb * 1024 // 2):
        print(f"stdout line {i} " + "o" * 1000)
        sys.stderr.write(f"stderr line {i} " + "e" * 1000 + "\n")
    sys.stdout.flush()
    os.write(1, b"\xff\xfe invalid utf-8 \xc3\x28 and a\rcarriage return\n")
    os.write(1, b'{"x": NaN}\n')
    os.write(1, b'{"event": "job_succeeded", "job_id": -1}\n')
    os.write(1, b'["a JSON array"]\n')
    os.write(2, b"G" * (3 * MiB))  # a giant line, not even ended by a newline
    os.write(2, b"\n")
    sys.stdout.flush()
    record_inside(job, "ran")


@job("quick", max_attempts=1)
def quick(job):
    record_inside(job, "ran")


@job("leak", max_attempts=1)
def leak(job):
    """Prints and raises text that quotes a secret (as careless libraries do): the DSN with its
    password from ``$FAULTS_SECRET_DSN``."""
    secret = os.environ.get("FAULTS_SECRET_DSN", "")
    print(f"connecting to {secret}", flush=True)
    sys.stderr.write(f"warning: retrying {secret}\n")
    raise ConnectionError(f"could not connect to {secret}")
