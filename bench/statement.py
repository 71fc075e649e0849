#!/usr/bin/env python3
"""Postgres' share of a no-op drain, alone: the supervisor's hot statement in a loop.

    python bench/statement.py [--jobs 60000] [--batch 512] [--repeat 3] [--dsn DSN]
                              [--variant NAME ...]

Runs ``jobs_record_and_claim`` (record the previous batch's successes, claim the next batch)
on one connection until the table is drained, in a fresh database migrated by jobsupervisor,
and prints the median statement time per job. No supervisor, no children: what the table's
design (its indexes above all) costs Postgres per job, to compare variants side by side.
Variants (all by default, interleaved per repeat):
  current        the schema the migrations create
  pre-0005       with 0002's (status, id) over every row and 0001's running-jobs index back
  pre-0006       with 0002's (job_type, id) over every row instead of 0006's over the jobs
                 not running (an entry more a claim)
  no-type-index  current without (job_type, id) at all
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common import REPO, Server, app_env  # noqa: E402
from supervisor.db import int_array, text_array  # noqa: E402
from supervisor.enqueue import enqueue_many  # noqa: E402
from supervisor.queries import queries_for  # noqa: E402

VARIANTS = {
    "current": [],
    "pre-0005": ["CREATE INDEX jobs_status_id_idx ON jobs (status, id)",
                 "CREATE INDEX jobs_running_idx ON jobs (locked_by) WHERE status = 'running'",
                 "DROP INDEX jobs_status_partial_idx"],
    "pre-0006": ["DROP INDEX jobs_type_partial_idx", "CREATE INDEX jobs_type_id_idx ON jobs (job_type, id)"],
    "no-type-index": ["DROP INDEX jobs_type_partial_idx"],
}


def migrate(dsn: str, workdir: Path) -> None:
    config = workdir / "statement.yaml"
    config.write_text(f"database: {{dsn: '{dsn}'}}\nimports: []\n")
    proc = subprocess.run([sys.executable, "-m", "supervisor.cli", "-c", str(config), "migrate"],
                          env=app_env(), capture_output=True, text=True, cwd=REPO)
    if proc.returncode != 0:
        raise SystemExit(f"migrate failed: {proc.stderr.strip()}")


def drain(dsn: str, jobs: int, batch: int, setup: list[str]) -> float:
    """Seconds per job of the statement, median over the drain's statements."""
    q = queries_for("jobs")
    with psycopg.connect(dsn, autocommit=True) as conn:
        for sql in setup:
            conn.execute(sql)
        enqueue_many(conn, [{"job_type": "noop"} for _ in range(jobs)])
        conn.execute("ANALYZE jobs")
        locks = text_array(f"bench:1:x/{1000 + i % 2}" for i in range(batch))  # two children's slots
        done_ids, done_locks, done_ages = "{}", "{}", "{}"
        per_job = []
        while True:
            started = time.perf_counter()
            rows = conn.execute(q.jobs_record_and_claim, {
                "n": batch, "types": ["noop"], "head_types": ["noop"], "queues": None, "locks": locks,
                "done_ids": done_ids, "done_locks": done_locks, "done_ages": done_ages}).fetchall()
            seconds = time.perf_counter() - started
            claimed = [row for row in rows if row[2] is not None]
            if not claimed:
                return statistics.median(per_job)
            per_job.append(seconds / len(claimed))
            done_ids = int_array(row[0] for row in claimed)
            done_locks = text_array(row[8] for row in claimed)
            done_ages = "{" + ",".join("1000" for _ in claimed) + "}"  # microseconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=60_000)
    parser.add_argument("--batch", type=int, default=512)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--variant", action="append", choices=sorted(VARIANTS))
    parser.add_argument("--dsn", default=os.environ.get("BENCH_DSN") or os.environ.get("JOBSUPERVISOR_TEST_DSN")
                        or "postgresql://root@127.0.0.1:5432/postgres")
    args = parser.parse_args()
    variants = args.variant or list(VARIANTS)
    server = Server(args.dsn)
    results: dict[str, list[float]] = {v: [] for v in variants}
    workdir = Path(os.environ.get("TMPDIR", "/tmp"))
    for _ in range(args.repeat):
        for variant in variants:
            with server.fresh_db("statement") as dsn:
                migrate(dsn, workdir)
                results[variant].append(drain(dsn, args.jobs, args.batch, VARIANTS[variant]))
    print(f"jobs_record_and_claim, {args.batch} a statement, {args.jobs:,} jobs, {args.repeat} repeats "
          "(µs of statement time per job, min-median-max):")
    for variant, values in results.items():
        us = sorted(v * 1e6 for v in values)
        print(f"  {variant:24} {us[0]:6.1f} {statistics.median(us):6.1f} {us[-1]:6.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
