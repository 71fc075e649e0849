#!/usr/bin/env python3
"""One jobsupervisor drain, taken apart: where the CPU of each job goes.

    python bench/drain.py [-n 60000] [--children 2] [--type noop|cpu] [--repo DIR]
                          [--sql "STATEMENT; ..."] [--spy supervisor|child] [--dsn DSN]

Starts ``jobsupervisor run`` on a fresh database (``bench_drain``), warms it up, inserts n jobs
in one transaction (COPY), waits until they succeeded, and prints one JSON line: jobs/s over
the database's timestamps (first claim to last success, as bench/run.py measures), and CPU
per job of the supervisor (its courier threads included), its children, the Postgres
backends that were there at the start, those that started during the drain (a courier's
first connection, autovacuum), and the whole machine (/proc/stat); transactions per job.
For A/B runs: ``--repo`` runs another checkout's supervisor (a ``git worktree``), ``--sql``
changes the schema after migrating (e.g. drop an index), and alternating runs of both on the
same minutes are what to compare (this machine's speed drifts by ±20 %). ``--spy`` records a
py-spy profile (``--gil``: the Python CPU of the process) to drain-spy.txt.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import psycopg
import yaml

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

from common import APPS, REPO, cpu_of, with_dbname  # noqa: E402


def cpu_seconds(procs: list[psutil.Process]) -> float:
    return sum(map(cpu_of, procs))


def postgres_processes() -> list[psutil.Process]:
    return [p for p in psutil.process_iter(["name"]) if (p.info["name"] or "").startswith("postgres")]


def machine_busy() -> tuple[int, int]:
    fields = list(map(int, Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]))
    return sum(fields) - fields[3] - fields[4], sum(fields)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("-n", type=int, default=60_000)
    parser.add_argument("--children", type=int, default=2)
    parser.add_argument("--type", choices=["noop", "cpu"], default="noop")
    parser.add_argument("--burn", type=int, default=61_452, help="burn loop iterations of a cpu job (~5 ms)")
    parser.add_argument("--repo", default=str(REPO), help="the checkout whose supervisor runs")
    parser.add_argument("--sql", default="", help="statements run after migrating, separated by ';'")
    parser.add_argument("--spy", choices=["supervisor", "child"])
    parser.add_argument("--dsn", default=os.environ.get("BENCH_DSN") or os.environ.get("JOBSUPERVISOR_TEST_DSN")
                        or "postgresql://root@127.0.0.1:5432/postgres")
    args = parser.parse_args()

    with psycopg.connect(args.dsn, autocommit=True) as conn:
        conn.execute("DROP DATABASE IF EXISTS bench_drain WITH (FORCE)")
        conn.execute("CREATE DATABASE bench_drain")
    dsn = with_dbname(args.dsn, "bench_drain")
    workdir = Path(os.environ.get("TMPDIR", "/tmp")) / "jobsupervisor-drain"
    workdir.mkdir(exist_ok=True)
    config = workdir / "config.yaml"
    config.write_text(yaml.safe_dump({
        "database": {"dsn": dsn}, "imports": ["js_tasks"],
        "children": {"min": args.children, "max": args.children},
        "logging": {"format": "json", "level": "info"}}))
    env = dict(os.environ, PYTHONPATH=f"{args.repo}{os.pathsep}{APPS}")
    cli = [sys.executable, "-m", "supervisor.cli", "-c", str(config)]
    subprocess.run([*cli, "migrate"], env=env, check=True, capture_output=True, cwd=workdir)
    sys.path.insert(0, args.repo)
    from supervisor.enqueue import enqueue_many

    with psycopg.connect(dsn, autocommit=True) as conn:
        for statement in filter(str.strip, args.sql.split(";")):
            conn.execute(statement)
    log = open(workdir / "supervisor.log", "w")
    sup = subprocess.Popen([*cli, "run"], env=env, stdout=log, stderr=log, cwd=workdir)
    try:
        ps = psutil.Process(sup.pid)
        deadline = time.monotonic() + 60
        while sum("child idle" in " ".join(c.cmdline()) for c in ps.children()) < args.children:
            if time.monotonic() > deadline or sup.poll() is not None:
                raise SystemExit(f"the supervisor did not get ready: see {workdir / 'supervisor.log'}")
            time.sleep(0.05)

        def done(conn: psycopg.Connection, job_type: str) -> int:
            return conn.execute("SELECT count(*) FROM jobs WHERE status = 'succeeded' AND job_type = %s",
                                (job_type,)).fetchone()[0]

        with psycopg.connect(dsn, autocommit=True) as conn:
            enqueue_many(conn, [{"job_type": "warmup"} for _ in range(500)])
            while done(conn, "warmup") < 500:
                time.sleep(0.05)
            children = ps.children()
            spy = None
            if args.spy:
                target = sup.pid if args.spy == "supervisor" else children[0].pid
                # py-spy from this interpreter's environment (pip install py-spy), else PATH.
                beside = Path(sys.executable).parent / "py-spy"
                spy = subprocess.Popen([str(beside) if beside.exists() else "py-spy", "record", "-p", str(target), "-o", str(BENCH / "drain-spy.txt"),
                                        "-f", "raw", "-r", "1000", "--nonblocking", "--threads", "--gil"],
                                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                time.sleep(1)
            payload = {"n": args.burn} if args.type == "cpu" else {}
            enqueue_many(conn, [{"job_type": args.type, "payload": payload} for _ in range(args.n)])
            conn.execute("ANALYZE jobs")
            backends = postgres_processes()
            cpu0 = (cpu_seconds([ps]), cpu_seconds(children), cpu_seconds(backends), machine_busy())
            xact0 = conn.execute("SELECT xact_commit FROM pg_stat_database WHERE datname = 'bench_drain'").fetchone()[0]
            while done(conn, args.type) < args.n:
                time.sleep(0.25)
            cpu1 = (cpu_seconds([ps]), cpu_seconds(children), cpu_seconds(backends), machine_busy())
            late = cpu_seconds([p for p in postgres_processes() if p.pid not in {b.pid for b in backends}])
            n, seconds = conn.execute("""
                SELECT count(*), extract(epoch FROM max(finished_at) - min(locked_at))::float8
                FROM jobs WHERE job_type = %s""", (args.type,)).fetchone()
            time.sleep(0.6)  # pg_stat_database is updated every 500 ms
            xact1 = conn.execute("SELECT xact_commit FROM pg_stat_database WHERE datname = 'bench_drain'").fetchone()[0]
            if spy is not None:
                spy.send_signal(signal.SIGINT)
                spy.wait()
    finally:
        sup.send_signal(signal.SIGINT)
        sup.wait(60)

    def per_job(seconds_of_cpu: float) -> float:
        return round(seconds_of_cpu / args.n * 1e6, 1)

    busy = cpu1[3][0] - cpu0[3][0], cpu1[3][1] - cpu0[3][1]
    print(json.dumps({
        "jobs_per_s": round(n / seconds),
        "us_per_job": {
            "supervisor": per_job(cpu1[0] - cpu0[0]), "children": per_job(cpu1[1] - cpu0[1]),
            "postgres": per_job(cpu1[2] - cpu0[2]), "postgres_started_during": per_job(late),
            "machine": per_job(busy[0] / os.sysconf("SC_CLK_TCK")),
        },
        "machine_busy": round(busy[0] / busy[1], 2),
        "transactions_per_job": round((xact1 - xact0) / args.n, 3),
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
