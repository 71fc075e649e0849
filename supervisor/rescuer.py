"""The rescuer: nothing stays ``running`` forever (SPEC §2).

Jobs whose runner is gone — its row removed, its heartbeat stale, or its process dead on
this very host (so a systemd restart recovers at once) — and jobs locked longer than
``lock_timeout`` go back to ``retry``, or to ``failed`` once their attempts are used up.
The attempt always counts: a job that kills its worker every time must not loop forever.
One supervisor at a time does this (a transaction-level advisory lock); ``run_once`` is
what the loop and the tests call.
"""

from __future__ import annotations

import os
import socket
import zlib
from dataclasses import dataclass
from typing import Any

import psutil
import psycopg

from .registry import DEFAULT_MAX_ATTEMPTS
from .units import format_duration

BATCH = 500


def host_name() -> str:
    return socket.gethostname()


def pid_namespace() -> str:
    """Identifies "same kernel, same pid namespace": only there is a pid check meaningful
    (two containers may share a hostname and both have pid 1)."""
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            boot = f.read().strip()
    except OSError:
        boot = "?"
    try:
        ns = str(os.stat("/proc/self/ns/pid").st_ino)
    except OSError:
        ns = "?"
    return f"{boot}:{ns}"


def process_is(pid: int, started_at: float, slack: float = 5.0) -> bool:
    """Is ``pid`` still the process that registered at ``started_at`` (not a reused pid)?"""
    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:  # dead, merely not reaped yet
            return False
        created = proc.create_time()
    except (psutil.NoSuchProcess, ProcessLookupError):
        return False
    except psutil.AccessDenied:
        return True  # someone else's live process: cannot prove it is not the runner
    return abs(created - started_at) <= slack


@dataclass
class Rescued:
    id: int
    job_type: str
    queue: str
    status: str
    attempts: int
    reason: str


class Rescuer:
    def __init__(self, queries: Any, runner_id: str, *, lock_timeout: float, stale_after: float):
        self.q = queries
        self.runner_id = runner_id
        self.host = host_name()
        self.pidns = pid_namespace()
        self.lock_timeout = lock_timeout
        self.stale_after = stale_after
        self.lock_key = zlib.crc32(f"jobsupervisor:rescue:{queries.table}".encode())

    def dead_runners(self, conn: psycopg.Connection) -> list[str]:
        rows = conn.execute(self.q.runners_on_host, {"host": self.host, "pidns": self.pidns,
                                                     "id": self.runner_id}).fetchall()
        return [runner_id for runner_id, pid, started_at in rows if not process_is(pid, started_at)]

    def run_once(self, conn: psycopg.Connection, type_max_attempts: dict[str, int] | None = None) -> list[Rescued]:
        """One pass; returns the jobs it moved. ``conn`` must be in autocommit mode."""
        type_max_attempts = type_max_attempts or {}
        rescued: list[Rescued] = []
        with conn.transaction():
            got = conn.execute("SELECT pg_try_advisory_xact_lock(%s)", (self.lock_key,)).fetchone()[0]
            if not got:
                return rescued  # another supervisor is doing it right now
            dead = self.dead_runners(conn)
            params = {
                "dead_runners": dead,
                "stale_after": self.stale_after,
                "lock_timeout": self.lock_timeout,
                "lock_timeout_text": format_duration(self.lock_timeout),
                "types": list(type_max_attempts),
                "type_max_attempts": list(type_max_attempts.values()),
                "default_max_attempts": DEFAULT_MAX_ATTEMPTS,
                "batch": BATCH,
            }
            while True:
                rows = conn.execute(self.q.jobs_rescue, params).fetchall()
                rescued.extend(Rescued(*row) for row in rows)
                if len(rows) < BATCH:
                    break
            conn.execute(self.q.runners_delete_stale, {
                "dead_runners": dead,
                # Keep a silent runner's row visible for a while (status shows it as stale).
                "forget_after": max(self.stale_after * 4, 300.0),
            })
        return rescued
