"""The workloads of issue #7, each in a fresh database, each for any system.

Rates of workers come from the systems' own rows and the database clock (first claim to last
completion), so neither worker start-up nor the harness' polling is in them. Enqueue rates
are timed by the client around its own calls (connection set-up excluded).
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

from common import BenchError, Server, app_env, execute, free_udp_port, percentile, query, query_one, wait_for
from systems.base import System


def drain_timeout(n: int) -> float:
    return 60 + n / 100


# ---------------------------------------------------------------------------------------------
def enqueue(system: System, server: Server, single: int, bulk: int, batch: int) -> dict[str, float]:
    with server.fresh_db(f"enq_{system.name}") as dsn:
        system.setup_db(dsn)
        one = system.client("enqueue_single", dsn=dsn, n=single)
        many = system.client("enqueue_bulk", dsn=dsn, n=bulk, batch=batch)
    return {"single": one["n"] / one["seconds"], "bulk": many["n"] / many["seconds"]}


# ---------------------------------------------------------------------------------------------
def drain(system: System, server: Server, kind: str, n: int, conf: dict[str, Any],
          payload: dict[str, Any] | None = None) -> dict[str, Any]:
    """Start the workers, wait until they idle, put n jobs in the table in one transaction,
    ANALYZE the system's jobs table, wait until all are done. Rate from the database's timestamps; CPU of the system's
    processes over the drain; memory after it."""
    tag = f"{kind}-{'-'.join(str(v) for v in conf.values() if not isinstance(v, dict))}"
    with server.fresh_db(f"{kind}_{system.name}") as dsn:
        system.setup_db(dsn)
        workers = system.start(dsn, conf, tag)
        try:
            system.wait_ready(dsn, workers, conf)
            cpu0 = system.cpu(workers)
            system.client("load", dsn=dsn, job_type=kind, n=n, payload=payload or {})
            # Statistics as a deployment that has been running would have them (autovacuum
            # would get there within a minute, at a random moment of the drain).
            execute(dsn, system.analyze_sql)
            last = [0, time.monotonic()]

            def progressing() -> None:
                system._check_alive(workers)
                done = system.count_done(dsn, kind)
                if done > last[0]:
                    last[:] = [done, time.monotonic()]
                elif time.monotonic() - last[1] > 30:
                    raise BenchError(f"{system.name} stalled at {done}/{n} {kind} jobs")

            wait_for(lambda: system.count_done(dsn, kind) >= n, timeout=drain_timeout(n), interval=0.2,
                     what=f"{n} {kind} jobs on {system.name}", check=progressing)
            cpu1 = system.cpu(workers)
            memory = system.memory(workers)
            done, seconds = system.window(dsn, kind)
        finally:
            system.stop(workers)
    result = {"rate": done / seconds, "seconds": seconds, "n": done, "conf": conf, "memory": memory}
    for role, value in cpu1.items():
        result[f"cpu_us_{role}"] = (value - cpu0[role]) / done * 1e6
    return result


def best_conf(system: System, server: Server, kind: str, n: int, quick: bool, log,
              payload: dict[str, Any] | None = None) -> tuple[dict[str, Any], dict[str, float]]:
    """Try each candidate configuration once on a smaller drain; the fastest is measured."""
    candidates = system.candidates(kind, quick)
    if len(candidates) == 1:
        return candidates[0], {}
    rates = {}
    for conf in candidates:
        r = drain(system, server, kind, n, conf, payload)
        rates[system.describe(conf)] = r["rate"]
        log(f"  {system.name} {kind} sweep: {system.describe(conf)}: {r['rate']:,.0f} jobs/s")
    best = max(candidates, key=lambda c: rates[system.describe(c)])
    return best, rates


# ---------------------------------------------------------------------------------------------
def latency(system: System, server: Server, n: int, conf: dict[str, Any]) -> dict[str, float]:
    """Enqueue → handler start on an idle system, one job at a time, 20–40 ms apart."""
    port = free_udp_port()
    with server.fresh_db(f"lat_{system.name}") as dsn:
        system.setup_db(dsn)
        workers = system.start(dsn, conf, "latency", BENCH_UDP_PORT=port)
        try:
            system.wait_ready(dsn, workers, conf)
            r = system.client("latency", dsn=dsn, n=n, port=port, timeout=60 + n)
        finally:
            system.stop(workers)
    ms = [x * 1000 for x in r["from_call"]]
    commit_ms = [x * 1000 for x in r["from_commit"]]
    return {"p50": percentile(ms, 50), "p95": percentile(ms, 95), "p99": percentile(ms, 99),
            "commit_p50": percentile(commit_ms, 50)}


# ---------------------------------------------------------------------------------------------
def read_records(path: Path) -> list[tuple[int, int, int, float]]:
    """(key, attempt, pid, started) for every handler start written by benchlib.record."""
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        key, attempt, pid, started = line.split()
        rows.append((int(key), int(attempt), int(pid), float(started)))
    return rows


def crash(system: System, server: Server, run_dir: Path, conf: dict[str, Any], jobs: int = 2,
          timeout: float = 150.0) -> dict[str, float]:
    """Worker A takes ``jobs`` long jobs; worker B is up and idle; ``kill -9`` of A (only the
    supervisor / worker process, as the kernel or the OOM killer would); seconds until every
    one of those jobs has started again elsewhere. Each system with its default detection
    settings."""
    record = run_dir / f"crash-{system.name}-{time.time_ns()}.txt"
    env = {"BENCH_RECORD_FILE": str(record), "BENCH_PROC_STALLED": "1"}
    with server.fresh_db(f"crash_{system.name}") as dsn:
        system.setup_db(dsn)
        a = system.start(dsn, conf, "crash-a", **env)
        b: list = []
        try:
            system.wait_ready(dsn, a, conf)
            system.client("enqueue_records", dsn=dsn, keys=list(range(jobs)), sleep=3600)
            wait_for(lambda: len({r[0] for r in read_records(record)}) >= jobs, timeout=30,
                     what="the long jobs to start on worker A")
            b = system.start(dsn, conf, "crash-b", **env)
            system.wait_ready(dsn, b, conf)
            a_pids = {p.pid for p in system.processes(a)}
            killed_at = time.time()
            os.kill(a[0].pid, signal.SIGKILL)

            def rerun() -> dict[int, float]:
                again = {}
                for key, attempt, pid, started in read_records(record):
                    if pid not in a_pids and started >= killed_at:
                        again.setdefault(key, started)
                return again if len(again) >= jobs else {}

            again = wait_for(rerun, timeout=timeout, interval=0.05, what=f"{system.name} to re-run the jobs of the killed worker")
        finally:
            system.stop(a + b, fast=True)  # B still runs hour-long jobs; the database goes next
    return {"seconds": max(again.values()) - killed_at}


# ---------------------------------------------------------------------------------------------
def fleet(system: System, server: Server, run_dir: Path, supervisors: int, children: int, n: int) -> dict[str, Any]:
    """``supervisors`` supervisors with ``children`` children each share one database and drain
    n jobs whose handler notes every start: throughput, how claims went, and whether any job
    ran twice."""
    record = run_dir / f"fleet-{supervisors}-{time.time_ns()}.txt"
    conf = {"supervisors": supervisors, "children": children}
    with server.fresh_db(f"fleet{supervisors}") as dsn:
        system.setup_db(dsn)
        workers = system.start(dsn, conf, f"fleet{supervisors}", BENCH_RECORD_FILE=str(record))
        try:
            system.wait_ready(dsn, workers, conf)
            system.client("enqueue_records", dsn=dsn, keys=list(range(n)))
            execute(dsn, system.analyze_sql)
            lock_waits = 0
            samples = 0

            def done() -> bool:
                nonlocal lock_waits, samples
                samples += 1
                lock_waits += query_one(dsn, """SELECT count(*) FROM pg_stat_activity
                    WHERE datname = current_database() AND wait_event_type = 'Lock'""")[0]
                return system.count_done(dsn, "record") >= n

            wait_for(done, timeout=drain_timeout(n), interval=0.1, what=f"fleet of {supervisors}",
                     check=lambda: system._check_alive(workers))
            done_n, seconds = system.window(dsn, "record")
            attempts = query_one(dsn, "SELECT count(*) FILTER (WHERE attempts > 1), max(attempts) FROM jobs WHERE job_type = 'record'")
            claims = system.claims(dsn)
            per_runner = query(dsn, """SELECT split_part(locked_by, '/', 1), count(*) FROM jobs
                                       WHERE job_type = 'record' GROUP BY 1""")
        finally:
            system.stop(workers)
    runs = read_records(record)
    keys = [r[0] for r in runs]
    return {
        "rate": done_n / seconds, "n": done_n, "runs": len(runs), "distinct": len(set(keys)),
        "ran_twice": len(keys) - len(set(keys)), "reclaimed": attempts[0], "claims": len(claims),
        "jobs_per_claim": done_n / len(claims) if claims else float("nan"),
        "lock_waits": lock_waits, "lock_samples": samples,
        "share_min": min(c for _, c in per_runner) / done_n * len(per_runner) if per_runner else float("nan"),
        "runners": len(per_runner),
    }


# ---------------------------------------------------------------------------------------------
PGBENCH_ONE = """\
UPDATE jobs SET status = 'running', attempts = attempts + 1, locked_by = 'pgbench', locked_at = now(), updated_at = now() WHERE id = (SELECT id FROM jobs WHERE status IN ('queued', 'retry') AND run_at <= now() ORDER BY priority DESC, run_at, id LIMIT 1 FOR UPDATE SKIP LOCKED) RETURNING id \\gset
UPDATE jobs SET status = 'succeeded', finished_at = now(), updated_at = now() WHERE id = :id AND status = 'running' AND locked_by = 'pgbench';
"""
PGBENCH_BATCH = """\
WITH claimed AS (UPDATE jobs SET status = 'running', attempts = attempts + 1, locked_by = 'pgbench', locked_at = now(), updated_at = now() WHERE id IN (SELECT id FROM jobs WHERE status IN ('queued', 'retry') AND run_at <= now() ORDER BY priority DESC, run_at, id LIMIT {batch} FOR UPDATE SKIP LOCKED) RETURNING id) SELECT array_agg(id) AS ids FROM claimed \\gset
UPDATE jobs SET status = 'succeeded', finished_at = now(), updated_at = now() WHERE id = ANY(:ids) AND status = 'running' AND locked_by = 'pgbench';
"""


def pgbench(system: System, server: Server, run_dir: Path, seconds: int, clients: list[int], log,
            batch: int = 1) -> dict[str, Any]:
    """The reference limit: pgbench running only the minimal claim (SKIP LOCKED) and complete
    statements, each its own transaction like the real thing, on jobsupervisor's table and
    indexes, prepared statements: one job per claim (as jobsupervisor claims for one idle
    child), or ``batch`` jobs per claim and per complete. Jobs per second, best client count."""
    script = run_dir / f"claim_complete_{batch}.sql"
    script.write_text(PGBENCH_ONE if batch == 1 else PGBENCH_BATCH.format(batch=batch))
    best: dict[str, Any] = {"tps": 0.0}
    with server.fresh_db("pgbench") as dsn:
        system.setup_db(dsn)
        # Enough queued jobs that no client runs dry.
        execute(dsn, """INSERT INTO jobs (job_type, payload)
                        SELECT 'noop', jsonb_build_object('i', i) FROM generate_series(1, %s) AS i""",
                (max(50_000, (4_000 if batch == 1 else 20_000) * seconds * len(clients)),))
        execute(dsn, "VACUUM ANALYZE jobs")
        for c in clients:
            proc = subprocess.run(["pgbench", "-n", "-M", "prepared", "-f", str(script), "-c", str(c), "-j", str(min(c, 2)),
                                   "-T", str(seconds), dsn], capture_output=True, text=True, env=app_env())
            if proc.returncode != 0:
                raise BenchError(f"pgbench failed: {(proc.stderr or proc.stdout).strip()[-2000:]}")
            tps = None
            for line in proc.stdout.splitlines():
                if line.startswith("tps ="):
                    tps = float(line.split()[2]) * batch
            log(f"  pgbench claim+complete, {batch} job(s) per statement, {c} clients: {tps:,.0f} jobs/s")
            if tps and tps > best["tps"]:
                best = {"tps": tps, "clients": c}
    return best


# ---------------------------------------------------------------------------------------------
def _burn_many(args: tuple[int, int]) -> None:
    import sys

    from common import APPS

    if str(APPS) not in sys.path:
        sys.path.insert(0, str(APPS))
    import benchlib

    burn, count = args
    for _ in range(count):
        benchlib.burn(burn)


def raw_cpu(burn: int, jobs: int) -> dict[str, float]:
    """The CPU-bound handler's work without any job system: ``jobs`` burns in one process, then
    split over two processes running at once. How far this machine's two cores scale on their
    own, measured next to the drains: the ceiling for "two children vs one"."""
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    rates: dict[int, list[float]] = {1: [], 2: []}
    for procs in (1, 2, 1):  # one process before and after: the machine's drift cancels out
        with ctx.Pool(procs) as pool:
            pool.map(_burn_many, [(1, 1)] * procs)  # started and warm before the clock
            started = time.monotonic()
            pool.map(_burn_many, [(burn, jobs // procs)] * procs, chunksize=1)
            rates[procs].append(jobs // procs * procs / (time.monotonic() - started))
    return {"one": sum(rates[1]) / 2, "two": rates[2][0]}
