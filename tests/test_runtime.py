"""The runtime end to end: the supervisor, its children and Postgres, all real.

Every test starts the real ``jobsupervisor`` command, lets real child processes run the
handlers of ``tests/jobhandlers.py`` against a fresh database, and asserts on rows and on
the JSON log. Nothing is mocked; every wait is a condition with a deadline.
(Shutdown, signals to the supervisor, several supervisors and database outages live in
``test_signals.py``.)
"""

from __future__ import annotations

import json
import os
import signal
import socket
import time

import psutil
import pytest
from conftest import job_row, run_cli, statuses, wait_for

from supervisor import enqueue, enqueue_many

pytestmark = pytest.mark.timeout(60)


# --- helpers ---------------------------------------------------------------------------------
def wait_status(db, job_id: int, *wanted: str, timeout: float = 15.0) -> dict:
    return wait_for(lambda: (row := job_row(db, job_id))["status"] in wanted and row,
                    timeout, message=f"job {job_id} {'/'.join(wanted)}; it is {job_row(db, job_id)}")


def effects(db, job_id: int, kind: str | None = None) -> list[tuple]:
    """(attempt, kind, pid, at) rows the handler wrote for ``job_id``, oldest first."""
    return db.execute("SELECT attempt, kind, pid, at FROM effects WHERE job_id = %s"
                      " AND (%s::text IS NULL OR kind = %s::text) ORDER BY id",
                      (job_id, kind, kind)).fetchall()


def child_pid_of(locked_by: str) -> int:
    """locked_by is ``host:supervisor_pid:token/child_pid``."""
    return int(locked_by.rsplit("/", 1)[1])


def started_pid(db, job_id: int, attempt: int) -> int:
    """The child running ``attempt`` of a handler that records ``started`` first."""
    rows = wait_for(lambda: [r for r in effects(db, job_id, "started") if r[0] == attempt],
                    message=f"job {job_id} attempt {attempt} started")
    return rows[0][2]


def wait_pid_gone(pid: int, timeout: float = 10.0) -> None:
    def gone() -> bool:
        try:
            return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return True

    wait_for(gone, timeout, message=f"process {pid} gone")


def serving(db, sup) -> None:
    """The supervisor has a ready child and an idle loop: a job ran end to end."""
    job_id = enqueue(db, "noop")
    wait_status(db, job_id, "succeeded")
    sup.wait_event("job_succeeded", job_id=job_id)


def keeps_serving(db, sup) -> None:
    """After a failure the supervisor still runs new jobs (a replacement child if needed)."""
    job_id = enqueue(db, "noop")
    wait_status(db, job_id, "succeeded")
    assert sup.proc.poll() is None


def seconds(delta) -> float:
    return delta.total_seconds()


# --- §2 transitions --------------------------------------------------------------------------
def test_queued_job_runs_and_succeeds_with_one_attempt(db, make_config, start_supervisor):
    sup = start_supervisor(make_config())
    job_id = enqueue(db, "sleep", {"seconds": 0.5})
    assert job_row(db, job_id)["status"] == "queued"
    running = wait_status(db, job_id, "running", "succeeded")
    if running["status"] == "running":
        assert running["attempts"] == 1
        assert running["locked_at"] is not None
        assert running["locked_by"].startswith(f"{socket.gethostname()}:{sup.pid}:")
        assert psutil.pid_exists(child_pid_of(running["locked_by"]))
    done = wait_status(db, job_id, "succeeded")
    assert done["attempts"] == 1 and done["last_error"] is None and done["finished_at"] is not None
    assert [r[1] for r in effects(db, job_id)] == ["started", "finished"]
    event = sup.wait_event("job_succeeded", job_id=job_id)
    assert event["job_type"] == "sleep" and event["attempt"] == 1 and event["duration_ms"] >= 400
    assert len(sup.find("job_started", job_id=job_id)) == 1


def test_failed_attempt_is_retried_after_backoff_then_succeeds(db, make_config, start_supervisor):
    # poll 60s: the retry starts because the loop wakes at its run_at, not because of a poll.
    sup = start_supervisor(make_config({"poll_interval": "60s"}))
    serving(db, sup)
    job_id = enqueue(db, "fail_then_ok", {"fail_times": 1})
    retry = wait_status(db, job_id, "retry", "succeeded")
    assert retry["status"] == "retry", "the retry was not seen: backoff_delay 1s not honoured"
    assert retry["attempts"] == 1 and retry["finished_at"] is None and retry["locked_by"] is None
    assert "RuntimeError: failing attempt 1" in retry["last_error"]
    assert 0.9 <= seconds(retry["run_at"] - retry["updated_at"]) <= 1.5
    done = wait_status(db, job_id, "succeeded")
    assert done["attempts"] == 2
    # The second attempt was claimed no earlier than the backoff, and promptly after it.
    assert done["locked_at"] >= retry["run_at"]
    assert seconds(done["locked_at"] - retry["updated_at"]) >= 1.0
    assert seconds(done["locked_at"] - retry["run_at"]) < 1.5
    assert [(r[0], r[1]) for r in effects(db, job_id)] == [(2, "ok")]
    scheduled = sup.wait_event("job_retry_scheduled", job_id=job_id)
    assert scheduled["attempt"] == 1 and "failing attempt 1" in scheduled["error"]
    sup.wait_event("job_succeeded", job_id=job_id)


def test_job_fails_with_traceback_once_attempts_are_used_up(db, make_config, start_supervisor):
    sup = start_supervisor(make_config())
    job_id = enqueue(db, "fail", {"tag": "xyzzy"})  # max_attempts 3, backoff 0s
    row = wait_status(db, job_id, "failed")
    assert row["attempts"] == 3
    assert row["finished_at"] is not None
    error = row["last_error"]
    assert "Traceback (most recent call last)" in error
    assert "ValueError: boom xyzzy" in error
    assert "jobhandlers.py" in error  # the frame of the handler that raised
    sup.wait_event("job_failed", job_id=job_id)
    assert len(sup.find("job_retry_scheduled", job_id=job_id)) == 2
    assert len(sup.find("job_started", job_id=job_id)) == 3
    # It stays failed: nothing claims it again.
    keeps_serving(db, sup)
    assert job_row(db, job_id)["status"] == "failed"


def test_handler_raising_system_exit_is_a_failure_not_a_dead_child(db, make_config, start_supervisor):
    sup = start_supervisor(make_config({"children": {"min": 1, "max": 1}}))
    serving(db, sup)
    job_id = enqueue(db, "exit_handler")  # raises SystemExit(3), max_attempts 1
    row = wait_status(db, job_id, "failed")
    assert row["attempts"] == 1
    assert "SystemExit: 3" in row["last_error"] and "Traceback" in row["last_error"]
    after = enqueue(db, "noop")
    done = wait_status(db, after, "succeeded")
    # The same child ran both: its loop survived the handler's SystemExit.
    assert child_pid_of(done["locked_by"]) == child_pid_of(row["locked_by"])
    assert sup.find("child_exited") == []
    assert len(sup.find("child_started")) == 1


# --- throughput and exactly-once -------------------------------------------------------------
def test_thousand_jobs_each_run_exactly_once_with_a_growing_pool(db, make_config, start_supervisor):
    # 5 ms each: a backlog two children need seconds for, so the pool grows while most of it
    # is still in the table (quicker jobs are all claimed ahead before a new child is up).
    ids = enqueue_many(db, [{"job_type": "effect", "payload": {"n": n, "sleep": 0.005}} for n in range(1000)])
    assert len(set(ids)) == 1000
    sup = start_supervisor(make_config({"children": {"min": 2, "max": 4}}))
    wait_for(lambda: statuses(db) == {"succeeded": 1000}, timeout=45,
             message=f"1000 jobs succeeded; {statuses(db)}\n{sup.tail()}")
    per_job = dict(db.execute("SELECT job_id, count(*) FROM effects GROUP BY job_id").fetchall())
    assert set(per_job) == set(ids)
    assert set(per_job.values()) == {1}
    assert db.execute("SELECT count(*) FROM jobs WHERE attempts <> 1").fetchone()[0] == 0
    pids = {pid for (pid,) in db.execute("SELECT DISTINCT pid FROM effects").fetchall()}
    assert 3 <= len(pids) <= 4, pids  # the pool grew beyond min, never beyond max
    sup.wait_event("job_succeeded", count=1000)  # the last "done" may still be on its way
    assert len(sup.find("job_started")) == 1000
    # Regression: the heartbeat's lock check saw jobs a child had just completed (no longer
    # 'running') as lost and killed healthy children every heartbeat under load.
    assert sup.find("job_lock_lost") == [] and sup.find("child_exited") == []
    assert sup.find("<not json>") == []


def test_pool_grows_for_waiting_jobs_up_to_max(db, make_config, start_supervisor):
    sup = start_supervisor(make_config({"children": {"min": 1, "max": 4}}))
    serving(db, sup)
    ids = enqueue_many(db, [{"job_type": "sleep", "payload": {"seconds": 1.5, "n": n}} for n in range(5)])
    # Four run at once (the pool grew to max), never more.
    wait_for(lambda: db.execute("SELECT count(*) FROM jobs WHERE status = 'running'").fetchone()[0] == 4,
             message=f"four running\n{sup.tail()}")
    wait_for(lambda: statuses(db).get("succeeded") == 6, timeout=20, message="all ran")
    assert len(sup.find("child_started")) == 4
    assert len({r[2] for job_id in ids for r in effects(db, job_id, "started")}) == 4


def test_one_long_job_does_not_grow_the_pool(db, make_config, start_supervisor):
    # Regression: after a full claim the loop started a spare child on every tick while all
    # children were busy (each output line is a tick): up to MAX_BOOTING idle children for one job.
    sup = start_supervisor(make_config({"children": {"min": 1, "max": 4}}))
    serving(db, sup)
    job_id = enqueue(db, "chatty", {"lines": 100, "every": 0.01})
    wait_status(db, job_id, "succeeded")
    assert sup.find("child_output", line="chatty line 99")  # the loop did wake for its output
    assert len(sup.find("child_started")) == 1, sup.tail()
    keeps_serving(db, sup)


# --- waking up on time -----------------------------------------------------------------------
def test_job_inserted_by_plain_sql_starts_via_notify_not_poll(db, make_config, start_supervisor):
    sup = start_supervisor(make_config({"poll_interval": "60s"}))
    serving(db, sup)  # the first poll is behind us; the next one is a minute away
    for n in range(3):
        started = time.monotonic()
        job_id = db.execute("INSERT INTO jobs (job_type, payload) VALUES ('noop', %s) RETURNING id",
                            (json.dumps({"n": n}),)).fetchone()[0]
        row = wait_status(db, job_id, "succeeded", timeout=10)
        assert time.monotonic() - started < 3.0
        assert seconds(row["locked_at"] - row["created_at"]) < 3.0


def test_scheduled_job_starts_at_its_run_at_not_at_the_next_poll(db, make_config, start_supervisor):
    # One job scheduled before the supervisor starts (found by its first look at the table) and
    # one scheduled while it idles (announced by NOTIFY with its run_at): with a 60s poll both
    # start only because the loop sleeps exactly until they are due.
    early = enqueue(db, "noop", delay=3)
    sup = start_supervisor(make_config({"poll_interval": "60s"}))
    serving(db, sup)
    later = enqueue(db, "noop", delay=2)
    for job_id in (later, early):
        row = wait_status(db, job_id, "succeeded", timeout=10)
        assert row["locked_at"] >= row["run_at"], "started before its run_at"
        assert seconds(row["locked_at"] - row["run_at"]) < 1.5, row


def test_higher_priority_jobs_run_first(db, make_config, start_supervisor):
    order = [0, 5, -3, 10, 1, 5]
    ids = [enqueue(db, "priority_probe", {"p": p}, priority=p) for p in order]
    sup = start_supervisor(make_config({"children": {"min": 1, "max": 1}}))
    wait_for(lambda: statuses(db) == {"succeeded": len(ids)}, message=f"all ran\n{sup.tail()}")
    ran = [kind for (kind,) in db.execute("SELECT kind FROM effects ORDER BY at, id").fetchall()]
    assert ran == ["p10", "p5", "p5", "p1", "p0", "p-3"]
    # Ties by run_at, then id: the first p5 enqueued ran first.
    p5 = [job_id for (job_id,) in db.execute("SELECT job_id FROM effects WHERE kind = 'p5' ORDER BY id")]
    assert p5 == [ids[1], ids[5]]


# --- timeouts and dying children -------------------------------------------------------------
def test_timed_out_job_is_terminated_retried_then_failed_and_child_replaced(db, make_config, start_supervisor):
    sup = start_supervisor(make_config())
    job_id = enqueue(db, "timeout")  # timeout 1s, max_attempts 2, sleeps 30s
    first = started_pid(db, job_id, 1)
    row = wait_status(db, job_id, "failed", timeout=20)
    assert row["attempts"] == 2
    assert row["last_error"] == "timed out after 1s"
    second = started_pid(db, job_id, 2)
    assert first != second
    wait_pid_gone(first)
    wait_pid_gone(second)
    timed_out = sup.find("job_timed_out", job_id=job_id)
    assert len(timed_out) == 2 and timed_out[0]["error"] == "timed out after 1s"
    assert sup.find("job_retry_scheduled", job_id=job_id)[0]["attempt"] == 1
    exits = [e for e in sup.find("child_exited") if e["child_pid"] in (first, second)]
    assert {e["status"] for e in exits} == {"SIGTERM"}
    assert {e["reason"] for e in exits} == {"timeout"}
    keeps_serving(db, sup)
    assert len(sup.find("child_started")) >= 3


def test_child_ignoring_sigterm_on_timeout_is_sigkilled_after_kill_grace(db, make_config, start_supervisor):
    sup = start_supervisor(make_config())  # kill_grace 1s
    job_id = enqueue(db, "stubborn")  # timeout 1s, ignores SIGTERM, max_attempts 1
    pid = started_pid(db, job_id, 1)
    row = wait_status(db, job_id, "failed", timeout=15)
    assert row["last_error"] == "timed out after 1s" and row["attempts"] == 1
    wait_pid_gone(pid)
    exited = sup.wait_event("child_exited", child_pid=pid)
    assert exited["status"] == "SIGKILL" and exited["reason"] == "timeout"
    started = sup.find("job_started", job_id=job_id)[0]
    # SIGTERM at the 1s timeout was ignored; SIGKILL came kill_grace (1s) later.
    assert seconds_between(started, exited) >= 1.9
    keeps_serving(db, sup)


def seconds_between(first: dict, then: dict) -> float:
    from datetime import datetime

    return (datetime.fromisoformat(then["timestamp"]) - datetime.fromisoformat(first["timestamp"])).total_seconds()


@pytest.mark.parametrize("how, reason", [("exit", "exit status 7"), ("segfault", "SIGSEGV")])
def test_child_dying_mid_job_is_recorded_retried_then_failed(db, make_config, start_supervisor, how, reason):
    sup = start_supervisor(make_config())
    job_id = enqueue(db, "crash", {"how": how})  # max_attempts 2, backoff 0s
    row = wait_status(db, job_id, "failed", timeout=20)
    assert row["attempts"] == 2
    assert row["last_error"] == f"worker process died: {reason}"
    pids = [r[2] for r in effects(db, job_id, "started")]
    assert len(pids) == 2 and pids[0] != pids[1]
    died = sup.find("job_worker_died", job_id=job_id)
    assert len(died) == 2 and died[0]["error"] == f"worker process died: {reason}"
    assert len(sup.find("job_retry_scheduled", job_id=job_id)) == 1
    keeps_serving(db, sup)
    assert len(sup.find("child_started")) >= 3


def test_child_sigkilled_from_outside_is_recorded_retried_then_failed(db, make_config, start_supervisor):
    sup = start_supervisor(make_config())
    job_id = enqueue(db, "crash", {"how": "sleep"})  # max_attempts 2
    for attempt in (1, 2):
        running = wait_status(db, job_id, "running")
        pid = child_pid_of(running["locked_by"])
        assert pid == started_pid(db, job_id, attempt)
        assert pid in sup.children()
        os.kill(pid, signal.SIGKILL)
        if attempt == 1:
            row = wait_for(lambda: (r := job_row(db, job_id))["last_error"] and r, message="attempt 1 recorded")
            assert row["status"] in ("retry", "running")
            assert row["last_error"] == "worker process died: SIGKILL"
    row = wait_status(db, job_id, "failed")
    assert row["attempts"] == 2 and row["last_error"] == "worker process died: SIGKILL"
    keeps_serving(db, sup)
    assert len(sup.find("child_started")) >= 3


def test_operator_kill_kills_the_child_at_once_and_the_job_fails(db, make_config, start_supervisor):
    # heartbeat 60s: no lock check runs meanwhile; the kill's NOTIFY alone must reach the child.
    config = make_config({"heartbeat_interval": "60s"})
    sup = start_supervisor(config)
    job_id = enqueue(db, "crash", {"how": "sleep", "seconds": 30})  # max_attempts 2: would retry
    pid = started_pid(db, job_id, 1)
    asked = time.monotonic()
    out = run_cli("-c", str(config), "kill", str(job_id))
    assert out.returncode == 0, out.stderr
    wait_pid_gone(pid, timeout=5)
    assert time.monotonic() - asked < 3.0
    exited = sup.wait_event("child_exited", child_pid=pid)
    assert exited["reason"] == "killed" and exited["status"] == "SIGKILL"
    assert sup.wait_event("job_failed", job_id=job_id)["error"] == "killed by operator"
    row = job_row(db, job_id)
    assert (row["status"], row["attempts"], row["last_error"]) == ("failed", 1, "killed by operator")
    keeps_serving(db, sup)
    assert job_row(db, job_id)["status"] == "failed"  # no retry, whatever attempts remain


# --- exactly-once writes through job.conn ----------------------------------------------------
def test_writes_through_job_conn_roll_back_when_handler_fails(db, make_config, start_supervisor):
    start_supervisor(make_config())
    failing = enqueue(db, "effect", {"fail": True}, max_attempts=2)
    ok = enqueue(db, "effect", {"fail": False})
    assert wait_status(db, ok, "succeeded")["attempts"] == 1
    assert [(r[0], r[1]) for r in effects(db, ok)] == [(1, "ran")]
    row = wait_status(db, failing, "retry", "failed")
    assert "RuntimeError: asked to fail after writing" in row["last_error"]
    assert effects(db, failing) == []
    # Run the second (last) attempt now instead of after the 30s backoff.
    db.execute("UPDATE jobs SET run_at = now() WHERE id = %s AND status = 'retry'", (failing,))
    db.execute("NOTIFY jobsupervisor_jobs")
    row = wait_status(db, failing, "failed")
    assert row["attempts"] == 2
    assert effects(db, failing) == []


# --- boot errors and unknown types -----------------------------------------------------------
@pytest.mark.parametrize("module, error, most_children", [
    # Reported by the child (boot_error): the supervisor stops at the first one.
    ("import a_module_that_does_not_exist_4711\n",
     "ModuleNotFoundError: No module named 'a_module_that_does_not_exist_4711'", 3),
    # Children that die before saying anything: a few tries, then the supervisor gives up.
    ("import os\nos._exit(1)\n", "exited before it was ready (exit status 1)", 3 + 5),
], ids=["import-error", "exit-at-import"])
def test_import_error_in_handlers_exits_1_without_respawning_children(tmp_path, make_config, start_supervisor,
                                                                      module, error, most_children):
    (tmp_path / "broken_handlers.py").write_text(module)
    config = make_config({"imports": ["jobhandlers", "broken_handlers"], "children": {"min": 3, "max": 4}})
    started = time.monotonic()
    sup = start_supervisor(config, ready=False)
    assert sup.wait_exit(15) == 1
    assert time.monotonic() - started < 10
    fatal = sup.find("supervisor_fatal")
    assert len(fatal) == 1, sup.tail()
    assert error in fatal[0]["error"]
    assert len(sup.find("child_started")) <= most_children  # never a respawn loop
    assert sup.find("supervisor_stopped")[0]["exit_code"] == 1
    assert sup.find("<not json>") == [], sup.tail()
    assert sup.children() == []


def test_boot_errors_from_every_child_at_once_do_not_escape_as_a_traceback(tmp_path, make_config,
                                                                            start_supervisor):
    # Regression: the first boot_error stopped the loop; the cleanup then read the next child's
    # boot_error and raised again, out of run(): a traceback, no supervisor_stopped.
    # Freezing the supervisor until every child has failed makes the pile-up certain.
    (tmp_path / "slow_broken.py").write_text("import time\ntime.sleep(0.5)\nraise ImportError('broken on purpose')\n")
    config = make_config({"imports": ["slow_broken"], "children": {"min": 3, "max": 3}})
    sup = start_supervisor(config)
    sup.signal(signal.SIGSTOP)
    try:
        kids = wait_for(lambda: len(sup.children()) == 3 and sup.children(), message="three children")
        for pid in kids:
            wait_pid_gone(pid)  # exited with its boot_error sent; a zombie until the supervisor reaps it
    finally:
        sup.signal(signal.SIGCONT)
    assert sup.wait_exit(15) == 1
    assert len(sup.find("supervisor_fatal")) == 1
    assert "ImportError: broken on purpose" in sup.find("supervisor_fatal")[0]["error"]
    assert len(sup.find("child_exited")) == 3
    assert sup.find("supervisor_stopped")[0]["exit_code"] == 1
    assert sup.find("<not json>") == [], sup.tail()
    assert len(sup.find("child_started")) == 3


def test_job_of_unknown_type_stays_queued_and_shows_in_status(db, make_config, start_supervisor):
    config = make_config()
    sup = start_supervisor(config)
    unknown = enqueue(db, "no_handler_anywhere", {"x": 1})
    known = enqueue(db, "noop")
    wait_status(db, known, "succeeded")
    keeps_serving(db, sup)
    row = job_row(db, unknown)
    assert row["status"] == "queued" and row["attempts"] == 0 and row["locked_by"] is None
    assert sup.find("job_started", job_id=unknown) == []

    def status_names_it():
        out = run_cli("-c", str(config), "status")
        return out.returncode == 0 and "waiting job types no live runner handles: no_handler_anywhere" in out.stdout \
            and out
    out = wait_for(status_names_it, timeout=10, message="status lists the unhandled type")
    assert "no_handler_anywhere" in out.stdout.split("waiting job types")[0]  # its row in the by-type table
    data = json.loads(run_cli("-c", str(config), "status", "--json").stdout)
    assert data["by_type"]["no_handler_anywhere"]["queued"] == 1
    assert data["unhandled_types"] == ["no_handler_anywhere"]


# --- lock fencing and recovery ---------------------------------------------------------------
@pytest.mark.parametrize("heartbeat, fail, path", [
    ("1s", False, "killed at the heartbeat's lock check"),
    ("60s", False, "its fenced success records nothing"),
    ("60s", True, "its fenced failure records nothing"),
], ids=["lock-check-kills", "success-fenced", "failure-fenced"])
def test_worker_that_lost_its_lock_records_nothing(db, make_config, start_supervisor, heartbeat, fail, path):
    # With a 60s heartbeat no lock check runs during the job: the child finishes and its
    # completion meets the fence. With 1s the check finds the lost lock first and kills it.
    sup = start_supervisor(make_config({"heartbeat_interval": heartbeat, "children": {"min": 1, "max": 1}}))
    job_id = enqueue(db, "sleep", {"seconds": 3 if heartbeat == "1s" else 1, "fail": fail})
    running = wait_status(db, job_id, "running")
    pid = started_pid(db, job_id, 1)
    assert child_pid_of(running["locked_by"]) == pid
    # What a rescuer elsewhere would do: take the job back (here, far in the future so that
    # nobody claims it again during the test).
    db.execute("UPDATE jobs SET status = 'retry', locked_by = NULL, locked_at = NULL,"
               " run_at = now() + interval '1 hour', last_error = 'taken back by the test' WHERE id = %s",
               (job_id,))
    lost = sup.wait_event("job_lock_lost", job_id=job_id, timeout=10)
    assert lost["child_pid"] == pid
    row = job_row(db, job_id)
    assert (row["status"], row["last_error"], row["locked_by"], row["attempts"]) == \
        ("retry", "taken back by the test", None, 1), path
    assert effects(db, job_id, "finished") == []  # its writes through job.conn rolled back
    assert sup.find("job_succeeded", job_id=job_id) == [] and sup.find("job_retry_scheduled", job_id=job_id) == []
    if heartbeat == "1s":
        wait_pid_gone(pid)
        assert sup.wait_event("child_exited", child_pid=pid)["reason"] == "lock_lost"
    else:
        assert lost["outcome"] == "lost"
    after = enqueue(db, "noop")
    done = wait_status(db, after, "succeeded")
    if heartbeat == "60s":  # the child did nothing wrong: it was kept
        assert child_pid_of(done["locked_by"]) == pid
    assert job_row(db, job_id)["status"] == "retry"


def test_lost_lock_kills_only_the_stale_attempt_not_the_new_one_of_the_same_job(db, make_config,
                                                                                 start_supervisor):
    # Regression: the lock check matched children by job id only. Once the job was taken back
    # and claimed again by a second child of the same supervisor, the check killed both, and
    # the new attempt's job then sat 'running' with nobody running it until lock_timeout.
    sup = start_supervisor(make_config({"children": {"min": 2, "max": 2}, "heartbeat_interval": "2s"}))
    serving(db, sup)
    job_id = enqueue(db, "sleep", {"seconds": 2.5})
    old = child_pid_of(wait_status(db, job_id, "running")["locked_by"])
    # Taken back and made due at once; NOTIFY so the idle child claims it before the next
    # heartbeat's lock check.
    with db.transaction():
        db.execute("UPDATE jobs SET status = 'queued', locked_by = NULL, locked_at = NULL WHERE id = %s",
                   (job_id,))
        db.execute("NOTIFY jobsupervisor_jobs")
    again = wait_for(lambda: (r := job_row(db, job_id))["attempts"] == 2 and r, message="second attempt claimed")
    new = child_pid_of(again["locked_by"])
    assert new != old
    sup.wait_event("job_lock_lost", job_id=job_id, child_pid=old, timeout=10)
    wait_pid_gone(old)
    row = wait_status(db, job_id, "succeeded", timeout=10)
    assert row["attempts"] == 2 and child_pid_of(row["locked_by"]) == new
    assert [(r[0], r[2]) for r in effects(db, job_id, "finished")] == [(2, new)]
    assert sup.find("job_lock_lost", child_pid=new) == []


def test_lock_timeout_recovers_job_counting_attempts_until_failed(db, make_config, start_supervisor):
    sup = start_supervisor(make_config({"lock_timeout": "2s"}))
    job_id = enqueue(db, "slow", {"seconds": 30})  # max_attempts 2: every attempt outlives the lock
    first = sup.wait_event("job_recovered", job_id=job_id, timeout=15)
    assert first["status"] == "retry" and first["attempt"] == 1
    assert "lock_timeout" in first["reason"]
    row = wait_status(db, job_id, "failed", timeout=20)
    assert row["attempts"] == 2
    assert "recovered: lock older than lock_timeout (2s) (attempt 2)" in row["last_error"]
    assert "attempt 1" in row["last_error"]  # the previous recovery is kept as previous error
    sup.wait_event("job_recovered", job_id=job_id, count=2)  # logged just after the row changed
    recovered = sup.find("job_recovered", job_id=job_id)
    assert [(e["status"], e["attempt"]) for e in recovered] == [("retry", 1), ("failed", 2)]
    # The children running the recovered attempts were stopped, and nothing ran a third time.
    for attempt in (1, 2):
        wait_pid_gone(started_pid(db, job_id, attempt))
    assert effects(db, job_id, "finished") == []
    keeps_serving(db, sup)
    assert len(sup.find("job_started", job_id=job_id)) == 2
    assert job_row(db, job_id)["status"] == "failed"
