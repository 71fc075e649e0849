"""Faults injected into a running system, each ending with the invariant checker.

The real ``jobsupervisor`` command, real child processes running ``faults/handlers.py``, a
real Postgres. Every handler records ``started`` on its own connection and ``ran`` through
``job.conn`` (see ``faults/handlers.py``), so after each fault the checker can prove that
nothing was lost, nothing runs without a live runner, writes through ``job.conn`` happened
exactly once, attempts stayed within max_attempts and nothing ran after a cancel.

What is already proven elsewhere is not repeated: single crashes and timeouts
(``test_runtime.py``), one kill -9 and one pg_terminate_backend round (``test_signals.py``).
Here the faults come harder (repeatedly, under load, at the worst moment) and every test ends
with :func:`faults.invariants.assert_invariants`.
"""

from __future__ import annotations

import datetime as dt
import os
import signal
import time

import psycopg
import pytest

from conftest import job_row, statuses, wait_for
from faults.invariants import Expect, assert_invariants, check
from faults.scenario import (DatabaseAway, busy_children, config_for, effects, local_cluster, restart_cluster,
                             serve_one, terminate_backends, wait_all_ended, wait_gone, wait_started, wait_status)

from supervisor import enqueue, enqueue_many

pytestmark = pytest.mark.timeout(90)

TRACKED = Expect(exactly_once="ran", started="started")  # what every faults.handlers job promises


def chaos_jobs(db, n: int, **payload) -> list[int]:
    return list(enqueue_many(db, [{"job_type": "chaos", "payload": dict(payload, n=i)} for i in range(n)]))


# --- the checker itself -------------------------------------------------------------------------
def test_invariant_checker_names_every_kind_of_violation(db):
    """A checker that cannot fail proves nothing: plant one of each violation by hand."""
    now = db.execute("SELECT now()").fetchone()[0]

    def add(status, attempts=1, **cols) -> int:
        cols = {"job_type": "chaos", "status": status, "attempts": attempts, **cols}
        names = ", ".join(cols)
        marks = ", ".join(f"%({k})s" for k in cols)
        return db.execute(f"INSERT INTO jobs ({names}) VALUES ({marks}) RETURNING id", cols).fetchone()[0]

    def effect(job_id, attempt, kind, at="clock_timestamp()"):
        db.execute(f"INSERT INTO effects (job_id, attempt, kind, pid, at) VALUES (%s, %s, %s, 1, {at})",
                   (job_id, attempt, kind))

    good = add("succeeded", 2, finished_at=now, locked_by="h:1:t/2")
    effect(good, 1, "started"), effect(good, 2, "started"), effect(good, 2, "ran")
    twice = add("succeeded", 2, finished_at=now, locked_by="h:1:t/2")
    effect(twice, 1, "ran"), effect(twice, 2, "ran"), effect(twice, 2, "started")
    stale_write = add("succeeded", 2, finished_at=now, locked_by="h:1:t/2")
    effect(stale_write, 1, "ran"), effect(stale_write, 2, "started")
    failed_wrote = add("failed", 3, finished_at=now, last_error="boom", locked_by="h:1:t/2")
    effect(failed_wrote, 3, "ran")
    too_many = add("failed", 4, max_attempts=3, finished_at=now, last_error="boom")
    orphan = add("running", 1, locked_by="nohost:1:dead/2", locked_at=now)
    cancelled = add("cancelled", 0, finished_at=now - dt.timedelta(minutes=1))
    effect(cancelled, 1, "started")
    silent_retry = add("retry", 1)
    unsettled = add("queued", 0)
    uncounted = add("succeeded", 1, finished_at=now, locked_by="h:1:t/2")
    effect(uncounted, 1, "ran"), effect(uncounted, 1, "started"), effect(uncounted, 2, "started")
    lost = 10**12

    report = check(db, [good, twice, stale_write, failed_wrote, too_many, orphan, cancelled, silent_retry,
                        unsettled, uncounted, lost], default=TRACKED)
    text = report.describe(limit=100)
    expected = {
        twice: "2 'ran' effects written through job.conn",
        stale_write: "committed by attempt 1, not by the attempt that succeeded (2)",
        failed_wrote: "did not succeed, yet 1 'ran' effect(s)",
        too_many: "4 attempts exceed max_attempts 3",
        orphan: "which is not registered",
        cancelled: "after the job was cancelled",
        silent_retry: "retry without last_error",
        unsettled: "should have ended",
        uncounted: "attempts [2] began but the row counts only 1",
    }
    for job_id, needle in expected.items():
        assert any(f"job {job_id} " in v and needle in v for v in report.violations), (job_id, needle, text)
    assert f"gone from the table: [{lost}]" in text
    assert not any(f"job {good} " in v for v in report.violations), text
    with pytest.raises(AssertionError, match="invariant violation"):
        assert_invariants(db, [twice])


# --- Postgres itself restarted ------------------------------------------------------------------
@pytest.mark.exclusive
def test_postgres_restarted_mid_run_loses_nothing_and_runs_writes_once(db, dsn, server_dsn, make_config,
                                                                        start_supervisor):
    """pg_ctlcluster restart (fast: every session cut, the server gone for a moment) while jobs
    run, commit and wait: every connection of the supervisor and its children is rebuilt."""
    cluster = local_cluster(dsn)
    if isinstance(cluster, str):
        pytest.skip(cluster)
    sup = start_supervisor(config_for(make_config, {"children": {"min": 3, "max": 3}}))
    serve_one(db, sup)
    ids = chaos_jobs(db, 150, sleep=0.02) + chaos_jobs(db, 6, sleep=1.5)
    wait_for(lambda: db.execute("SELECT count(*) FROM jobs WHERE status = 'succeeded'").fetchone()[0] >= 20,
             message="jobs flowing")
    down = restart_cluster(cluster, server_dsn)
    db = psycopg.connect(dsn, autocommit=True)  # ours was cut as well
    try:
        more = chaos_jobs(db, 50)  # enqueued after the restart: NOTIFY must work again
        sup.wait_event("db_reconnected", connection="main", timeout=20)
        sup.wait_event("db_reconnected", connection="listen", timeout=20)
        wait_all_ended(db, ids + more, 60, sup)
        report = assert_invariants(db, ids + more, default=TRACKED)
        assert report.by_status == {"succeeded": len(ids) + len(more)}, report.by_status
        assert sup.proc.poll() is None
        print(f"server down {down:.1f}s; {report.by_status}")
    finally:
        db.close()


# --- connections cut, again and again ------------------------------------------------------------
def test_every_connection_terminated_repeatedly_mid_run(db, make_config, start_supervisor):
    """pg_terminate_backend on every session of the database every 0.3 s for 6 s while jobs
    claim, write through job.conn and commit: cuts land mid-claim, mid-handler, mid-commit."""
    sup = start_supervisor(config_for(make_config, {"children": {"min": 3, "max": 3}}))
    serve_one(db, sup)
    ids = chaos_jobs(db, 400, sleep=0.01) + chaos_jobs(db, 20, times=1, how="raise")
    cuts = 0
    deadline = time.monotonic() + 6
    while time.monotonic() < deadline:
        cuts += terminate_backends(db)
        time.sleep(0.3)
    wait_all_ended(db, ids, 60, sup)
    report = assert_invariants(db, ids, default=TRACKED)
    assert report.by_status == {"succeeded": len(ids)}, report.by_status
    assert cuts >= 20
    assert len(sup.find("db_reconnected", connection="main")) >= 3
    assert sup.proc.poll() is None and sup.find("<not json>") == []


def test_listen_connection_alone_cut_repeatedly_jobs_enqueued_meanwhile_start_at_reconnect(
        db, make_config, start_supervisor):
    """Only the LISTEN session is cut, five times; a job enqueued while it is down must start
    when it reconnects (the missed NOTIFY is made up for), not at the next poll (60 s away)."""
    sup = start_supervisor(config_for(make_config, {"poll_interval": "60s"}))
    serve_one(db, sup)
    ids = []
    for round_ in range(1, 6):
        assert terminate_backends(db, "application_name = 'jobsupervisor-listen'") == 1
        cut = time.monotonic()
        job_id = enqueue(db, "chaos")  # its NOTIFY has no listener
        ids.append(job_id)
        wait_status(db, job_id, "succeeded", timeout=10)
        assert time.monotonic() - cut < 8, "waited for the poll instead of the reconnect"
        sup.wait_event("db_reconnected", connection="listen", count=round_, timeout=10)
    started = time.monotonic()
    job_id = enqueue(db, "chaos")  # and NOTIFY is back: milliseconds, not the poll
    ids.append(job_id)
    wait_for(lambda: job_row(db, job_id)["status"] != "queued", 2, message="claimed via NOTIFY")
    assert time.monotonic() - started < 1.0
    wait_status(db, job_id, "succeeded")
    assert not sup.find("db_reconnected", connection="main")
    assert_invariants(db, ids, default=TRACKED)


# --- children dying every way, after writing through job.conn --------------------------------------
@pytest.mark.parametrize("how, reason", [
    ("sigkill", "worker process died: SIGKILL"),
    ("segfault", "worker process died: SIGSEGV"),
    ("exit", "worker process died: exit status 7"),
    ("abort", "worker process died: SIGABRT"),
])
def test_child_dying_after_writing_through_job_conn_leaves_no_write_and_retries(
        db, make_config, start_supervisor, how, reason):
    sup = start_supervisor(config_for(make_config, {"children": {"min": 2, "max": 2}}))
    once = chaos_jobs(db, 3, times=1, how=how)  # dies on attempt 1 only
    always = chaos_jobs(db, 1, times=99, how=how)  # dies every time: must end failed, not loop
    ordinary = chaos_jobs(db, 20)
    wait_all_ended(db, once + always + ordinary, 40, sup)
    expect = {job_id: TRACKED for job_id in once + ordinary}
    expect[always[0]] = Expect(exactly_once="ran", started="started", final=frozenset({"failed"}))
    assert_invariants(db, expect)
    for job_id in once:
        row = job_row(db, job_id)
        assert (row["status"], row["attempts"], row["last_error"]) == ("succeeded", 2, reason)
    row = job_row(db, always[0])
    assert (row["status"], row["attempts"], row["last_error"]) == ("failed", 3, reason)
    assert [a for a, _, _ in effects(db, always[0], "started")] == [1, 2, 3]
    assert len(sup.find("job_worker_died")) == 6
    assert sup.proc.poll() is None


def test_child_sigkilled_from_outside_at_random_moments(db, make_config, start_supervisor):
    """A killer SIGKILLs whichever child is busy, 15 times, while short jobs flow."""
    sup = start_supervisor(config_for(make_config, {"children": {"min": 3, "max": 3}}))
    serve_one(db, sup)
    ids = chaos_jobs(db, 300, sleep=0.05)
    killed = 0
    while killed < 15 and db.execute("SELECT count(*) FROM jobs WHERE status IN ('queued','retry','running')"
                                     " AND id = ANY(%s::bigint[])", (ids,)).fetchone()[0] > 30:
        for pid in busy_children(sup)[:1]:
            os.kill(pid, signal.SIGKILL)
            killed += 1
        time.sleep(0.15)
    wait_all_ended(db, ids, 60, sup)
    assert killed >= 10
    report = assert_invariants(db, ids, default=TRACKED)
    assert report.by_status == {"succeeded": len(ids)}
    assert len(sup.find("job_worker_died")) >= killed // 2  # a kill may land just after a job ended


# --- hung children ------------------------------------------------------------------------------
def test_child_sigstopped_past_its_timeout_is_sigkilled_and_the_job_retried(db, make_config, start_supervisor):
    """A stopped process cannot act on SIGTERM: the timeout must escalate to SIGKILL."""
    sup = start_supervisor(config_for(make_config, {"children": {"min": 1, "max": 2}}))
    job_id = enqueue(db, "hold_timed", {"release": "/nonexistent", "seconds": 60})  # timeout 2s
    pid = wait_started(db, job_id, 1)
    os.kill(pid, signal.SIGSTOP)
    wait_gone(pid, 10)
    exited = sup.wait_event("child_exited", child_pid=pid)
    assert (exited["status"], exited["reason"]) == ("SIGKILL", "timeout")
    row = wait_status(db, job_id, "succeeded")
    assert row["attempts"] == 2 and row["last_error"] == "timed out after 2s"
    assert_invariants(db, [job_id], default=TRACKED)


def test_child_sigstopped_without_timeout_is_recovered_at_lock_timeout_and_killed(db, make_config,
                                                                                  start_supervisor):
    """No timeout, and the child hangs: lock_timeout is the backstop. The job is recovered (the
    attempt counted), runs again elsewhere, and the hung child is killed, not left stopped."""
    sup = start_supervisor(config_for(make_config, {"children": {"min": 2, "max": 2}, "lock_timeout": "2s"}))
    job_id = enqueue(db, "hold", {"release": "/nonexistent", "seconds": 60})
    pid = wait_started(db, job_id, 1)
    os.kill(pid, signal.SIGSTOP)
    recovered = sup.wait_event("job_recovered", job_id=job_id, timeout=15)
    assert "lock_timeout" in recovered["reason"], recovered
    row = wait_status(db, job_id, "succeeded")
    assert row["attempts"] == 2 and "recovered" in row["last_error"]
    wait_gone(pid, 10)
    assert sup.wait_event("child_exited", child_pid=pid)["reason"] == "lock_lost"
    assert_invariants(db, [job_id], default=TRACKED)


def test_idle_child_sigstopped_gets_a_job_which_times_out_and_runs_elsewhere(db, make_config, start_supervisor):
    sup = start_supervisor(config_for(make_config, {"children": {"min": 1, "max": 1}}))
    serve_one(db, sup)
    (idle,) = sup.children()
    os.kill(idle, signal.SIGSTOP)
    job_id = enqueue(db, "chaos_timed")  # timeout 1s; handed to the stopped child
    wait_gone(idle, 10)
    row = wait_status(db, job_id, "succeeded")
    assert row["attempts"] == 2 and row["last_error"] == "timed out after 1s"
    assert [a for a, _, _ in effects(db, job_id, "started")] == [2]  # attempt 1 never began
    assert_invariants(db, [job_id], default=TRACKED)


# --- memory ---------------------------------------------------------------------------------------
def test_handler_exhausting_memory_fails_the_attempt_with_memoryerror_and_the_child_goes_on(
        db, make_config, start_supervisor):
    sup = start_supervisor(config_for(make_config, {"children": {"min": 1, "max": 1}}))
    job_id = enqueue(db, "chaos", {"times": 1, "how": "memory"})
    row = wait_status(db, job_id, "succeeded", timeout=30)
    assert row["attempts"] == 2
    assert "MemoryError" in row["last_error"] and len(row["last_error"]) < 70_000
    assert sup.find("job_worker_died") == []  # handled as the exception it is
    after = enqueue(db, "chaos")
    wait_status(db, after, "succeeded")
    assert_invariants(db, [job_id, after], default=TRACKED)


def test_child_bloated_by_a_job_is_recycled_at_max_memory(db, make_config, start_supervisor):
    sup = start_supervisor(config_for(make_config, {"children": {"min": 1, "max": 1, "max_memory": "150MB"}}))
    first = serve_one(db, sup)
    (child,) = sup.children()
    job_id = enqueue(db, "chaos", {"times": 1, "how": "hog", "mb": 256})
    wait_status(db, job_id, "succeeded")
    recycled = sup.wait_event("child_recycled", child_pid=child)
    assert recycled["reason"] == "max_memory" and recycled["rss"] > 150 * 2**20
    wait_gone(child)
    after = enqueue(db, "chaos")
    wait_status(db, after, "succeeded")
    assert_invariants(db, [first, job_id, after], default=Expect())


# --- the supervisor killed mid-claim ---------------------------------------------------------------
def test_supervisor_sigkilled_mid_claim_then_restarted_recovers_what_the_claim_took(
        db, dsn, make_config, start_supervisor):
    """The claim is held on a table lock, the supervisor is SIGKILLed while its claim waits,
    then the lock is released: the orphaned claim commits on the server for a runner that no
    longer exists. The next supervisor must recover those jobs (attempt counted) at once."""
    config = config_for(make_config, {"children": {"min": 2, "max": 2}, "heartbeat_interval": "30s",
                                      "poll_interval": "0.3s"})
    sup = start_supervisor(config)
    serve_one(db, sup)
    runner = sup.find("supervisor_started")[0]["runner"]
    locker = psycopg.connect(dsn)
    try:
        locker.execute("LOCK TABLE jobs IN EXCLUSIVE MODE")  # reads go on, claims wait
        ids = list(enqueue_many(locker, [{"job_type": "chaos", "payload": {"n": i}} for i in range(6)]))
        waiting = wait_for(lambda: db.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
            " AND query LIKE %s", ("%SET status = 'running'%",)).fetchall(), 10,
            message=f"the supervisor's claim waiting on the lock\n{sup.tail()}")
        os.kill(sup.pid, signal.SIGKILL)
        assert sup.wait_exit(5) == -signal.SIGKILL
        locker.commit()  # the jobs appear and the orphaned claim goes ahead
    finally:
        locker.close()
    wait_for(lambda: not db.execute("SELECT 1 FROM pg_stat_activity WHERE pid = %s", (waiting[0][0],)).fetchone(),
             10, message="the orphaned claim's session ended")
    orphaned = [i for (i,) in db.execute("SELECT id FROM jobs WHERE status = 'running' AND locked_by LIKE %s",
                                         (runner + "/%",)).fetchall()]
    assert orphaned, f"the orphaned claim should have taken a job per idle child: {statuses(db)}"

    restarted = time.monotonic()
    sup2 = start_supervisor(config)
    for job_id in orphaned:
        assert "process gone" in sup2.wait_event("job_recovered", job_id=job_id, timeout=10)["reason"]
    assert time.monotonic() - restarted < 8  # not after a heartbeat timeout or lock_timeout
    wait_all_ended(db, ids, 20, sup2)
    assert_invariants(db, ids, default=TRACKED)
    for job_id in orphaned:
        row = job_row(db, job_id)
        assert row["attempts"] == 2 and "recovered" in row["last_error"]
        assert [a for a, _, _ in effects(db, job_id, "started")] == [2]  # attempt 1 never ran


# --- a deadline reached while the database is down -------------------------------------------------
def test_handler_deadline_reached_while_the_database_is_down(db, server_dsn, make_config, start_supervisor):
    """The timeout fires while the database is unreachable: the child is killed on time anyway
    (the local clock, not the database, decides), the outcome waits in memory, and is written
    when the database is back; the job is then retried and succeeds once."""
    sup = start_supervisor(config_for(make_config, {"children": {"min": 1, "max": 1}}))
    serve_one(db, sup)
    job_id = enqueue(db, "chaos_timed", {"times": 1, "how": "sleep", "seconds": 60})  # timeout 1s
    pid = wait_started(db, job_id, 1)
    with DatabaseAway(db, server_dsn) as away:
        killed = time.monotonic()
        wait_gone(pid, 6)
        assert time.monotonic() - killed < 4  # the deadline (1 s) + kill_grace (1 s), not "when the db is back"
        timed_out = sup.wait_event("job_timed_out", job_id=job_id)
        assert timed_out["error"] == "timed out after 1s"
        assert job_row(db, job_id)["status"] == "running"  # not written yet: nowhere to write it
        assert sup.find("db_connection_lost", connection="main")
        time.sleep(1.0)
        away.cut_again()
    row = wait_status(db, job_id, "succeeded", timeout=20)
    assert row["attempts"] == 2 and row["last_error"] == "timed out after 1s"
    assert_invariants(db, [job_id], default=TRACKED)
    assert sup.find("outcomes_not_recorded") == [] and sup.proc.poll() is None


# --- two supervisors -----------------------------------------------------------------------------
def test_two_supervisors_one_sigkilled_under_load(db, make_config, start_supervisor):
    config = config_for(make_config, {"children": {"min": 2, "max": 2}})
    sup_a, sup_b = start_supervisor(config), start_supervisor(config)
    serve_one(db, sup_a)
    runner_b = sup_b.find("supervisor_started")[0]["runner"]
    ids = chaos_jobs(db, 400, sleep=0.05)
    wait_for(lambda: len(sup_b.find("job_succeeded")) >= 40, 30, message="B is working")
    wait_for(lambda: db.execute("SELECT count(*) FROM jobs WHERE status = 'running' AND locked_by LIKE %s",
                                (runner_b + "/%",)).fetchone()[0] == 2, 10, interval=0.002,
             message="B holds two jobs")
    os.kill(sup_b.pid, signal.SIGKILL)
    sup_b.wait_exit(5)
    wait_all_ended(db, ids, 60, sup_a)
    report = assert_invariants(db, ids, default=TRACKED)
    assert report.by_status == {"succeeded": len(ids)}
    recovered = {e["job_id"] for e in sup_a.find("job_recovered")}
    assert recovered, "B died holding jobs; A recovered none"
    assert all(job_row(db, job_id)["attempts"] == 2 for job_id in recovered)


def test_two_supervisors_one_frozen_past_its_heartbeat_is_fenced_off(db, make_config, start_supervisor, tmp_path):
    """B is SIGSTOPped (a hung machine) while its children hold jobs. A sees B's heartbeat go
    stale, recovers B's jobs and runs them. B's children, still alive, then finish: their
    completions are fenced off (they no longer hold the lock), so nothing is written twice.
    Thawed, B carries on."""
    config = config_for(make_config, {"children": {"min": 2, "max": 2}})
    sup_a, sup_b = start_supervisor(config), start_supervisor(config)
    runner_b = sup_b.find("supervisor_started")[0]["runner"]
    wait_for(lambda: db.execute("SELECT count(*) FROM jobs_runners WHERE 'hold' = ANY(job_types)").fetchone()[0] == 2,
             message="both runners know their job types")
    release = {n: tmp_path / f"release{n}" for n in range(4)}
    held = list(enqueue_many(db, [{"job_type": "hold", "payload": {"release": str(release[n])}} for n in range(4)]))
    for job_id in held:
        wait_started(db, job_id, 1)
    b_jobs = [i for (i,) in db.execute("SELECT id FROM jobs WHERE id = ANY(%s::bigint[]) AND locked_by LIKE %s",
                                       (held, runner_b + "/%")).fetchall()]
    assert len(b_jobs) == 2
    for n, job_id in enumerate(held):
        if job_id not in b_jobs:
            release[n].touch()  # A's own jobs finish: A has room for B's
    os.kill(sup_b.pid, signal.SIGSTOP)
    try:
        for job_id in b_jobs:
            recovered = sup_a.wait_event("job_recovered", job_id=job_id, timeout=20)
            assert "stopped sending heartbeats" in recovered["reason"], recovered
        for job_id in b_jobs:
            wait_status(db, job_id, "succeeded")  # attempt 2, on A
        for path in release.values():
            path.touch()  # B's children finish their attempt 1 now: too late
        time.sleep(1.0)
    finally:
        os.kill(sup_b.pid, signal.SIGCONT)
    for job_id in b_jobs:
        sup_b.wait_event("job_lock_lost", job_id=job_id, timeout=10)
    more = chaos_jobs(db, 60)
    wait_all_ended(db, held + more, 20, sup_a)
    assert sup_b.proc.poll() is None
    report = assert_invariants(db, held + more, default=TRACKED)
    assert report.by_status == {"succeeded": len(held) + len(more)}
    for job_id in b_jobs:
        assert job_row(db, job_id)["attempts"] == 2
        assert [a for a, _, _ in effects(db, job_id, "started")] == [1, 2]
    wait_for(lambda: sup_b.find("job_succeeded"), 10, message="B, thawed, runs jobs again")
