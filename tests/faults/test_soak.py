"""Soak: many jobs, two supervisors, faults raining down, then the invariant checker.

Each ``soak`` job (``faults/handlers.py``) writes ``ran`` through ``job.conn`` and then, by a
seeded RNG over (seed, id, attempt), may raise, SIGKILL its own child, exit it, or outlive its
1 s timeout. On top of that a killer thread SIGKILLs a random busy child every 0.7 s, one
supervisor is SIGKILLed at 40 % and started again, an operator cancels 200 waiting jobs, and
1 job in 500 is doomed to fail every attempt. At the end every job must be succeeded, failed
(the doomed, with attempts == max_attempts) or cancelled, and the checker must find nothing.

Size: ``JOBSUPERVISOR_SOAK=long`` runs 120,000 jobs (several minutes); the default runs a
number sized to finish within about a minute on a 2-core CI machine (see README,
"Guarantees and failure modes"). ``JOBSUPERVISOR_SOAK_JOBS=N`` sets any size.
"""

from __future__ import annotations

import json
import os
import random
import signal
import threading
import time

import psutil
import pytest

from conftest import statuses, wait_for
from faults.handlers import SOAK_MAX_ATTEMPTS
from faults.invariants import Expect, assert_invariants
from faults.scenario import config_for, strict_json

from supervisor import admin, enqueue_many

LONG = os.environ.get("JOBSUPERVISOR_SOAK", "").lower() == "long"
DEFAULT_JOBS = 10_000
JOBS = int(os.environ.get("JOBSUPERVISOR_SOAK_JOBS") or (120_000 if LONG else DEFAULT_JOBS))
SEED = int(os.environ.get("JOBSUPERVISOR_SOAK_SEED") or 20261123)
RATES = {"f": 0.02, "k": 0.0005, "x": 0.0005, "t": 0.0003, "w": 0.03}  # raise, SIGKILL self, exit, time out, work
DOOMED_EVERY = 500
TRACK_EVERY = 10  # these also record "started" on a side connection (cancel and attempt checks)
CANCELS = 200
KILL_EVERY = 0.7  # seconds between the killer thread's SIGKILLs

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800 if LONG else 240)]


class Killer(threading.Thread):
    """SIGKILLs one random busy child of the given supervisors every ``every`` seconds."""

    def __init__(self, supervisors: list, every: float, seed: int):
        super().__init__(daemon=True)
        self.supervisors = supervisors  # a list the test may replace items of
        self.every = every
        self.rng = random.Random(seed)
        self.stop = threading.Event()
        self.kills = 0

    def busy(self) -> list[int]:
        pids = []
        for sup in list(self.supervisors):
            for pid in sup.children():
                try:
                    if "child running" in " ".join(psutil.Process(pid).cmdline()):
                        pids.append(pid)
                except psutil.Error:
                    pass
        return pids

    def run(self) -> None:
        while not self.stop.wait(self.every):
            busy = self.busy()
            if busy:
                try:
                    os.kill(self.rng.choice(busy), signal.SIGKILL)
                    self.kills += 1
                except ProcessLookupError:
                    pass


def test_soak_two_supervisors_random_failures_timeouts_and_kills(db, make_config, start_supervisor, record_property):
    payloads = []
    for i in range(JOBS):
        p = {"seed": SEED, **RATES}
        if i % TRACK_EVERY == 0:
            p["track"] = True
        if i % DOOMED_EVERY == DOOMED_EVERY - 1:
            p["doomed"] = True
        payloads.append(p)
    ids: list[int] = []
    for start in range(0, JOBS, 20_000):
        ids += enqueue_many(db, [{"job_type": "soak", "payload": p} for p in payloads[start:start + 20_000]])
    doomed = {ids[i] for i in range(JOBS) if payloads[i].get("doomed")}
    tracked = [ids[i] for i in range(JOBS) if payloads[i].get("track") and ids[i] not in doomed]

    config = config_for(make_config, {"children": {"min": 3, "max": 3, "kill_grace": "0.5s"},
                                      "heartbeat_interval": "1s", "poll_interval": "1s"})
    started = time.monotonic()
    sups = [start_supervisor(config), start_supervisor(config)]
    killer = Killer(sups, KILL_EVERY, SEED)
    killer.start()

    def ended() -> int:
        return db.execute("SELECT count(*) FROM jobs WHERE status IN ('succeeded', 'failed', 'cancelled')"
                          ).fetchone()[0]

    # An operator cancels 200 of the last tracked jobs while they still wait.
    cancel_ids = tracked[-CANCELS:]
    cancelled = admin.act(db, "jobs", "cancel", cancel_ids).changed
    # At 40 % one supervisor is SIGKILLed mid-run, holding jobs, and started again.
    wait_for(lambda: ended() >= 0.4 * JOBS, 600, interval=0.5, message=f"40% done ({statuses(db)})")
    victim = sups[1]
    victim_runner = victim.find("supervisor_started")[0]["runner"]
    # (a job it has held for 20 ms is one of the "work" ones, still running when the kill lands)
    wait_for(lambda: db.execute("SELECT count(*) FROM jobs WHERE status = 'running' AND locked_by LIKE %s"
                                " AND locked_at < now() - interval '20 milliseconds'",
                                (victim_runner + "/%",)).fetchone()[0] >= 1, 30, interval=0.002,
             message="the victim holds a job")
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait_exit(5)
    sups[1] = start_supervisor(config)
    drain_deadline = 600 if not LONG else 1800
    wait_for(lambda: ended() == JOBS, drain_deadline, interval=0.5,
             message=f"every job ended ({statuses(db)})\n{sups[0].tail()}")
    elapsed = time.monotonic() - started
    killer.stop.set()
    killer.join(5)

    for sup in sups:
        sup.signal(signal.SIGTERM)
    for sup in sups:
        assert sup.wait_exit(30) == 0, sup.tail()

    expect = {job_id: Expect(exactly_once="ran", final=frozenset({"succeeded"}), max_attempts=SOAK_MAX_ATTEMPTS)
              for job_id in ids}
    for job_id in tracked:
        expect[job_id] = Expect(exactly_once="ran", started="started", final=frozenset({"succeeded"}),
                                max_attempts=SOAK_MAX_ATTEMPTS)
    for job_id in cancelled:
        expect[job_id] = Expect(exactly_once="ran", started="started", final=frozenset({"cancelled"}),
                                max_attempts=SOAK_MAX_ATTEMPTS)
    for job_id in doomed:
        expect[job_id] = Expect(exactly_once="ran", final=frozenset({"failed"}), max_attempts=SOAK_MAX_ATTEMPTS)
    report = assert_invariants(db, expect)
    assert db.execute("SELECT count(*) FROM jobs WHERE id = ANY(%s::bigint[]) AND attempts <> %s",
                      (list(doomed), SOAK_MAX_ATTEMPTS)).fetchone()[0] == 0

    # What was injected really happened, and the logs stayed one JSON object per line.
    errors = dict(db.execute("SELECT CASE WHEN last_error LIKE 'timed out%%' THEN 'timeout'"
                             " WHEN last_error LIKE 'worker process died%%' THEN 'died'"
                             " WHEN last_error LIKE 'recovered:%%' THEN 'recovered'"
                             " WHEN last_error LIKE 'Traceback%%' THEN 'raised' ELSE 'other' END, count(*)"
                             " FROM jobs WHERE last_error IS NOT NULL GROUP BY 1").fetchall())
    retried = db.execute("SELECT count(*) FROM jobs WHERE attempts > 1").fetchone()[0]
    lines = 0
    events: dict[str, int] = {}
    for sup in [*sups, victim]:
        for line in sup.log_path.read_bytes().splitlines():
            event = strict_json(line).get("event")
            events[event] = events.get(event, 0) + 1
            lines += 1
    summary = {"jobs": JOBS, "seconds": round(elapsed, 1), "jobs_per_second": round(JOBS / elapsed),
               "by_status": dict(report.by_status), "retried": retried, "last_errors": errors,
               "external_kills": killer.kills, "cancelled": len(cancelled), "log_lines": lines,
               "recovered": events.get("job_recovered", 0), "worker_died": events.get("job_worker_died", 0),
               "timed_out": events.get("job_timed_out", 0)}
    record_property("soak", summary)
    print("soak:", json.dumps(summary))
    assert killer.kills >= 5 and len(cancelled) >= CANCELS * 0.9
    assert events.get("job_worker_died", 0) > 0 and events.get("job_recovered", 0) > 0 and errors.get("raised", 0) > 0
    assert report.by_status["failed"] == len(doomed)
