#!/usr/bin/env python3
"""The benchmark of issue #7: the same workloads on jobsupervisor and its peers (pgqueuer,
procrastinate, installed from PyPI into bench/.venvs/), against one Postgres, in one run.

    python bench/run.py [--quick] [--repeat N] [--only WORKLOAD,...] [--systems NAME,...]
                        [--dsn DSN] [--out bench/results/DATE.md]

Workloads: enqueue, noop, cpu, latency, crash, memory, fleet, pgbench (default: all).
Every workload runs in a fresh database (bench_*), every repeat runs all systems back to
back, and ratios (ours / peer) are taken within a repeat, then summarised min–median–max.
Prints one markdown table and writes it to --out.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shlex
import signal
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import BENCH, REPO, Server, calibrate_burn, summary, tmpdir  # noqa: E402
from systems.jobsupervisor import JobSupervisor  # noqa: E402
from systems.pgqueuer_ import PgQueuer  # noqa: E402
from systems.procrastinate_ import Procrastinate  # noqa: E402
import workloads  # noqa: E402

WORKLOADS = ["enqueue", "noop", "cpu", "latency", "crash", "memory", "fleet", "pgbench"]
SYSTEMS = {"jobsupervisor": JobSupervisor, "pgqueuer": PgQueuer, "procrastinate": Procrastinate}
OURS = "jobsupervisor"

FULL = {
    "enqueue_single": 2_000, "enqueue_bulk": 20_000, "enqueue_batch": 1_000,
    # The sweep's drains must be long enough for a deep queue ahead to matter: at 3,000 jobs
    # the ramp-up decided, and picked 8 children where 2 drain 20,000 jobs 25 % faster.
    "noop": 20_000, "noop_sweep": 10_000,
    # procrastinate drains a few hundred no-op jobs a second here: 20,000 would take a minute
    # and more per repeat, so it drains 5,000 (its rate is flat in the batch size).
    "noop_slow": {"procrastinate": 5_000},
    # 600 CPU-bound jobs drained in ~1.7 s on two cores, of which the first jobs' start (no
    # system knows the new type's duration yet) and the last ones' recording were ~2 %.
    "cpu": 1_500, "latency": 200,
    "crash_jobs": 2, "crash_repeat": 1,
    "fleet": [1, 2, 4, 8], "fleet_children": 2, "fleet_jobs": 5_000, "fleet_repeat": 1,
    "pgbench_seconds": 3, "pgbench_clients": [1, 2, 4, 8],
}
QUICK = {
    "enqueue_single": 200, "enqueue_bulk": 2_000, "enqueue_batch": 500,
    "noop": 1_000, "noop_sweep": 0, "noop_slow": {},
    "cpu": 100, "latency": 20,
    "crash_jobs": 1, "crash_repeat": 1,
    "fleet": [1, 2], "fleet_children": 2, "fleet_jobs": 500, "fleet_repeat": 1,
    "pgbench_seconds": 2, "pgbench_clients": [2],
}


def log(message: str) -> None:
    print(f"[{dt.datetime.now():%H:%M:%S}] {message}", file=sys.stderr, flush=True)


def default_dsn() -> str:
    return (os.environ.get("BENCH_DSN") or os.environ.get("JOBSUPERVISOR_TEST_DSN")
            or "postgresql://root@127.0.0.1:5432/postgres")


def machine() -> dict[str, str]:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import psutil

    return {"cores": str(os.cpu_count()), "cpu": model or platform.processor(),
            "memory": f"{psutil.virtual_memory().total / 2**30:.0f} GiB",
            "os": f"{platform.system()} {platform.release()}", "python": platform.python_version()}


class Results:
    """values[key][system] = one value per repeat (None where the run failed)."""

    def __init__(self) -> None:
        self.values: dict[str, dict[str, list[Any]]] = {}
        self.notes: dict[str, str] = {}
        self.errors: list[str] = []

    def add(self, key: str, system: str, value: Any) -> None:
        self.values.setdefault(key, {}).setdefault(system, []).append(value)

    def get(self, key: str, system: str) -> list[Any]:
        return self.values.get(key, {}).get(system, [])


class Harness:
    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.sizes = QUICK if args.quick else FULL
        self.server = Server(args.dsn, keep=args.keep_dbs)
        self.run_dir = tmpdir("jobsupervisor-bench-")
        self.systems = {name: SYSTEMS[name](self.run_dir, log) for name in args.systems}
        self.results = Results()
        self.best: dict[str, dict[str, dict[str, Any]]] = {}  # workload -> system -> conf
        self.sweeps: dict[str, dict[str, dict[str, float]]] = {}

    def attempt(self, what: str, system: str, fn: Callable[[], Any]) -> Any:
        try:
            return fn()
        except Exception as error:  # noqa: BLE001 - one failed measurement must not end the run
            message = f"{what} on {system}: {type(error).__name__}: {str(error).strip().splitlines()[0] if str(error).strip() else ''}"
            log("FAILED " + message)
            if self.args.verbose:
                traceback.print_exc()
            self.results.errors.append(message)
            return None

    def wants(self, workload: str) -> bool:
        return workload in self.args.only

    # -------------------------------------------------------------------------------------------
    def run(self) -> None:
        for name, system in self.systems.items():
            system.prepare()
            log(f"{name} {system.version()}")
        if self.wants("cpu"):
            self.burn = calibrate_burn()
            log(f"CPU-bound job: {self.burn:,} iterations of the burn loop ≈ 5 ms on one core here")
        if self.wants("noop") or self.wants("memory"):
            self.sweep("noop")
        for rep in range(1, self.args.repeat + 1):
            log(f"--- repeat {rep}/{self.args.repeat}")
            if self.wants("pgbench"):
                self.reference()
            if self.wants("enqueue"):
                self.enqueue()
            if self.wants("noop") or self.wants("memory"):
                self.noop()
            if self.wants("cpu"):
                self.cpu()
            if self.wants("latency"):
                self.latency()
            if self.wants("crash") and rep <= self.sizes["crash_repeat"]:
                self.crash()
            if self.wants("fleet") and OURS in self.systems and rep <= self.sizes["fleet_repeat"]:
                self.fleet()

    def sweep(self, kind: str) -> None:
        for name, system in self.systems.items():
            n = self.sizes["noop_sweep"]
            if name in self.sizes["noop_slow"]:  # a slow peer: a shorter sweep says as much
                n = min(n, self.sizes["noop_slow"][name] // 2)
            if not n:
                self.best.setdefault(kind, {})[name] = system.candidates(kind, True)[0]
                continue
            log(f"{name}: choosing the {kind} concurrency ({n:,} jobs per try)")
            found = self.attempt(f"{kind} sweep", name, lambda: workloads.best_conf(system, self.server, kind, n, False, log))
            conf = found[0] if found else system.candidates(kind, True)[0]
            self.best.setdefault(kind, {})[name] = conf
            self.sweeps.setdefault(kind, {})[name] = found[1] if found else {}

    def reference(self) -> None:
        system = self.systems.get(OURS) or JobSupervisor(self.run_dir, log)
        if not system.python:
            system.prepare()
        for batch, key in ((1, "pgbench"), (10, "pgbench10")):
            r = self.attempt("pgbench", "postgres", lambda: workloads.pgbench(
                system, self.server, self.run_dir, self.sizes["pgbench_seconds"], self.sizes["pgbench_clients"], log, batch))
            self.results.add(key, "postgres", r["tps"] if r else None)
            if r:
                self.results.add(key + "_clients", "postgres", r["clients"])

    def enqueue(self) -> None:
        s = self.sizes
        for name, system in self.systems.items():
            r = self.attempt("enqueue", name, lambda: workloads.enqueue(
                system, self.server, s["enqueue_single"], s["enqueue_bulk"], s["enqueue_batch"]))
            self.results.add("enqueue_single", name, r and r["single"])
            self.results.add("enqueue_bulk", name, r and r["bulk"])
            if r:
                log(f"{name} enqueue: {r['single']:,.0f}/s one by one, {r['bulk']:,.0f}/s in bulk")

    def noop(self) -> None:
        for name, system in self.systems.items():
            conf = self.best["noop"][name]
            n = self.sizes["noop_slow"].get(name, self.sizes["noop"])
            r = self.attempt("no-op drain", name, lambda: workloads.drain(system, self.server, "noop", n, conf))
            self.results.add("noop", name, r and r["rate"])
            self.results.add("noop_n", name, r and r["n"])
            self.results.add("cpu_us_system", name, r and r["cpu_us_system"])
            if r and "cpu_us_supervisor" in r:
                self.results.add("cpu_us_supervisor", name, r["cpu_us_supervisor"])
                self.results.add("cpu_us_children", name, r["cpu_us_children"])
            for key, value in (r["memory"] if r else {}).items():
                self.results.add(f"mem_{key}", name, value)
            if r:
                log(f"{name} no-op drain ({system.describe(conf)}): {r['rate']:,.0f} jobs/s, "
                    f"{r['cpu_us_system']:,.0f} µs CPU/job" +
                    (f" (supervisor {r['cpu_us_supervisor']:,.0f})" if "cpu_us_supervisor" in r else ""))

    def cpu(self) -> None:
        payload = {"n": self.burn}
        r = self.attempt("raw CPU scaling", "machine", lambda: workloads.raw_cpu(self.burn, self.sizes["cpu"]))
        self.results.add("raw_cpu_one", "machine", r and r["one"])
        self.results.add("raw_cpu_two", "machine", r and r["two"])
        if r:
            log(f"the burn without a job system: {r['one']:,.0f}/s in one process, {r['two']:,.0f}/s in two")
        for name, system in self.systems.items():
            rates = {}
            candidates = system.candidates("cpu", self.args.quick)
            # One process is measured first and again last (A B C A): this machine's speed
            # drifts within a minute, and "n processes vs one" must not be that drift.
            ones = []
            for i, conf in enumerate(candidates + candidates[:1] if len(candidates) > 1 else candidates):
                r = self.attempt("CPU-bound drain", name, lambda: workloads.drain(
                    system, self.server, "cpu", self.sizes["cpu"], conf, payload))
                if not r:
                    continue
                log(f"{name} CPU-bound drain ({system.describe(conf)}): {r['rate']:,.0f} jobs/s")
                if conf is candidates[0]:
                    ones.append(r["rate"])
                    self.results.notes[f"cpu_one_{name}"] = system.describe(conf)
                if i < len(candidates):
                    rates[system.describe(conf)] = r["rate"]
                if name == OURS and i < len(candidates):
                    self.results.add("cpu_us_supervisor_cpu", name, r["cpu_us_supervisor"])
            self.results.add("cpu_one", name, sum(ones) / len(ones) if ones else None)
            if ones:
                rates[system.describe(candidates[0])] = sum(ones) / len(ones)
            best = max(rates, key=rates.get) if rates else None
            self.results.add("cpu_best", name, rates.get(best) if best else None)
            if best:
                self.results.add("cpu_best_conf", name, best)

    def latency(self) -> None:
        for name, system in self.systems.items():
            conf = system.candidates("latency", True)[0]
            r = self.attempt("latency", name, lambda: workloads.latency(system, self.server, self.sizes["latency"], conf))
            for p in ("p50", "p95", "p99"):
                self.results.add(f"latency_{p}", name, r and r[p])
            if r:
                log(f"{name} start latency: p50 {r['p50']:.2f} ms, p95 {r['p95']:.2f} ms, p99 {r['p99']:.2f} ms")

    def crash(self) -> None:
        for name, system in self.systems.items():
            conf = system.candidates("latency", True)[0]
            r = self.attempt("crash recovery", name, lambda: workloads.crash(
                system, self.server, self.run_dir, conf, self.sizes["crash_jobs"]))
            self.results.add("crash", name, r and r["seconds"])
            if r:
                log(f"{name} crash recovery: {r['seconds']:.1f} s")

    def fleet(self) -> None:
        system = self.systems[OURS]
        for k in self.sizes["fleet"]:
            r = self.attempt(f"fleet of {k}", OURS, lambda: workloads.fleet(
                system, self.server, self.run_dir, k, self.sizes["fleet_children"], self.sizes["fleet_jobs"]))
            self.results.add(f"fleet_{k}", OURS, r)
            if r:
                log(f"fleet of {k} supervisors × {self.sizes['fleet_children']} children: {r['rate']:,.0f} jobs/s, "
                    f"ran twice {r['ran_twice']}, re-claimed {r['reclaimed']}, lock waits seen {r['lock_waits']}, "
                    f"{r['jobs_per_claim']:.2f} jobs/claim")


# -----------------------------------------------------------------------------------------------
# The report
# -----------------------------------------------------------------------------------------------
def fmt(value: float | None, unit: str) -> str:
    if value is None or value != value:
        return "–"
    if unit in ("jobs/s",):
        return f"{value:,.0f}"
    if unit in ("ms",):
        return f"{value:.2f}" if value < 10 else f"{value:.1f}"
    if unit == "s":
        return f"{value:.1f}"
    if unit == "x":
        return f"{value:.2f}"
    if unit in ("µs", "MB"):
        return f"{value:,.0f}" if value >= 10 else f"{value:.1f}"
    return f"{value:g}"


def cell(values: list[Any], unit: str) -> str:
    s = summary([v for v in values if isinstance(v, (int, float))])
    if s is None:
        return "–"
    lo, med, hi = s
    n = len([v for v in values if isinstance(v, (int, float))])
    if n == 1 or lo == hi:
        return fmt(med, unit)
    return f"{fmt(med, unit)} ({fmt(lo, unit)}–{fmt(hi, unit)})"


def ratios(a: list[Any], b: list[Any]) -> list[float]:
    return [x / y for x, y in zip(a, b) if isinstance(x, (int, float)) and isinstance(y, (int, float)) and y]


def ratio_cell(rs: list[float]) -> str:
    s = summary(rs)
    if s is None:
        return "–"
    lo, med, hi = s
    if len(rs) == 1:
        return f"{med:.2f}×"
    return f"{lo:.2f}–**{med:.2f}**–{hi:.2f}×"


ROWS = [
    # key, label, unit, higher is better, workload
    ("enqueue_single", "Enqueue, one job per transaction", "jobs/s", True, "enqueue"),
    ("enqueue_bulk", "Enqueue, bulk ({batch:,} per statement)", "jobs/s", True, "enqueue"),
    ("noop", "No-op drain ({noop:,} jobs), best concurrency", "jobs/s", True, "noop"),
    ("cpu_one", "CPU-bound drain (~5 ms jobs), one process / child", "jobs/s", True, "cpu"),
    ("cpu_best", "CPU-bound drain, best concurrency", "jobs/s", True, "cpu"),
    ("latency_p50", "Start latency p50 (enqueue → handler), idle", "ms", False, "latency"),
    ("latency_p95", "Start latency p95", "ms", False, "latency"),
    ("latency_p99", "Start latency p99", "ms", False, "latency"),
    ("crash", "Crash recovery: kill -9 → jobs running elsewhere", "s", False, "crash"),
    ("cpu_us_system", "CPU per no-op job, all the system's processes", "µs", False, "noop"),
    ("cpu_us_supervisor", "CPU per no-op job, supervisor only", "µs", False, "noop"),
    ("mem_supervisor_mb", "Memory: supervisor RSS", "MB", False, "memory"),
    ("mem_child_mb", "Memory: RSS per child", "MB", False, "memory"),
    ("mem_worker_mb", "Memory: RSS per worker process", "MB", False, "memory"),
    ("mem_total_mb", "Memory: all the system's processes, at the no-op concurrency", "MB", False, "memory"),
]


def report(h: Harness, command: str, started: dt.datetime, elapsed: float, load: tuple[str, str]) -> str:
    res, names = h.results, list(h.systems)
    peers = [n for n in names if n != OURS]
    sizes = h.sizes
    ref = [v for v in res.get("pgbench", "postgres") if isinstance(v, (int, float))]
    ref10 = [v for v in res.get("pgbench10", "postgres") if isinstance(v, (int, float))]
    m = machine()
    out = []
    out.append(f"# jobsupervisor benchmark — {started:%Y-%m-%d %H:%M} UTC\n" if started.tzinfo else
               f"# jobsupervisor benchmark — {started:%Y-%m-%d %H:%M}\n")
    out.append(f"- Command: `{command}`")
    out.append(f"- Machine: {m['cores']} cores ({m['cpu']}), {m['memory']}, {m['os']}, Python {m['python']}; "
               f"load average {load[0]} before, {load[1]} after")
    try:
        out.append(f"- PostgreSQL {h.server.version()} on the same machine (synchronous_commit={h.server.setting('synchronous_commit')}, "
                   f"shared_buffers={h.server.setting('shared_buffers')}); a fresh database per workload")
    except Exception:  # noqa: BLE001
        pass
    out.append("- Systems: " + ", ".join(f"{n} {s.version()}" for n, s in h.systems.items()))
    out.append(f"- Repeats: {h.args.repeat}; cells are median (min–max); ratios are ours / peer per repeat, "
               f"min–**median**–max; took {elapsed / 60:.1f} min")
    best = h.best.get("noop", {})
    if best:
        out.append("- No-op concurrency chosen: " + "; ".join(f"{n}: {h.systems[n].describe(c)}" for n, c in best.items())
                   + (f" (from {', '.join(f'{n}: ' + ', '.join(f'{k} → {v:,.0f}/s' for k, v in sw.items()) for n, sw in h.sweeps.get('noop', {}).items() if sw)})"
                      if h.sweeps.get("noop") else ""))
    cpu_best = {n: res.get("cpu_best_conf", n) for n in names if res.get("cpu_best_conf", n)}
    if cpu_best:
        out.append("- CPU-bound best: " + "; ".join(f"{n}: {', '.join(sorted(set(v)))}" for n, v in cpu_best.items()))
    slow = sizes.get("noop_slow", {})
    if slow:
        out.append("- Sizes reduced to keep the run short: " + ", ".join(f"{n} drains {k:,} no-op jobs" for n, k in slow.items() if n in names))
    out.append("")
    head = ["Measure"] + names + [f"{OURS} / {p}" for p in peers if OURS in names]
    if ref:
        head.append(f"{OURS}, % of PG limit (1 / 10 jobs per claim)")
    out.append("| " + " | ".join(head) + " |")
    out.append("|" + "---|" * len(head))
    fill = {"batch": sizes["enqueue_batch"], "noop": sizes["noop"]}
    for key, label, unit, higher, workload in ROWS:
        if workload not in h.args.only or key not in res.values:
            continue
        row = [f"{label.format(**fill)} ({unit})"]
        for n in names:
            row.append(cell(res.get(key, n), unit))
        if OURS in names:
            for p in peers:
                row.append(ratio_cell(ratios(res.get(key, OURS), res.get(key, p))) if res.get(key, p) and res.get(key, OURS) else "–")
        if ref:
            if key == "noop" and res.get(key, OURS):
                row.append(ratio_pct(res.get(key, OURS), ref) + " / " + ratio_pct(res.get(key, OURS), ref10))
            else:
                row.append("")
        out.append("| " + " | ".join(row) + " |")
    raw_one, raw_two = res.get("raw_cpu_one", "machine"), res.get("raw_cpu_two", "machine")
    if [v for v in raw_one if v] and [v for v in raw_two if v]:
        row = ["Reference: the CPU-bound burn without a job system, one process → two at once (jobs/s)"]
        row += [f"{cell(raw_one, 'jobs/s')} → {cell(raw_two, 'jobs/s')}, {ratio_cell(ratios(raw_two, raw_one))}"
                if n == OURS else "" for n in names]
        row += [""] * (len(head) - len(row))
        out.append("| " + " | ".join(row) + " |")
    for values, per in ((ref, 1), (ref10, 10)):
        if not values:
            continue
        clients = sorted(set(res.get("pgbench" + ("10" if per == 10 else "") + "_clients", "postgres")))
        row = [f"Reference: pgbench, claim {per} job{'s' if per > 1 else ''} + complete, SKIP LOCKED, "
               f"one transaction each, best at {'/'.join(map(str, clients))} clients (jobs/s)"]
        row += [cell(values, "jobs/s") if n == OURS else "" for n in names]
        row += [""] * (len(head) - len(row))
        out.append("| " + " | ".join(row) + " |")
    out.append("")

    fleet_rows = [(k, res.get(f"fleet_{k}", OURS)) for k in sizes["fleet"] if res.get(f"fleet_{k}", OURS)]
    if "fleet" in h.args.only and fleet_rows:
        out.append(f"Fleet: k supervisors × {sizes['fleet_children']} children on one database, {sizes['fleet_jobs']:,} jobs whose handler "
                   "notes every start in a shared file.\n")
        out.append("| supervisors | jobs/s | ran twice | re-claimed (attempts > 1) | lock waits seen (samples) | jobs per non-empty claim | smallest share of jobs |")
        out.append("|---|---|---|---|---|---|---|")
        for k, runs in fleet_rows:
            rs = [r for r in runs if r]
            if not rs:
                out.append(f"| {k} | failed | | | | | |")
                continue
            out.append(f"| {k} | {cell([r['rate'] for r in rs], 'jobs/s')} | {sum(r['ran_twice'] for r in rs)} "
                       f"(of {sum(r['runs'] for r in rs):,} starts) | {sum(r['reclaimed'] for r in rs)} | "
                       f"{sum(r['lock_waits'] for r in rs)} ({sum(r['lock_samples'] for r in rs)}) | "
                       f"{cell([r['jobs_per_claim'] for r in rs], 'x')} | {min(r['share_min'] for r in rs):.2f} of an even split |")
        out.append("")

    goals = goal_lines(h)
    if goals:
        out.append("Goals of issue #7 (median of the per-repeat ratios):\n")
        out.extend(goals)
        out.append("")
    if res.errors:
        out.append("Failed measurements:\n")
        out.extend(f"- {e}" for e in res.errors)
        out.append("")
    out.append(NOTES)
    return "\n".join(out)


def ratio_pct(values: list[Any], ref: list[float]) -> str:
    vals = [v for v in values if isinstance(v, (int, float))]
    if not vals or not ref:
        return ""
    s = summary(vals)
    r = summary(ref)
    return f"{s[1] / r[1] * 100:.0f} %"


def goal_lines(h: Harness) -> list[str]:
    res = h.results
    lines = []

    def med(rs: list[float]) -> float | None:
        s = summary(rs)
        return s[1] if s else None

    def line(text: str, value: float | None, ok: bool | None, shown: str) -> None:
        mark = "–" if ok is None else ("✅" if ok else "❌")
        lines.append(f"- {mark} {text}: {shown if value is not None else 'not measured'}")

    if "pgqueuer" in h.systems and OURS in h.systems:
        def vs(key: str, factor: float, text: str, higher: bool = True) -> None:
            rs = ratios(res.get(key, OURS), res.get(key, "pgqueuer"))
            v = med(rs)
            ok = None if v is None else (v >= factor if higher else v <= factor)
            line(text, v, ok, f"{v:.2f}×" if v is not None else "")

        if "noop" in h.args.only:
            vs("noop", 1.5, "no-op drain ≥ 1.5× pgqueuer")
        if "cpu" in h.args.only:
            vs("cpu_best", 1.0, "CPU-bound drain ≥ pgqueuer (each at its best concurrency)")
        if "latency" in h.args.only:
            vs("latency_p50", 1.0, "start latency p50 ≤ pgqueuer's (ratio ≤ 1)", higher=False)
        if "enqueue" in h.args.only:
            vs("enqueue_single", 1.0, "enqueue one by one ≥ pgqueuer")
            vs("enqueue_bulk", 1.2, "enqueue in bulk ≥ 1.2× pgqueuer")
    if OURS in h.systems and "cpu" in h.args.only:
        rs = ratios(res.get("cpu_best", OURS), res.get("cpu_one", OURS))
        v = med(rs)
        raw = med(ratios(res.get("raw_cpu_two", "machine"), res.get("raw_cpu_one", "machine")))
        machine_text = f" (the machine itself, same burn without a job system: {raw:.2f}×)" if raw else ""
        line("CPU-bound drain ≥ 1.9× a single child", v, None if v is None else v >= 1.9,
             f"{v:.2f}×{machine_text}" if v else "")
    if OURS in h.systems and "noop" in h.args.only:
        vals = [v for v in res.get("cpu_us_supervisor", OURS) if isinstance(v, (int, float))]
        v = med(vals)
        line("supervisor CPU per job < 100 µs (no-op drain)", v, None if v is None else v < 100, f"{v:,.0f} µs" if v else "")
    return lines


NOTES = """How it is measured (bench/README.md has the details):
- Drains: workers are started with each system's own command and default settings except
  the concurrency, warmed up, then the jobs are inserted in one transaction; the rate is jobs
  over the database's own timestamps from the first claim to the last completion
  (jobsupervisor: locked_at → finished_at; pgqueuer: pgqueuer_log picked → successful;
  procrastinate: procrastinate_events started → succeeded). Worker start-up and the
  harness' polling are not in it.
- Enqueue: each system's public enqueue API from one client process and connection, timed
  around the calls; bulk is lists of jobs in one call (one transaction each).
- CPU-bound jobs burn ~5 ms of pure Python (calibrated on this machine); asyncio peers run
  them on their event loop, so one worker process uses one core.
- Latency: one job at a time on an idle system, 20–40 ms apart, from the enqueue call to the
  first line of the handler (same clock, one machine).
- Crash recovery: worker A runs long jobs, worker B idles; kill -9 of A's main process; time
  until every one of those jobs started again in B. Default detection settings of each system
  (jobsupervisor: rescue of a dead pid on the same host, checked every heartbeat_interval = 5 s;
  pgqueuer: heartbeat_timeout 30 s; procrastinate: the documented periodic retry of stalled jobs,
  every 5 s here, with its default 30 s heartbeat threshold).
- CPU per job: user+system CPU of the system's processes over the drain (psutil), divided by jobs.
- % of PG limit: our median over pgbench's median jobs/s running only the minimal claim
  (SKIP LOCKED) + complete statements, each its own transaction, on jobsupervisor's table and
  indexes: one job per claim (what jobsupervisor does per idle child), and ten per claim and
  per complete (what batching could reach)."""


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny sizes, one try per setting (a smoke run)")
    parser.add_argument("--repeat", type=int, default=None, help="repeats of every workload (default 3; 1 with --quick)")
    parser.add_argument("--only", default=",".join(WORKLOADS), help=f"comma-separated workloads: {', '.join(WORKLOADS)}")
    parser.add_argument("--systems", default=",".join(SYSTEMS), help=f"comma-separated systems: {', '.join(SYSTEMS)}")
    parser.add_argument("--dsn", default=default_dsn(),
                        help="a server DSN with rights to create databases (default: $BENCH_DSN, "
                             "$JOBSUPERVISOR_TEST_DSN, else postgresql://root@127.0.0.1:5432/postgres)")
    parser.add_argument("--out", default=None, help="markdown file to write (default bench/results/DATE.md)")
    parser.add_argument("--keep-dbs", action="store_true", help="do not drop the bench_* databases afterwards")
    parser.add_argument("-v", "--verbose", action="store_true", help="tracebacks of failed measurements")
    args = parser.parse_args(argv)
    args.only = [w.strip() for w in args.only.split(",") if w.strip()]
    args.systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    for w in args.only:
        if w not in WORKLOADS:
            parser.error(f"unknown workload {w!r} (choose from {', '.join(WORKLOADS)})")
    for s in args.systems:
        if s not in SYSTEMS:
            parser.error(f"unknown system {s!r} (choose from {', '.join(SYSTEMS)})")
    if args.repeat is None:
        args.repeat = 1 if args.quick else 3
    started = dt.datetime.now()
    out = Path(args.out) if args.out else BENCH / "results" / f"{started:%Y-%m-%d-%H%M}.md"
    command = "python bench/run.py " + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))

    # A SIGTERM (a CI time-out, kill) unwinds like Ctrl-C: every started worker is stopped and
    # every bench_* database dropped by the finally blocks on the way out.
    signal.signal(signal.SIGTERM, _interrupt)
    load_before = "{:.2f}".format(os.getloadavg()[0])
    t0 = time.monotonic()
    h = Harness(args)
    log(f"working files in {h.run_dir}")
    try:
        h.run()
    except KeyboardInterrupt:
        log("interrupted: reporting what was measured")
    text = report(h, command, started, time.monotonic() - t0, (load_before, "{:.2f}".format(os.getloadavg()[0])))
    print(text)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text + "\n")
    raw = out.with_suffix(".json") if out.suffix == ".md" else out.with_name(out.name + ".json")
    if args.out is None or out.parent.name == "results":
        raw.write_text(json.dumps({"values": h.results.values, "errors": h.results.errors,
                                   "best": h.best, "sweeps": h.sweeps}, indent=1, default=str) + "\n")
    log(f"written to {out}")
    return 1 if h.results.errors else 0


if __name__ == "__main__":
    sys.exit(main())
