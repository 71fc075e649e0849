"""Signals and the process model (SPEC §6), end to end: the real ``jobsupervisor`` command,
real signals, real child processes (inspected with psutil), a real Postgres.

Nothing is mocked and nothing sleeps hoping something happened: every wait is a condition
with a deadline (``wait_for``, ``wait_event``). Durations are short (kill_grace 1s,
heartbeat 1s, poll 1s) unless a test needs the poll out of the way.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import psutil
import psycopg
import pytest

from conftest import cli_env, is_worker, job_row, run_cli, statuses, wait_for

from supervisor import enqueue
from supervisor.enqueue import enqueue_many

pytestmark = pytest.mark.timeout(90)

SIGNALS = {"SIGINT": signal.SIGINT, "SIGTERM": signal.SIGTERM}


# --- helpers --------------------------------------------------------------------------------
def effects(db, job_id: int, kind: str | None = None) -> list[tuple]:
    """(attempt, kind, pid) rows a handler wrote for this job."""
    sql = "SELECT attempt, kind, pid FROM effects WHERE job_id = %s"
    params: list = [job_id]
    if kind is not None:
        sql += " AND kind = %s"
        params.append(kind)
    return db.execute(sql + " ORDER BY id", params).fetchall()


def wait_handler_started(db, job_id: int, count: int = 1, timeout: float = 20.0) -> list[tuple]:
    """Until the handler itself is running (it records "started" first thing)."""
    return wait_for(lambda: len(effects(db, job_id, "started")) >= count and effects(db, job_id, "started"),
                    timeout, message=f"handler of job {job_id} started x{count}")


def wait_status(db, job_id: int, status: str, timeout: float = 20.0) -> dict:
    return wait_for(lambda: (row := job_row(db, job_id))["status"] == status and row, timeout,
                    message=f"job {job_id} {status}")


def runner_id(sup) -> str:
    return sup.wait_event("supervisor_started")["runner"]


def live_children(sup) -> list[int]:
    """The supervisor's child processes that have not exited (zombies do not count)."""
    out = []
    for pid in sup.children():
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                out.append(pid)
        except psutil.NoSuchProcess:
            pass
    return out


def wait_children(sup, count: int, timeout: float = 15.0) -> list[int]:
    """Until exactly ``count`` children are alive and none is still starting (all ready)."""
    def settled():
        pids = live_children(sup)
        if len(pids) != count:
            return None
        titles = []
        for pid in pids:
            try:
                titles.append(" ".join(psutil.Process(pid).cmdline()))
            except psutil.NoSuchProcess:
                return None
        return all(t.startswith("jobsupervisor: child") and "starting" not in t for t in titles) and pids
    return wait_for(settled, timeout, message=f"{count} ready children (have {live_children(sup)})\n{sup.tail()}")


def hold(release: Path, seconds: float = 60) -> dict:
    return {"release": str(release), "seconds": seconds}


def serve_one(db, sup) -> int:
    """Run one job end to end: the supervisor is up, knows its job types and has claimed."""
    job_id = enqueue(db, "noop")
    wait_status(db, job_id, "succeeded")
    sup.wait_event("job_succeeded", job_id=job_id)
    return job_id


def log_time(event: dict) -> float:
    return dt.datetime.fromisoformat(event["timestamp"].replace("Z", "+00:00")).timestamp()


def terminate_backends(db, where: str) -> int:
    """pg_terminate_backend on this test database's backends matching ``where``; how many."""
    rows = db.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                      f"WHERE datname = current_database() AND pid <> pg_backend_pid() AND {where}").fetchall()
    return sum(1 for (done,) in rows if done)


# --- 1. drain ---------------------------------------------------------------------------------
@pytest.mark.parametrize("signame", list(SIGNALS))
def test_first_signal_drains_running_job_and_claims_nothing_new(signame, db, make_config, start_supervisor):
    sup = start_supervisor(make_config())
    runner = runner_id(sup)
    job_id = enqueue(db, "sleep", {"seconds": 3})
    wait_handler_started(db, job_id)

    sup.signal(SIGNALS[signame])
    sup.wait_event("supervisor_stopping", mode="drain", reason=signame)
    late_id = enqueue(db, "noop")  # after the signal: must stay queued

    assert sup.wait_exit(20) == 0
    assert job_row(db, job_id)["status"] == "succeeded"
    assert len(effects(db, job_id, "finished")) == 1
    late = job_row(db, late_id)
    assert (late["status"], late["attempts"], late["locked_by"]) == ("queued", 0, None)
    assert not sup.find("job_started", job_id=late_id)
    assert sup.find("job_succeeded", job_id=job_id)
    assert sup.find("supervisor_stopped")
    assert not sup.find("job_returned")
    assert db.execute("SELECT count(*) FROM jobs_runners WHERE id = %s", (runner,)).fetchone()[0] == 0


# --- 2. drain timeout ---------------------------------------------------------------------------
@pytest.mark.parametrize("signame", list(SIGNALS))
def test_drain_timeout_kills_job_and_returns_it_queued_without_counting_the_attempt(
        signame, db, make_config, start_supervisor):
    job_id = enqueue(db, "sleep", {"seconds": 30})
    db.execute("UPDATE jobs SET attempts = 2 WHERE id = %s", (job_id,))  # two earlier attempts
    sup = start_supervisor(make_config({"shutdown_timeout": "1s"}))
    wait_handler_started(db, job_id)
    assert job_row(db, job_id)["attempts"] == 3

    started = time.monotonic()
    sup.signal(SIGNALS[signame])
    assert sup.wait_exit(15) == 0
    elapsed = time.monotonic() - started
    assert 0.9 <= elapsed < 8, elapsed

    row = job_row(db, job_id)
    assert (row["status"], row["attempts"], row["locked_by"], row["locked_at"]) == ("queued", 2, None, None)
    assert row["finished_at"] is None
    assert not effects(db, job_id, "finished")
    assert sup.find("job_returned", job_id=job_id)
    assert sup.find("supervisor_stopped")


# --- 3. second signal ---------------------------------------------------------------------------
@pytest.mark.parametrize("signame", list(SIGNALS))
def test_second_signal_stops_now_and_returns_jobs(signame, db, make_config, start_supervisor):
    sup = start_supervisor(make_config({"shutdown_timeout": "60s"}))
    job_id = enqueue(db, "sleep", {"seconds": 30})
    wait_handler_started(db, job_id)

    sup.signal(SIGNALS[signame])
    sup.wait_event("supervisor_stopping", mode="drain")
    started = time.monotonic()
    sup.signal(SIGNALS[signame])
    assert sup.wait_exit(15) == 0
    assert time.monotonic() - started < 8  # nowhere near shutdown_timeout (60s)

    assert sup.find("supervisor_stopping", mode="quick")
    row = job_row(db, job_id)
    assert (row["status"], row["attempts"], row["locked_by"]) == ("queued", 0, None)
    assert sup.find("job_returned", job_id=job_id)
    assert sup.find("supervisor_stopped")


# --- 4. SIGQUIT -----------------------------------------------------------------------------------
def test_sigquit_exits_at_once_and_restart_on_same_host_recovers_the_job(db, make_config, start_supervisor, tmp_path):
    config = make_config({"lock_timeout": "10m", "shutdown_timeout": "60s"})
    sup = start_supervisor(config)
    job_id = enqueue(db, "hold_first_attempt", hold(tmp_path / "never"))
    wait_handler_started(db, job_id)
    kids = live_children(sup)
    assert kids

    started = time.monotonic()
    sup.signal(signal.SIGQUIT)
    sup.wait_exit(10)
    assert time.monotonic() - started < 5  # immediate: no drain
    assert sup.find("supervisor_stopping", mode="immediate")
    wait_for(lambda: not any(is_worker(pid) for pid in kids), 5, message="children gone")
    row = job_row(db, job_id)
    assert (row["status"], row["attempts"]) == ("running", 1)  # left for the next supervisor

    restarted = time.monotonic()
    sup2 = start_supervisor(config)
    recovered = sup2.wait_event("job_recovered", job_id=job_id, timeout=10)
    # Long before lock_timeout (10m) and before a heartbeat could go stale (10s): the dead pid.
    assert time.monotonic() - restarted < 6
    assert "process gone" in recovered["reason"], recovered
    row = wait_status(db, job_id, "succeeded")
    assert row["attempts"] == 2  # the interrupted attempt counted
    assert "recovered" in row["last_error"]
    assert [kind for _, kind, _ in effects(db, job_id)] == ["started", "started", "ok"]


# --- 5. kill -9 -----------------------------------------------------------------------------------
def test_kill_9_of_supervisor_leaves_no_orphans_and_restart_recovers_every_job(
        db, make_config, start_supervisor, tmp_path):
    config = make_config({"children": {"min": 2, "max": 2}, "lock_timeout": "10m"})
    sup = start_supervisor(config)
    ids = [enqueue(db, "hold_first_attempt", hold(tmp_path / "never")) for _ in range(2)]
    for job_id in ids:
        wait_handler_started(db, job_id)
    kids = live_children(sup)
    assert len(kids) == 2

    os.kill(sup.pid, signal.SIGKILL)
    assert sup.wait_exit(5) == -signal.SIGKILL
    # PR_SET_PDEATHSIG: the kernel kills the children with their parent.
    wait_for(lambda: not any(is_worker(pid) for pid in kids), 3,
             message=f"children {kids} die with the supervisor")
    assert statuses(db) == {"running": 2}

    restarted = time.monotonic()
    sup2 = start_supervisor(config)
    for job_id in ids:
        recovered = sup2.wait_event("job_recovered", job_id=job_id, timeout=10)
        assert "process gone" in recovered["reason"], recovered
    assert time.monotonic() - restarted < 6
    for job_id in ids:
        row = wait_status(db, job_id, "succeeded")
        assert row["attempts"] == 2
        assert len(effects(db, job_id, "ok")) == 1
        sup2.wait_event("job_succeeded", job_id=job_id)


# --- 6. no orphans after a normal stop ------------------------------------------------------------
def test_no_orphans_after_normal_stop(db, make_config, start_supervisor):
    sup = start_supervisor(make_config({"children": {"min": 3, "max": 3}}))
    for _ in range(6):
        enqueue(db, "effect")
    wait_for(lambda: statuses(db) == {"succeeded": 6}, message="6 jobs succeeded")
    wait_children(sup, 3)
    busy = enqueue(db, "sleep", {"seconds": 0.5})
    wait_handler_started(db, busy)

    sup.signal(signal.SIGINT)
    assert sup.wait_exit(20) == 0
    pids = sup.started_children()
    assert len(pids) >= 3
    assert [pid for pid in pids if is_worker(pid)] == []
    assert job_row(db, busy)["status"] == "succeeded"


# --- 7. two supervisors on one database -----------------------------------------------------------
def test_two_supervisors_share_jobs_without_running_any_twice_and_survivor_recovers_killed_ones_jobs(
        db, make_config, start_supervisor, tmp_path):
    config = make_config({"children": {"min": 2, "max": 2}, "lock_timeout": "10m"})
    sup_a = start_supervisor(config)
    sup_b = start_supervisor(config)
    runner_a, runner_b = runner_id(sup_a), runner_id(sup_b)
    wait_for(lambda: db.execute("SELECT count(*) FROM jobs_runners WHERE 'effect' = ANY(job_types)").fetchone()[0] == 2,
             message="both runners know their job types")

    ids: list[int] = []
    for _ in range(5):
        ids += enqueue_many(db, [{"job_type": "effect", "payload": {"n": i}} for i in range(100)])
    wait_for(lambda: statuses(db) == {"succeeded": 500}, 60, message=f"500 succeeded ({statuses(db)})")
    # A child records success itself; its supervisor logs it a moment later.
    wait_for(lambda: len(sup_a.find("job_succeeded")) + len(sup_b.find("job_succeeded")) >= 500,
             message="500 job_succeeded events")

    done_a = {e["job_id"] for e in sup_a.find("job_succeeded")}
    done_b = {e["job_id"] for e in sup_b.find("job_succeeded")}
    assert done_a and done_b, (len(done_a), len(done_b))
    assert not done_a & done_b
    assert done_a | done_b == set(ids)
    started = [e["job_id"] for sup in (sup_a, sup_b) for e in sup.find("job_started")]
    assert sorted(started) == sorted(ids)  # each job started exactly once
    assert db.execute("SELECT count(*), count(DISTINCT job_id) FROM effects").fetchone() == (500, 500)
    assert db.execute("SELECT max(attempts), min(attempts) FROM jobs").fetchone() == (1, 1)

    # Part two: each supervisor holds two slow jobs; B is killed; A recovers B's jobs.
    release = tmp_path / "release"
    slow = enqueue_many(db, [{"job_type": "hold_first_attempt", "payload": hold(release)} for _ in range(4)])
    for job_id in slow:
        wait_handler_started(db, job_id)
    held = dict(db.execute("SELECT id, split_part(locked_by, '/', 1) FROM jobs WHERE id = ANY(%s)",
                           (list(slow),)).fetchall())
    b_jobs = sorted(i for i, r in held.items() if r == runner_b)
    assert sorted(held.values()) == sorted([runner_a] * 2 + [runner_b] * 2), held

    os.kill(sup_b.pid, signal.SIGKILL)
    sup_b.wait_exit(5)
    for job_id in b_jobs:
        recovered = sup_a.wait_event("job_recovered", job_id=job_id, timeout=8)
        assert "process gone" in recovered["reason"], recovered
    release.touch()
    for job_id in slow:
        wait_status(db, job_id, "succeeded")
        sup_a.wait_event("job_succeeded", job_id=job_id)  # every one of them on the survivor
        assert len(effects(db, job_id, "ok")) == 1
    assert {job_id: job_row(db, job_id)["attempts"] for job_id in b_jobs} == {job_id: 2 for job_id in b_jobs}


# --- 8. connections terminated --------------------------------------------------------------------
def test_terminated_connections_reconnect_and_every_job_succeeds_exactly_once(db, make_config, start_supervisor):
    fast = {"backoff_delay": "0s"}
    sup = start_supervisor(make_config({
        "children": {"min": 3, "max": 3},
        "jobs": {"effect": fast, "effect_outside": fast},
    }))
    serve_one(db, sup)
    inside: list[int] = []
    outside: list[int] = []

    def batch() -> None:
        inside.extend(enqueue_many(db, [{"job_type": "effect", "payload": {"i": i}} for i in range(100)]))
        outside.extend(enqueue_many(db, [{"job_type": "effect_outside", "payload": {"how": "sleep", "seconds": 0.1}}
                                         for _ in range(15)]))

    for round_ in range(1, 4):
        batch()
        wait_for(lambda: db.execute("SELECT count(*) FROM jobs WHERE status = 'running'").fetchone()[0] > 0,
                 message="jobs flowing")
        assert terminate_backends(db, "true") >= 1
        sup.wait_event("db_reconnected", connection="main", count=round_)
    batch()

    every = inside + outside
    wait_for(lambda: db.execute("SELECT count(*) FROM jobs WHERE status = 'succeeded'").fetchone()[0] == len(every) + 1,
             60, message=f"all jobs succeeded ({statuses(db)})\n{sup.tail()}")
    assert statuses(db) == {"succeeded": len(every) + 1}
    counts = dict(db.execute("SELECT job_id, count(*) FROM effects WHERE kind = 'ran' GROUP BY job_id").fetchall())
    assert {job_id: counts.get(job_id) for job_id in inside} == {job_id: 1 for job_id in inside}
    assert all(counts.get(job_id, 0) >= 1 for job_id in outside)
    assert sup.find("db_reconnected", connection="listen")
    assert sup.proc.poll() is None  # kept serving


# --- 8b. an idle child's connection cut -----------------------------------------------------------
def test_job_after_idle_child_connection_was_cut_runs_on_a_fresh_connection(db, make_config, start_supervisor):
    """A child's connection cut while it is idle (server restart, failover, idle_session_timeout,
    pg_terminate_backend) must not make its next job fail: the attempt would count and wait for
    its backoff (30s by default) for a reason that has nothing to do with the job."""
    sup = start_supervisor(make_config({"children": {"min": 1, "max": 1}}))
    serve_one(db, sup)
    assert terminate_backends(db, "true") >= 3  # the supervisor's two and the idle child's
    sup.wait_event("db_reconnected", connection="listen", timeout=10)
    sup.wait_event("db_reconnected", connection="main", timeout=10)
    job_id = enqueue(db, "effect")
    row = wait_for(lambda: (r := job_row(db, job_id))["status"] not in ("queued", "running") and r, 10,
                   message=f"job {job_id} finished its first attempt")
    assert (row["status"], row["attempts"]) == ("succeeded", 1), row["last_error"]
    assert len(effects(db, job_id, "ran")) == 1


# --- 9. the LISTEN connection alone cut -----------------------------------------------------------
def test_listen_connection_cut_reconnects_and_notify_latency_is_back(db, make_config, start_supervisor):
    sup = start_supervisor(make_config({"poll_interval": "60s"}))
    serve_one(db, sup)  # the startup poll is done: from now on only NOTIFY starts jobs quickly

    assert terminate_backends(db, "application_name = 'jobsupervisor-listen'") == 1
    sup.wait_event("db_reconnected", connection="listen", timeout=10)
    assert not sup.find("db_reconnected", connection="main")

    for _ in range(3):
        started = time.monotonic()
        job_id = enqueue(db, "noop")
        wait_for(lambda: job_row(db, job_id)["status"] != "queued", 3, message=f"job {job_id} claimed")
        assert time.monotonic() - started < 1.0
        wait_status(db, job_id, "succeeded")


# --- 10. stop and the pidfile ---------------------------------------------------------------------
def test_stop_command_waits_for_pidfile_supervisor_and_pidfile_guards_a_second_one(
        db, make_config, start_supervisor, tmp_path):
    pidfile = tmp_path / "run" / "jobsupervisor.pid"
    config = make_config({"pidfile": str(pidfile)})
    sup = start_supervisor(config)
    wait_for(lambda: pidfile.exists() and pidfile.read_text().strip() == str(sup.pid), message="pidfile written")

    second = run_cli("-c", str(config), "run", timeout=20)
    assert second.returncode == 2, second
    assert len(second.stderr.strip().splitlines()) == 1, second.stderr
    assert "pidfile" in second.stderr and str(sup.pid) in second.stderr
    assert "Traceback" not in second.stderr
    assert pidfile.read_text().strip() == str(sup.pid)
    assert sup.proc.poll() is None

    job_id = enqueue(db, "sleep", {"seconds": 1.5})
    wait_handler_started(db, job_id)
    stop = run_cli("-c", str(config), "stop", timeout=40)
    assert stop.returncode == 0, stop
    assert sup.proc.poll() == 0  # already gone when stop returned
    assert job_row(db, job_id)["status"] == "succeeded"  # it drained, not killed
    assert not pidfile.exists()

    again = run_cli("-c", str(config), "stop", timeout=20)
    assert again.returncode == 1, again
    assert len(again.stderr.strip().splitlines()) == 1, again.stderr
    assert again.stdout == ""


# --- 10b. a stale pidfile -------------------------------------------------------------------------
def test_stale_pidfile_naming_another_process_is_ignored_by_stop_and_run(make_config, start_supervisor, tmp_path):
    """After a kill -9 the pidfile stays behind, and its pid may since belong to any process
    started later: ``stop`` must not signal it, and ``run`` must not refuse to start."""
    pidfile = tmp_path / "jobsupervisor.pid"
    config = make_config({"pidfile": str(pidfile)})
    bystander = subprocess.Popen(["sleep", "60"])
    try:
        pidfile.write_text(f"{bystander.pid}\n")
        written = time.time() - 3600  # by a supervisor that died an hour ago, before the bystander started
        os.utime(pidfile, (written, written))

        stop = run_cli("-c", str(config), "stop", "--timeout", "3", timeout=20)
        assert bystander.poll() is None, f"stop signalled pid {bystander.pid}, which is not a supervisor: {stop}"
        assert stop.returncode == 1, stop
        assert len(stop.stderr.strip().splitlines()) == 1, stop.stderr

        sup = start_supervisor(config, ready=False)
        wait_for(lambda: sup.find("supervisor_started") or sup.proc.poll() is not None, 20,
                 message="supervisor started or exited")
        assert sup.proc.poll() is None, f"refused to start over a stale pidfile: {sup.tail()}"
        assert pidfile.read_text().strip() == str(sup.pid)
    finally:
        bystander.kill()
        bystander.wait()


# --- 11. systemd notify ---------------------------------------------------------------------------
@pytest.fixture
def notify_socket():
    directory = tempfile.mkdtemp(prefix="jsn-", dir="/tmp")  # a unix socket path must be short
    path = os.path.join(directory, "notify")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(0.1)
    yield path, sock
    sock.close()
    shutil.rmtree(directory, ignore_errors=True)


def test_systemd_notify_ready_after_child_ready_status_and_stopping(
        db, make_config, start_supervisor, notify_socket):
    path, sock = notify_socket
    boot = 1.5
    config = make_config({"imports": ["jobhandlers", "slowboot"]})
    sup = start_supervisor(config, env=cli_env(NOTIFY_SOCKET=path, SLOWBOOT_SECONDS=str(boot)))
    received: list[tuple[float, list[str]]] = []

    def got(predicate):
        try:
            data = sock.recv(65536)
            received.append((time.time(), data.decode().split("\n")))
        except socket.timeout:
            pass
        return next((item for item in received if predicate(item[1])), None)

    ready_at, ready = wait_for(lambda: got(lambda m: "READY=1" in m), 20, interval=0, message="READY=1")
    started = sup.wait_event("supervisor_started")
    # The child takes `boot` seconds to import its handlers: READY waits for it.
    assert ready_at - log_time(started) >= boot - 0.2, (ready_at, started)
    assert f"MAINPID={sup.pid}" in ready
    assert not [m for _, m in received if any(f.startswith("STOPPING") for f in m)]

    serve_one(db, sup)
    wait_for(lambda: got(lambda m: any(f.startswith("STATUS=") and "1 succeeded" in f for f in m)), 10,
             interval=0, message="STATUS= line after a job")

    sup.signal(signal.SIGTERM)
    wait_for(lambda: got(lambda m: "STOPPING=1" in m), 10, interval=0, message="STOPPING=1")
    assert sup.wait_exit(15) == 0
    assert all(f.split("=", 1)[0] in {"READY", "STATUS", "STOPPING", "MAINPID"} for _, m in received for f in m if f)


# --- 12. SIGTTIN / SIGTTOU / SIGHUP -----------------------------------------------------------------
def test_sigttin_adds_a_child_and_sigttou_removes_one(db, make_config, start_supervisor):
    sup = start_supervisor(make_config({"children": {"min": 1, "max": 1}}))
    wait_children(sup, 1)
    for expected in (2, 3):
        sup.signal(signal.SIGTTIN)
        wait_children(sup, expected)
    for expected in (2, 1):
        sup.signal(signal.SIGTTOU)
        wait_children(sup, expected)
    serve_one(db, sup)
    assert sup.proc.poll() is None


def test_sighup_with_valid_changed_config_replaces_children_while_running_job_finishes(
        db, make_config, start_supervisor):
    config = make_config({"children": {"min": 2, "max": 2}}, name="hup.yaml")
    sup = start_supervisor(config)
    old = set(wait_children(sup, 2))
    job_id = enqueue(db, "sleep", {"seconds": 2})
    wait_handler_started(db, job_id)
    (running_pid,) = {pid for _, _, pid in effects(db, job_id, "started")}
    assert running_pid in old

    make_config({"children": {"min": 3, "max": 3}}, name="hup.yaml")  # same file, new content
    sup.signal(signal.SIGHUP)
    sup.wait_event("config_reloaded")
    new = set(wait_children(sup, 3, timeout=20))
    assert not new & old  # every child replaced, the busy one after its job

    row = wait_status(db, job_id, "succeeded")
    assert row["attempts"] == 1
    assert effects(db, job_id, "finished") == [(1, "finished", running_pid)]  # finished in its old child
    exited = sup.wait_event("child_exited", child_pid=running_pid)
    assert (exited["reason"], exited["status"]) == ("reload", "exit status 0")
    assert not sup.find("job_returned") and not sup.find("job_worker_died")
    served = serve_one(db, sup)
    assert sup.wait_event("job_started", job_id=served)["child_pid"] in new


def test_sighup_with_invalid_config_logs_failure_and_keeps_running(db, make_config, start_supervisor):
    config = make_config(name="bad.yaml")
    sup = start_supervisor(config)
    before = set(wait_children(sup, 1))
    config.write_text(config.read_text() + "children_typo: 3\n")
    sup.signal(signal.SIGHUP)
    failed = sup.wait_event("config_reload_failed")
    assert "children_typo" in failed["error"]
    assert not sup.find("config_reloaded")
    served = serve_one(db, sup)
    assert sup.wait_event("job_started", job_id=served)["child_pid"] in before
    assert set(live_children(sup)) == before
    sup.signal(signal.SIGINT)
    assert sup.wait_exit(20) == 0


# --- 13. children ignore the terminal's Ctrl-C ----------------------------------------------------
def test_children_ignore_sigint_sent_to_them(db, make_config, start_supervisor):
    sup = start_supervisor(make_config())
    job_id = enqueue(db, "sleep", {"seconds": 1.5})
    ((_, _, child_pid),) = wait_handler_started(db, job_id)
    assert child_pid in sup.children()
    assert os.getpgid(child_pid) != os.getpgid(sup.pid)  # Ctrl-C in a terminal reaches only the supervisor

    os.kill(child_pid, signal.SIGINT)
    row = wait_status(db, job_id, "succeeded")
    assert row["attempts"] == 1
    assert effects(db, job_id, "finished") == [(1, "finished", child_pid)]
    assert is_worker(child_pid)  # the same child lives on
    assert not sup.find("child_exited")


# --- regression: the heartbeat's lock check and a child's own success (seen in test 8's logs) -----
def test_slow_heartbeat_does_not_kill_children_whose_jobs_just_succeeded(
        db, dsn, make_config, start_supervisor, tmp_path):
    """A child records its job's success itself, then tells the supervisor. A heartbeat that
    checks "are my running jobs still mine?" in between must not take the finished job for a
    lost lock and SIGKILL a healthy child. A heartbeat held up by a row lock on the runner row
    (an admin transaction, a slow database) makes that window as wide as the test needs."""
    sup = start_supervisor(make_config({"children": {"min": 2, "max": 2}}))
    runner = runner_id(sup)
    release = tmp_path / "release"
    ids = [enqueue(db, "hold_first_attempt", hold(release)) for _ in range(2)]
    for job_id in ids:
        wait_handler_started(db, job_id)
    kids = set(live_children(sup))

    with psycopg.connect(dsn) as blocker:  # one transaction, committed when the block ends
        blocker.execute("SELECT 1 FROM jobs_runners WHERE id = %s FOR UPDATE", (runner,))
        wait_for(lambda: db.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND wait_event_type = 'Lock' AND query LIKE '%runners%'").fetchone()[0] == 1,
            message="the supervisor's heartbeat waits for the runner row")
        release.touch()
        wait_for(lambda: statuses(db) == {"succeeded": 2}, message="both children recorded success")
    released = db.execute("SELECT now()").fetchone()[0]

    for job_id in ids:
        sup.wait_event("job_succeeded", job_id=job_id)
    wait_for(lambda: db.execute("SELECT heartbeat_at > %s + interval '0.5 s' FROM jobs_runners WHERE id = %s",
                                (released, runner)).fetchone()[0], 10, message="a later heartbeat")
    assert not sup.find("child_exited"), sup.find("child_exited")
    assert not sup.find("job_lock_lost")
    assert set(live_children(sup)) == kids
