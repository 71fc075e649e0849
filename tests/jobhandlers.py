"""Handlers the tests run inside real child processes.

Effects go to the ``effects`` table (created on demand) so tests can count how often a
handler really ran, and whether writes through ``job.conn`` committed.
"""

from __future__ import annotations

import ctypes
import os
import signal
import time

import psycopg

from supervisor import job

EFFECTS_DDL = """CREATE TABLE IF NOT EXISTS effects (
    id bigserial PRIMARY KEY, job_id bigint NOT NULL, attempt int NOT NULL, kind text NOT NULL,
    pid int NOT NULL, at timestamptz NOT NULL DEFAULT clock_timestamp())"""


def record(job, kind: str = "ran", via_job_conn: bool = False) -> None:
    """Write an effect row; through job.conn it commits only with the job's success."""
    if via_job_conn:
        job.conn.execute("INSERT INTO effects (job_id, attempt, kind, pid) VALUES (%s, %s, %s, %s)",
                         (job.id, job.attempts, kind, os.getpid()))
        return
    dsn = job.conn.info.dsn
    with psycopg.connect(dsn, autocommit=True, password=job.conn.info.password) as conn:
        conn.execute("INSERT INTO effects (job_id, attempt, kind, pid) VALUES (%s, %s, %s, %s)",
                     (job.id, job.attempts, kind, os.getpid()))


@job("noop")
def noop(job):
    pass


@job("effect")
def effect(job):
    """Records one row through job.conn (exactly-once with success)."""
    record(job, "ran", via_job_conn=True)
    if job.payload.get("sleep"):
        time.sleep(job.payload["sleep"])
    if job.payload.get("fail"):
        raise RuntimeError("asked to fail after writing")


@job("effect_outside")
def effect_outside(job):
    """Records one row on its own connection (at-least-once), then behaves as asked."""
    record(job, "ran")
    behave(job)


@job("fail", max_attempts=3, backoff_delay="0s")
def fail(job):
    raise ValueError(f"boom {job.payload.get('tag', '')}".strip())


@job("fail_then_ok", max_attempts=5, backoff_delay="1s")
def fail_then_ok(job):
    if job.attempts <= job.payload.get("fail_times", 1):
        raise RuntimeError(f"failing attempt {job.attempts}")
    record(job, "ok", via_job_conn=True)


@job("sleep")
def sleep(job):
    record(job, "started")
    time.sleep(float(job.payload.get("seconds", 1)))
    record(job, "finished", via_job_conn=True)
    if job.payload.get("fail"):
        raise RuntimeError("failing after the sleep, as asked")


@job("timeout", timeout="1s", max_attempts=2, backoff_delay="0s")
def timeout(job):
    record(job, "started")
    time.sleep(float(job.payload.get("seconds", 30)))


@job("stubborn", timeout="1s", max_attempts=1)
def stubborn(job):
    """Ignores SIGTERM: the supervisor must escalate to SIGKILL."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    record(job, "started")
    time.sleep(60)


@job("crash", max_attempts=2, backoff_delay="0s")
def crash(job):
    record(job, "started")
    behave(job)


@job("crash_once", max_attempts=3, backoff_delay="0s")
def crash_once(job):
    record(job, "started")
    if job.attempts == 1:
        behave(job)
    record(job, "ok", via_job_conn=True)


@job("priority_probe")
def priority_probe(job):
    record(job, f"p{job.payload.get('p', 0)}", via_job_conn=True)


@job("exit_handler", max_attempts=1)
def exit_handler(job):
    raise SystemExit(3)


@job("hold_first_attempt", backoff_delay="0s")
def hold_first_attempt(job):
    """On its first attempt, waits until the file ``payload["release"]`` exists (at most
    ``payload["seconds"]``, default 60); later attempts (after a recovery) go straight on.
    Records "started" on its own connection and "ok" through job.conn."""
    record(job, "started")
    if job.attempts == 1:
        release = job.payload.get("release") or ""
        deadline = time.monotonic() + float(job.payload.get("seconds", 60))
        while time.monotonic() < deadline and not (release and os.path.exists(release)):
            time.sleep(0.02)
    record(job, "ok", via_job_conn=True)


def behave(job) -> None:
    how = job.payload.get("how")
    if how == "exit":
        os._exit(7)
    if how == "sigkill":
        os.kill(os.getpid(), signal.SIGKILL)
    if how == "segfault":
        ctypes.string_at(0)
    if how == "sleep":
        time.sleep(float(job.payload.get("seconds", 30)))
    if how == "raise":
        raise RuntimeError("raised as asked")


@job("slow", max_attempts=2, backoff_delay="0s")
def slow(job):
    """Outlives a short lock_timeout: recorded on its own connection, then sleeps."""
    record(job, "started")
    time.sleep(float(job.payload.get("seconds", 30)))
    record(job, "finished", via_job_conn=True)


@job("chatty")
def chatty(job):
    """Prints many lines: each one wakes the supervisor's loop while the job runs."""
    for i in range(int(job.payload.get("lines", 100))):
        print(f"chatty line {i}", flush=True)
        time.sleep(float(job.payload.get("every", 0.01)))


# --- pool and gates (tests/test_pool_and_gates.py) --------------------------------------------
def hold_and_record(job):
    """Records "start" and "end" (clock_timestamp(), on its own connection) around a hold of
    ``payload["hold"]`` seconds: tests compute how many jobs ran at once from these rows."""
    record(job, "start")
    time.sleep(float(job.payload.get("hold", 0.5)))
    record(job, "end")


for _name in ("peak", "peak_other"):  # one body, two job types (a limited one and a free one)
    job(_name)(hold_and_record)

_hoard: list[bytes] = []  # survives the job: the child's RSS stays high afterwards


@job("hog")
def hog(job):
    """Allocates ``payload["mb"]`` MiB, touches every page and keeps it after returning."""
    _hoard.append(b"\x01" * (int(job.payload.get("mb", 100)) * 2**20))
    record(job, "ran")


@job("tally", backoff_delay="0s")
def tally(job):
    """Appends "id attempt" to the file in the payload and leaves job.conn alone, so its
    success is recorded by the supervisor: a quick job whose every run leaves a trace."""
    fd = os.open(job.payload["file"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, f"{job.id} {job.attempts}\n".encode())
    finally:
        os.close(fd)
