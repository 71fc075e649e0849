"""Retention: finished jobs older than ``retention.succeeded`` / ``retention.failed`` are
deleted in small batches, by one supervisor at a time, so the table does not grow forever
and no single statement holds locks for long."""

from __future__ import annotations

import time
import zlib
from typing import Any

import psycopg

BATCH = 1000
TIME_BUDGET = 0.5  # seconds of deleting per pass: the loop has jobs to hand out too


class Retention:
    def __init__(self, queries: Any, succeeded: float | None, failed: float | None, *,
                 batch: int = BATCH, time_budget: float = TIME_BUDGET):
        self.q = queries
        self.rules = [(("succeeded",), succeeded), (("failed", "cancelled"), failed)]
        self.lock_key = zlib.crc32(f"jobsupervisor:retention:{queries.table}".encode())
        self.batch = batch
        self.time_budget = time_budget
        self.more = False  # the last pass stopped at its time budget with rows left to delete
        self.enabled = any(age is not None for _, age in self.rules)  # asked on every tick

    def run_once(self, conn: psycopg.Connection) -> dict[str, int]:
        """One pass; returns how many rows it deleted per status group. Autocommit ``conn``.

        Each statement deletes at most ``batch`` rows (its own short transaction); a pass
        stops after ``time_budget`` seconds, but every rule gets at least one batch, so a
        huge backlog of one status does not starve the other. Only the supervisor holding
        the table's advisory lock prunes; the others skip the pass."""
        deleted: dict[str, int] = {}
        self.more = False
        if not self.enabled:
            return deleted
        started = time.monotonic()
        got = conn.execute("SELECT pg_try_advisory_lock(%s)", (self.lock_key,)).fetchone()[0]
        if not got:
            return deleted
        try:
            for statuses, age in self.rules:
                if age is None:
                    continue
                total = 0
                while True:
                    cur = conn.execute(self.q.jobs_delete_finished,
                                       {"older_than": age, "statuses": list(statuses), "batch": self.batch})
                    total += cur.rowcount
                    if cur.rowcount < self.batch:
                        break
                    if time.monotonic() - started >= self.time_budget:
                        self.more = True
                        break
                if total:
                    deleted["+".join(statuses)] = total
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (self.lock_key,))
        return deleted
