"""Operations (issue #5), end to end: built-in cron with several supervisors, the operator
commands and their refusals, kill and stop across supervisors through the database,
retention, the log sinks (syslog over UDP, TCP and a unix socket; console) and secrets.

Real ``jobsupervisor`` processes (conftest.start_supervisor), a real Postgres, real sockets.
Every wait is a condition with a deadline.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import signal
import socket
import subprocess
import threading
import time
import uuid
import zoneinfo
from urllib.parse import urlsplit, urlunsplit

import psutil
import psycopg
import pytest

from conftest import job_row, run_cli, wait_for, with_dbname

from supervisor import enqueue

pytestmark = pytest.mark.timeout(90)

UTC = dt.timezone.utc


# --- helpers ----------------------------------------------------------------------------------
def cli(config, *args: str, **kwargs) -> subprocess.CompletedProcess:
    return run_cli("-c", str(config), *args, **kwargs)


def ok(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 0, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr + result.stdout
    return result.stdout


def refused(result: subprocess.CompletedProcess, code: int, *needles: str) -> str:
    """Exit ``code``, no traceback, every needle on stderr; returns stderr."""
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr + result.stdout
    for needle in needles:
        assert needle in result.stderr, (needle, result.stderr)
    return result.stderr


def add(db, job_type: str = "noop", status: str = "queued", queue: str = "default", *, n: int = 1,
        finished_ago: str | None = None, run_in: str | None = None) -> list[int]:
    """Insert ``n`` rows in ``status`` directly (no supervisor involved); their ids."""
    finished = (f"now() - interval '{finished_ago}'" if finished_ago
                else "now()" if status in ("succeeded", "failed", "cancelled") else "NULL")
    locked = "'host:1:ab/2'" if status == "running" else "NULL"
    run_at = f"now() + interval '{run_in}'" if run_in else "now()"
    rows = db.execute(
        f"INSERT INTO jobs (job_type, status, queue, run_at, finished_at, locked_by, locked_at, attempts) "
        f"SELECT %s, %s, %s, {run_at}, {finished}, {locked}, "
        f"CASE WHEN {locked} IS NULL THEN NULL ELSE now() END, 1 FROM generate_series(1, %s) RETURNING id",
        (job_type, status, queue, n)).fetchall()
    return [r[0] for r in rows]


def status_of(db, job_id: int) -> str | None:
    row = db.execute("SELECT status FROM jobs WHERE id = %s", (job_id,)).fetchone()
    return row[0] if row else None


def statuses_of(db, ids: list[int]) -> set[str | None]:
    return {status_of(db, i) for i in ids}


def runner_id(sup) -> str:
    return sup.wait_event("supervisor_started")["runner"]


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def live_children(sup) -> list[int]:
    return sorted(pid for pid in sup.children() if alive(pid))


def wait_handler_started(db, job_id: int, timeout: float = 20.0) -> None:
    wait_for(lambda: db.execute("SELECT 1 FROM effects WHERE job_id = %s AND kind = 'started'",
                                (job_id,)).fetchone(), timeout, message=f"handler of job {job_id} started")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ticks_of(db, schedule: str) -> list[tuple[dt.datetime, str, str]]:
    return db.execute("SELECT run_at, unique_key, status FROM jobs WHERE unique_key LIKE %s ORDER BY run_at",
                      (f"schedule:{schedule}:%",)).fetchall()


def assert_consecutive_seconds(run_ats: list[dt.datetime]) -> None:
    gaps = [(a, b) for a, b in zip(run_ats, run_ats[1:]) if b - a != dt.timedelta(seconds=1)]
    assert not gaps, f"ticks not exactly one second apart: {gaps[:5]}"


# ==============================================================================================
# Cron
# ==============================================================================================
def test_seconds_schedule_with_two_supervisors_enqueues_every_tick_exactly_once(db, make_config,
                                                                               start_supervisor):
    config = make_config({"schedules": [{"name": "every_second", "cron": "*/1 * * * * *", "job": "noop",
                                         "payload": {"from": "cron"}}]})
    a = start_supervisor(config)
    b = start_supervisor(config)
    a.wait_ready()
    b.wait_ready()
    first = wait_for(lambda: ticks_of(db, "every_second"), 15, message="first cron tick")[0][0]
    # Both serve now: let them race for five more ticks.
    both = len(ticks_of(db, "every_second"))
    wait_for(lambda: len(ticks_of(db, "every_second")) >= both + 5, 20, message="five more cron ticks")
    for sup in (a, b):
        sup.signal(signal.SIGTERM)
    assert a.wait_exit(20) == 0 and b.wait_exit(20) == 0

    ticks = ticks_of(db, "every_second")
    run_ats = [t[0] for t in ticks]
    keys = [t[1] for t in ticks]
    assert run_ats[0] == first
    assert len(keys) == len(set(keys)) and len(run_ats) == len(set(run_ats)), "a tick was enqueued twice"
    assert_consecutive_seconds(run_ats)  # no tick lost
    assert all(r.microsecond == 0 for r in run_ats)
    # Each enqueued once by one of the two; the log agrees with the table.
    logged = [dt.datetime.fromisoformat(e["tick"]) for sup in (a, b)
              for e in sup.find("schedule_enqueued", schedule="every_second")]
    assert sorted(logged) == run_ats
    # They ran (the last ones may have been left queued by the drain).
    done = [t for t in ticks if t[2] == "succeeded"]
    assert len(done) >= len(ticks) - 2, ticks
    assert db.execute("SELECT count(*) FROM jobs WHERE payload = '{\"from\": \"cron\"}'").fetchone()[0] == len(ticks)
    last_tick = db.execute("SELECT last_tick FROM jobs_schedules WHERE name = 'every_second'").fetchone()[0]
    assert last_tick == run_ats[-1]


@pytest.mark.parametrize("catch_up", ["latest", "none"])
def test_ticks_missed_while_every_supervisor_was_down_are_enqueued_once_or_skipped(
        catch_up, db, make_config, start_supervisor):
    config = make_config({"schedules": [{"name": "sec", "cron": "*/1 * * * * *", "job": "noop",
                                         "catch_up": catch_up}]})
    first = start_supervisor(config)
    first.wait_ready()
    wait_for(lambda: ticks_of(db, "sec"), 15, message="a first tick")
    first.signal(signal.SIGTERM)
    assert first.wait_exit(20) == 0
    # Ten minutes of downtime: 600 ticks owed to nobody.
    db.execute("DELETE FROM jobs")
    db.execute("UPDATE jobs_schedules SET last_tick = last_tick - interval '10 minutes' WHERE name = 'sec'")
    restarted_at = db.execute("SELECT now()").fetchone()[0]

    again = start_supervisor(config)
    again.wait_ready()
    wait_for(lambda: len(ticks_of(db, "sec")) >= 3, 15, message="ticks after the restart")
    again.signal(signal.SIGTERM)
    assert again.wait_exit(20) == 0

    run_ats = [t[0] for t in ticks_of(db, "sec")]
    events = again.find("schedule_enqueued", schedule="sec")
    catch_ups = [e for e in events if e["catch_up"]]
    # Not one job per missed tick (600), nor one per tick of the last minute (60).
    assert len(run_ats) <= (dt.datetime.now(UTC) - restarted_at).total_seconds() + 2, run_ats
    assert all(r >= restarted_at - dt.timedelta(seconds=1) for r in run_ats), run_ats
    assert_consecutive_seconds(run_ats)
    if catch_up == "latest":
        assert len(catch_ups) == 1, events
        assert dt.datetime.fromisoformat(catch_ups[0]["tick"]) == run_ats[0]
    else:
        assert catch_ups == []


def drive(db, scheduler, start: dt.datetime, end: dt.datetime, step: dt.timedelta) -> list:
    """Run a scheduler pass at each simulated database time from start to end."""
    done, now = [], start
    while now <= end:
        done.extend(scheduler.run_once(db, now=now))
        now += step
    return done


def schedule(**kw):
    from supervisor.config import ScheduleConfig

    base = dict(name="s", cron="* * * * *", job="noop", payload={}, timezone="UTC", catch_up="latest")
    base.update(kw)
    return ScheduleConfig(**base)


def test_missed_ticks_collapse_to_one_even_when_one_is_still_within_the_window(db):
    from supervisor.queries import queries_for
    from supervisor.scheduler import Scheduler

    # Every minute; everyone down 12:00:00-13:00:30. 13:00 is 30 s late, 12:59 90 s: one job, not two.
    s = Scheduler((schedule(),), queries_for("jobs"), "jobs")
    s.run_once(db, now=dt.datetime(2030, 1, 1, 12, 0, 0, tzinfo=UTC))
    done = s.run_once(db, now=dt.datetime(2030, 1, 1, 13, 0, 30, tzinfo=UTC))
    assert [(d.tick, d.catch_up) for d in done] == [(dt.datetime(2030, 1, 1, 13, 0, tzinfo=UTC), True)]
    # Every second, ten minutes down: one job, then one per second again.
    s = Scheduler((schedule(name="sec", cron="* * * * * *"),), queries_for("jobs"), "jobs")
    t0 = dt.datetime(2030, 1, 2, 0, 0, 0, tzinfo=UTC)
    s.run_once(db, now=t0)
    back = t0 + dt.timedelta(minutes=10, seconds=0.5)
    assert [(d.tick, d.catch_up) for d in s.run_once(db, now=back)] == [(back.replace(microsecond=0), True)]
    later = s.run_once(db, now=back + dt.timedelta(seconds=3))
    assert [(d.tick.second, d.catch_up) for d in later] == [(1, False), (2, False), (3, False)]
    # A loop that merely lagged (every tick younger than the window) loses nothing.
    lagged = s.run_once(db, now=back + dt.timedelta(seconds=50))
    assert len(lagged) == 47 and not any(d.catch_up for d in lagged)


def test_dst_nights_through_real_passes_enqueue_each_wall_clock_run_once(db):
    from supervisor.queries import queries_for
    from supervisor.scheduler import Scheduler

    berlin = zoneinfo.ZoneInfo("Europe/Berlin")
    minute = dt.timedelta(minutes=1)
    # Clocks go back (03:00 CEST -> 02:00 CET, 25 Oct 2026): 02:30 happens twice, runs once.
    s = Scheduler((schedule(name="back", cron="30 2 * * *", timezone="Europe/Berlin"),), queries_for("jobs"), "jobs")
    done = drive(db, s, dt.datetime(2026, 10, 24, 23, 0, tzinfo=UTC), dt.datetime(2026, 10, 25, 3, 0, tzinfo=UTC), minute)
    assert [d.tick.astimezone(berlin).isoformat() for d in done] == ["2026-10-25T02:30:00+02:00"]
    # Clocks go forward (02:00 CET -> 03:00 CEST, 29 Mar 2026): 02:30 does not exist, runs at 03:00.
    s = Scheduler((schedule(name="fwd", cron="30 2 * * *", timezone="Europe/Berlin"),), queries_for("jobs"), "jobs")
    done = drive(db, s, dt.datetime(2026, 3, 28, 23, 0, tzinfo=UTC), dt.datetime(2026, 3, 29, 3, 0, tzinfo=UTC), minute)
    assert [d.tick.astimezone(berlin).isoformat() for d in done] == ["2026-03-29T03:00:00+02:00"]
    # An interval schedule keeps real intervals through the repeated hour: no gap, no double.
    s = Scheduler((schedule(name="every20", cron="*/20 * * * *", timezone="Europe/Berlin"),),
                  queries_for("jobs"), "jobs")
    done = drive(db, s, dt.datetime(2026, 10, 24, 23, 30, tzinfo=UTC), dt.datetime(2026, 10, 25, 2, 30, tzinfo=UTC),
                 minute)
    ticks = [d.tick for d in done]
    assert len(ticks) == 9 and all(b - a == dt.timedelta(minutes=20) for a, b in zip(ticks, ticks[1:]))
    assert not any(d.catch_up for d in done)


def test_next_due_follows_the_database_clock(db):
    from supervisor.queries import queries_for
    from supervisor.scheduler import Scheduler

    s = Scheduler((schedule(cron="0 * * * *"),), queries_for("jobs"), "jobs")
    s.run_once(db)
    db_now = db.execute("SELECT extract(epoch FROM clock_timestamp())").fetchone()[0]
    assert abs(s.db_clock_offset - (float(db_now) - time.time())) < 0.5
    s.db_clock_offset = 3600.0  # a database an hour ahead: its next tick, not ours
    due = s.next_due()
    assert due > time.time() + 3600 - 1 and due <= time.time() + 7200 + 1


def test_schedules_command_lists_next_runs(db, make_config):
    config = make_config({"schedules": [
        {"name": "nightly", "cron": "30 2 * * *", "job": "noop", "timezone": "Europe/Berlin",
         "payload": {"report": "daily"}, "queue": "reports", "priority": 5},
        {"name": "often", "cron": "*/10 * * * * *", "job": "noop", "catch_up": "none"},
    ]})
    out = ok(cli(config, "schedules"))
    assert "nightly: '30 2 * * *' (Europe/Berlin) -> noop" in out and "queue reports" in out
    assert "often: '*/10 * * * * *' (UTC)" in out and "catch_up none" in out
    assert out.count("    next: ") == 6 and "last tick never" in out

    db.execute("INSERT INTO jobs_schedules (name, last_tick) VALUES ('often', '2030-01-01T00:00:10Z')")
    data = {r["name"]: r for r in json.loads(ok(cli(config, "schedules", "--json", "--count", "5")))}
    assert set(data) == {"nightly", "often"}
    now = dt.datetime.now(UTC)
    for row in data.values():
        runs = [dt.datetime.fromisoformat(r) for r in row["next_runs"]]
        assert len(runs) == 5 and runs == sorted(runs) and runs[0] > now - dt.timedelta(seconds=2)
    nightly = [dt.datetime.fromisoformat(r) for r in data["nightly"]["next_runs"]]
    assert all((r.hour, r.minute) == (2, 30) or (r.hour, r.minute) == (3, 0) for r in nightly)  # 03:00 on DST night
    assert all(r.utcoffset() in (dt.timedelta(hours=1), dt.timedelta(hours=2)) for r in nightly)
    often = [dt.datetime.fromisoformat(r) for r in data["often"]["next_runs"]]
    assert all(b - a == dt.timedelta(seconds=10) for a, b in zip(often, often[1:]))
    assert dt.datetime.fromisoformat(data["often"]["last_tick"]) == dt.datetime(2030, 1, 1, 0, 0, 10, tzinfo=UTC)
    assert data["nightly"]["payload"] == {"report": "daily"} and data["nightly"]["priority"] == 5
    assert data["nightly"]["last_tick"] is None

    refused(cli(config, "schedules", "--count", "0"), 2, "--count")
    assert "no schedules configured" in ok(cli(make_config(), "schedules"))


# ==============================================================================================
# Operator commands
# ==============================================================================================
def test_operator_commands_on_ids_change_what_applies_and_name_each_refusal(db, make_config):
    config = make_config()
    failed, cancelled, succeeded, queued, running = (add(db, status=s)[0] for s in
                                                     ("failed", "cancelled", "succeeded", "queued", "running"))
    future = add(db, run_in="1 hour")[0]

    out = ok(cli(config, "retry", str(failed), str(cancelled)))
    assert f"job {failed}: queued again" in out and f"job {cancelled}: queued again" in out
    assert "retried 2 jobs" in out
    assert statuses_of(db, [failed, cancelled]) == {"queued"}

    # cancel a succeeded job: refused, exit 1, the id named; nothing changes.
    err = refused(cli(config, "cancel", str(succeeded)), 1, str(succeeded), "succeeded")
    assert len(err.splitlines()) == 1 and status_of(db, succeeded) == "succeeded"
    # Unknown id: exit 1 naming it, for every command.
    for command in ("retry", "cancel", "run-now", "delete", "kill"):
        refused(cli(config, command, "987654321"), 1, "987654321", "does not exist")
    # Mixed: what applies changes, each refusal named on its own line.
    result = cli(config, "cancel", str(queued), str(succeeded), "987654321")
    assert result.returncode == 1 and f"job {queued}: cancelled" in result.stdout
    lines = result.stderr.splitlines()
    assert len(lines) == 2 and f"job {succeeded} is succeeded" in lines[0] and "job 987654321 does not" in lines[1]
    assert status_of(db, queued) == "cancelled"

    out = ok(cli(config, "run-now", str(future)))
    assert f"job {future}: due now" in out
    assert db.execute("SELECT run_at <= now() FROM jobs WHERE id = %s", (future,)).fetchone()[0]
    refused(cli(config, "run-now", str(running)), 1, str(running), "running")
    refused(cli(config, "delete", str(running)), 1, str(running), "kill it first")
    refused(cli(config, "kill", str(succeeded)), 1, str(succeeded), "only running jobs can be killed")
    out = ok(cli(config, "delete", str(succeeded)))
    assert f"job {succeeded}: deleted" in out and status_of(db, succeeded) is None
    data = json.loads(ok(cli(config, "retry", str(queued), "--json")))
    assert data == {"action": "retry", "changed": [queued], "refused": {}}


def test_operator_commands_on_a_filter_apply_in_batches_and_refuse_empty_filters(db, make_config):
    config = make_config()
    failed = add(db, "fail", "failed", n=30)
    cancelled = add(db, "fail", "cancelled", n=3)
    other_failed = add(db, "other", "failed", n=5)
    bulk = add(db, "bulk", "queued", queue="bulkq", n=1200)
    later = add(db, "noop", "retry", queue="later", run_in="1 hour", n=4)
    done = add(db, "noop", "succeeded", queue="later", n=7)

    out = ok(cli(config, "retry", "--type", "fail", "--status", "failed"))
    assert out.strip() == "retried 30 jobs matching type fail, status failed"  # many: the count, no ids
    assert statuses_of(db, failed) == {"queued"}
    assert statuses_of(db, cancelled) == {"cancelled"} and statuses_of(db, other_failed) == {"failed"}
    # Without --status: every status the action applies to (failed and cancelled for retry).
    out = ok(cli(config, "retry", "--type", "fail"))
    assert "retried 3 jobs matching type fail" in out and all(f"job {i}: queued again" in out for i in cancelled)

    out = ok(cli(config, "cancel", "--queue", "bulkq"))  # 1200 rows: three batches of 500
    assert "cancelled 1200 jobs matching queue bulkq" in out
    assert statuses_of(db, bulk) == {"cancelled"}

    out = ok(cli(config, "run-now", "--queue", "later"))
    assert "made due now 4 jobs" in out
    assert db.execute("SELECT bool_and(run_at <= now()) FROM jobs WHERE id = ANY(%s)", (later,)).fetchone()[0]
    out = ok(cli(config, "delete", "--queue", "later", "--status", "succeeded"))
    assert "deleted 7 jobs" in out and statuses_of(db, done) == {None}
    assert statuses_of(db, later) == {"retry"}
    assert "retried 0 jobs matching type nothing" in ok(cli(config, "retry", "--type", "nothing"))
    data = json.loads(ok(cli(config, "delete", "--type", "other", "--json")))
    assert sorted(data["changed"]) == sorted(other_failed) and data["refused"] == {}

    # Refusals: no filter at all, a status the action never applies to, ids and a filter.
    for command in ("retry", "cancel", "run-now", "delete", "kill"):
        refused(cli(config, command), 2, "--type")
    refused(cli(config, "cancel", "--status", "succeeded"), 2, "cancel cannot apply to succeeded jobs")
    refused(cli(config, "kill", "--status", "queued"), 2, "only running jobs")
    refused(cli(config, "retry", "--type", "fail", str(failed[0])), 2, "not both")
    refused(cli(config, "retry", "--status", "asleep"), 2, "--status")
    assert statuses_of(db, bulk) == {"cancelled"}


def test_python_api_for_filters(db):
    from supervisor.admin import FilterError, JobFilter, act, act_on_filter

    failed = add(db, "fail", "failed", n=250)
    result = act_on_filter(db, "jobs", "retry", JobFilter(job_type="fail"), batch=100)
    assert result.changed == sorted(failed) and result.refused == {}
    assert statuses_of(db, failed) == {"queued"}
    with pytest.raises(FilterError):
        act_on_filter(db, "jobs", "cancel", JobFilter())
    with pytest.raises(FilterError, match="only queued or retry"):
        act_on_filter(db, "jobs", "cancel", JobFilter(status="failed"))
    # act() takes every action, kill included, and names each refusal.
    result = act(db, "jobs", "kill", [failed[0], 987654321])
    assert result.changed == [] and set(result.refused) == {failed[0], 987654321}
    assert "queued" in result.refused[failed[0]] and "does not exist" in result.refused[987654321]


# ==============================================================================================
# kill and stop across supervisors
# ==============================================================================================
def test_kill_reaches_the_supervisor_running_the_job_and_only_it(db, make_config, start_supervisor):
    config = make_config()
    a = start_supervisor(config)
    a.wait_ready()
    job_id = enqueue(db, "sleep", {"seconds": 60})
    wait_handler_started(db, job_id)
    runner_a = runner_id(a)
    assert job_row(db, job_id)["locked_by"].startswith(runner_a + "/")
    running_child = a.wait_event("job_started", job_id=job_id)["child_pid"]

    b = start_supervisor(config)
    b.wait_ready()
    wait_for(lambda: len(live_children(b)) == 1, 15, message="B's child")
    b_children = live_children(b)

    out = ok(cli(config, "kill", str(job_id)))
    killed_at = time.monotonic()
    assert f"job {job_id}: killed" in out and "killed 1 job" in out
    wait_for(lambda: not alive(running_child), 5, message="the job's child killed")
    latency = time.monotonic() - killed_at
    assert latency < 1.5, f"child still alive {latency:.2f}s after kill"

    row = job_row(db, job_id)
    assert (row["status"], row["last_error"]) == ("failed", "killed by operator")
    assert row["finished_at"] is not None
    a.wait_event("job_failed", job_id=job_id, error="killed by operator")
    a.wait_event("child_exited", child_pid=running_child, reason="killed")
    # A replaces the child; B noticed nothing.
    wait_for(lambda: [pid for pid in live_children(a) if pid != running_child], 15, message="A's replacement child")
    assert len(a.find("child_started")) == 2
    assert live_children(b) == b_children and not b.find("child_exited") and not b.find("job_failed")
    assert a.proc.poll() is None and b.proc.poll() is None
    assert db.execute("SELECT count(*) FROM effects WHERE job_id = %s AND kind = 'finished'",
                      (job_id,)).fetchone()[0] == 0

    # By filter: a running job wherever it runs.
    second = enqueue(db, "sleep", {"seconds": 60})
    wait_handler_started(db, second)
    out = ok(cli(config, "kill", "--type", "sleep", "--status", "running"))
    assert f"job {second}: killed" in out and "killed 1 job matching type sleep, status running" in out
    wait_for(lambda: (r := job_row(db, second))["status"] == "failed" and r, 5)
    holder = a if job_row(db, second)["locked_by"].startswith(runner_a) else b
    holder.wait_event("job_failed", job_id=second, error="killed by operator", timeout=5)


def test_runners_lists_both_and_stop_drains_one_through_the_database(db, make_config, start_supervisor):
    config = make_config()
    a = start_supervisor(config)
    a.wait_ready()
    job_id = enqueue(db, "sleep", {"seconds": 2})
    wait_handler_started(db, job_id)
    b = start_supervisor(config)
    b.wait_ready()
    runner_a, runner_b = runner_id(a), runner_id(b)

    out = ok(cli(config, "runners"))
    assert runner_a in out and runner_b in out
    assert out.splitlines()[0].split()[:7] == ["id", "host", "pid", "version", "children", "busy", "queues"]
    listed = {r["id"]: r for r in json.loads(ok(cli(config, "runners", "--json")))}
    assert set(listed) == {runner_a, runner_b}
    assert (listed[runner_a]["pid"], listed[runner_b]["pid"]) == (a.pid, b.pid)
    assert listed[runner_a]["heartbeat_age"] < 5
    wait_for(lambda: [r for r in json.loads(ok(cli(config, "runners", "--json"))) if r["id"] == runner_a
                      and r["busy"] == 1], 5, message="A reports its busy child")
    assert all(r["version"] and r["host"] and r["children"] >= 1 and not r["stale"] for r in listed.values())

    # Stop A by its host:pid; it drains its running job and exits 0. B goes on.
    host_pid = runner_a.rsplit(":", 1)[0]
    out = ok(cli(config, "runners", "stop", host_pid))
    assert f"runner {runner_a}: asked to drain and exit" in out
    a.wait_event("supervisor_stopping", reason="operator request", timeout=5)
    assert a.wait_exit(20) == 0
    assert job_row(db, job_id)["status"] == "succeeded"
    assert b.proc.poll() is None
    listed = [r["id"] for r in json.loads(ok(cli(config, "runners", "--json")))]
    assert listed == [runner_b]
    late = enqueue(db, "noop")
    b.wait_event("job_succeeded", job_id=late)
    assert not b.find("supervisor_stopping")

    refused(cli(config, "runners", "stop", "nosuchhost:1:ffff"), 1, "nosuchhost:1:ffff", "not registered")
    refused(cli(config, "runners", "stop"), 2, "runner ID")


# ==============================================================================================
# Retention
# ==============================================================================================
def seed_old_and_new(db) -> dict[str, list[int]]:
    return {
        "old_succeeded": add(db, "noop", "succeeded", n=2500, finished_ago="30 days"),
        "old_failed": add(db, "noop", "failed", n=300, finished_ago="60 days"),
        "old_cancelled": add(db, "noop", "cancelled", n=20, finished_ago="60 days"),
        "young_failed": add(db, "noop", "failed", n=10, finished_ago="10 days"),  # failed keeps 30d
        "recent": add(db, "noop", "succeeded", n=10, finished_ago="1 hour"),
        "waiting": add(db, "noop", "queued", n=5, run_in="1 day"),
    }


def remaining(db, ids: list[int]) -> int:
    return db.execute("SELECT count(*) FROM jobs WHERE id = ANY(%s)", (ids,)).fetchone()[0]


def test_retention_pass_deletes_in_batches_one_supervisor_at_a_time(db, dsn):
    from supervisor.queries import queries_for
    from supervisor.retention import Retention

    rows = seed_old_and_new(db)
    retention = Retention(queries_for("jobs"), succeeded=7 * 86400.0, failed=30 * 86400.0, batch=1000,
                          time_budget=0.0)
    # A pass that is out of time still does one batch per rule, and says there is more.
    assert retention.run_once(db) == {"succeeded": 1000, "failed+cancelled": 320}
    assert retention.more and remaining(db, rows["old_succeeded"]) == 1500
    # Another supervisor holding the table's retention lock: this one skips its pass.
    with psycopg.connect(dsn, autocommit=True) as other:
        other.execute("SELECT pg_advisory_lock(%s)", (retention.lock_key,))
        assert retention.run_once(db) == {}
        other.execute("SELECT pg_advisory_unlock(%s)", (retention.lock_key,))
    assert retention.run_once(db) == {"succeeded": 1000}
    assert retention.run_once(db) == {"succeeded": 500} and not retention.more
    assert retention.run_once(db) == {}
    for key in ("old_succeeded", "old_failed", "old_cancelled"):
        assert remaining(db, rows[key]) == 0
    for key in ("young_failed", "recent", "waiting"):
        assert remaining(db, rows[key]) == len(rows[key])


def test_retention_keep_disables_pruning():
    from supervisor.config import config_from_dict
    from supervisor.queries import queries_for
    from supervisor.retention import Retention

    config = config_from_dict({"retention": "keep"})
    assert (config.retention.succeeded, config.retention.failed) == (None, None)
    retention = Retention(queries_for("jobs"), config.retention.succeeded, config.retention.failed)
    assert not retention.enabled
    one = config_from_dict({"retention": {"failed": "keep"}})
    assert Retention(queries_for("jobs"), one.retention.succeeded, one.retention.failed).enabled


def test_supervisor_prunes_old_jobs_and_keep_prunes_nothing(db, dsn, server_dsn, template_db, make_config,
                                                            start_supervisor):
    """End to end: the first pass runs 10 s after start (parent.Supervisor.next_retention)."""
    keep_db = f"jstest_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server_dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{keep_db}" TEMPLATE "{template_db}"')
    keep_dsn = with_dbname(server_dsn, keep_db)
    try:
        with psycopg.connect(keep_dsn, autocommit=True) as keep_conn:
            rows = seed_old_and_new(db)
            kept = seed_old_and_new(keep_conn)
            pruning = start_supervisor(make_config({"retention": {"succeeded": "7d", "failed": "30d"}}))
            keeping = start_supervisor(make_config({"database": {"dsn": keep_dsn}, "retention": "keep"}))
            started = time.monotonic()
            pruning.wait_event("jobs_pruned", timeout=30)
            wait_for(lambda: remaining(db, rows["old_succeeded"]) == 0, 15, message="old succeeded pruned")
            wait_for(lambda: remaining(db, rows["old_failed"] + rows["old_cancelled"]) == 0, 15)
            for key in ("young_failed", "recent", "waiting"):
                assert remaining(db, rows[key]) == len(rows[key])
            pruned = pruning.find("jobs_pruned")
            assert sum(e.get("deleted_succeeded", 0) for e in pruned) == 2500
            assert sum(e.get("deleted_failed_cancelled", 0) for e in pruned) == 320
            # The keeping supervisor has been up past its first retention time: nothing deleted.
            wait_for(lambda: time.monotonic() - started > 11.0, 15)
            assert all(remaining(keep_conn, ids) == len(ids) for ids in kept.values())
            assert not keeping.find("jobs_pruned") and keeping.proc.poll() is None
            keeping.signal(signal.SIGTERM)
            assert keeping.wait_exit(20) == 0
    finally:
        with psycopg.connect(server_dsn, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{keep_db}" WITH (FORCE)')


# ==============================================================================================
# Log sinks
# ==============================================================================================
RFC5424 = re.compile(rb"^<(\d{1,3})>1 (\S+) (\S+) (\S+) (\d+) (\S+) (-|\[.*?\]) @cee:(\{.*\})$", re.DOTALL)


def parse_syslog(message: bytes) -> dict:
    match = RFC5424.match(message)
    assert match, message[:300]
    pri, stamp, host, app, procid, msgid, _sd, body = match.groups()
    record = json.loads(body)
    assert app == b"jobsupervisor" and msgid.decode() == record["event"][:32]
    assert int(pri) % 8 == {"debug": 7, "info": 6, "warning": 4, "error": 3, "critical": 2}[record["level"]]
    assert dt.datetime.fromisoformat(stamp.decode().replace("Z", "+00:00")).tzinfo is not None
    return record


class UdpReceiver:
    def __init__(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.address = f"127.0.0.1:{self.sock.getsockname()[1]}"
        self.messages: list[bytes] = []
        self.stop = False
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        while not self.stop:
            try:
                self.messages.append(self.sock.recv(70000))
            except socket.timeout:
                continue
            except OSError:
                return

    def records(self) -> list[dict]:
        return [parse_syslog(m) for m in list(self.messages)]

    def close(self):
        self.stop = True
        self.thread.join(2)
        self.sock.close()


class TcpReceiver(UdpReceiver):
    """Accepts connections and splits each stream by RFC 6587 octet counting."""

    def __init__(self):
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen()
        self.listener.settimeout(0.2)
        self.address = f"tcp://127.0.0.1:{self.listener.getsockname()[1]}"
        self.messages = []
        self.connections = 0
        self.stop = False
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        while not self.stop:
            try:
                conn, _ = self.listener.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self.read, args=(conn,), daemon=True).start()

    def read(self, conn):
        buffer = b""
        conn.settimeout(0.2)
        while not self.stop:
            try:
                data = conn.recv(65536)
            except socket.timeout:
                continue
            if not data:
                break
            buffer += data
            while True:
                length, space, rest = buffer.partition(b" ")
                if not space or not length.isdigit() or len(rest) < int(length):
                    assert not space or length.isdigit(), buffer[:100]
                    break
                self.messages.append(rest[:int(length)])
                buffer = rest[int(length):]
        conn.close()

    def close(self):
        self.stop = True
        self.thread.join(2)
        self.listener.close()


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_syslog_sink_sends_cee_json_records(transport, db, make_config, start_supervisor):
    receiver = UdpReceiver() if transport == "udp" else TcpReceiver()
    try:
        config = make_config({"logging": {"format": "syslog", "syslog_address": receiver.address}})
        sup = start_supervisor(config, ready=False)
        events = lambda: [r["event"] for r in receiver.records()]  # noqa: E731
        wait_for(lambda: "supervisor_started" in events() and "child_started" in events(), 20,
                 message=f"supervisor_started over {transport} (stderr: {sup.tail()})")
        started = next(r for r in receiver.records() if r["event"] == "supervisor_started")
        assert started["runner"] and started["pid"] == sup.pid and started["timestamp"]
        job_id = enqueue(db, "chatty", {"lines": 2, "every": 0})
        wait_for(lambda: job_id in [r.get("job_id") for r in receiver.records() if r["event"] == "job_succeeded"],
                 20, message="job_succeeded over syslog")
        # What a child printed went the same way (forwarded by the supervisor).
        wait_for(lambda: any(r["event"] == "child_output" and r.get("line") == "chatty line 1"
                             for r in receiver.records()), 10, message="child_output over syslog")
        sup.signal(signal.SIGTERM)
        assert sup.wait_exit(20) == 0
        wait_for(lambda: "supervisor_stopped" in events(), 5)
        # Nothing went to stderr instead.
        assert sup.log_path.read_text().strip() == "", sup.tail()
        if transport == "tcp":
            assert receiver.connections == 1
    finally:
        receiver.close()


def test_syslog_over_a_unix_socket_and_address_forms(tmp_path):
    from supervisor import logs

    assert logs.parse_syslog_address(None) == ("unix", "/dev/log")
    assert logs.parse_syslog_address("/run/syslog.sock") == ("unix", "/run/syslog.sock")
    assert logs.parse_syslog_address("unix:///run/s") == ("unix", "/run/s")
    assert logs.parse_syslog_address("logs.example:514") == ("udp", ("logs.example", 514))
    assert logs.parse_syslog_address("udp://[::1]:514") == ("udp", ("::1", 514))
    assert logs.parse_syslog_address("tcp://127.0.0.1:601") == ("tcp", ("127.0.0.1", 601))
    for bad in ("nohost", "tcp://h", "http://h:1", "h:99999"):
        with pytest.raises(logs.SyslogAddressError):
            logs.parse_syslog_address(bad)

    path = str(tmp_path / "log.sock")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    server.bind(path)
    server.settimeout(5)
    try:
        sender = logs.SyslogSender(path)
        sender.send(json.dumps({"level": "error", "event": "job_failed", "job_id": 7}), "error", "job_failed")
        record = parse_syslog(server.recv(70000))
        assert record == {"level": "error", "event": "job_failed", "job_id": 7}
        sender.close()
    finally:
        server.close()


def test_syslog_tcp_reconnects_when_the_receiver_drops_it_and_falls_back_to_stderr():
    from supervisor import logs

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    listener.settimeout(5)
    read_end, write_end = os.pipe()
    sender = logs.SyslogSender(f"tcp://127.0.0.1:{listener.getsockname()[1]}", fallback_fd=write_end)

    def frames(conn) -> list[dict]:
        conn.settimeout(5)
        data = conn.recv(65536)
        out = []
        while data:
            length, _, rest = data.partition(b" ")
            out.append(parse_syslog(rest[:int(length)]))
            data = rest[int(length):]
        return out

    try:
        sender.send(json.dumps({"level": "info", "event": "first"}), "info", "first")
        conn, _ = listener.accept()
        assert [r["event"] for r in frames(conn)] == ["first"]
        conn.close()  # the receiver restarts: the next record goes over a new connection, not lost
        time.sleep(0.1)
        sender.send(json.dumps({"level": "warning", "event": "second"}), "warning", "second")
        conn, _ = listener.accept()
        assert [r["event"] for r in frames(conn)] == ["second"]
        conn.close()
        listener.close()  # the receiver is gone: records go to stderr instead
        time.sleep(0.1)
        sender.send(json.dumps({"level": "error", "event": "third"}), "error", "third")
        assert json.loads(os.read(read_end, 65536)) == {"level": "error", "event": "third"}
    finally:
        sender.close()
        listener.close()
        os.close(read_end)
        os.close(write_end)


def test_console_format_writes_human_lines(db, make_config, start_supervisor):
    sup = start_supervisor(make_config({"logging": {"format": "console"}}), ready=False)
    wait_for(lambda: "supervisor_started" in sup.log_path.read_text(), 20, message=sup.tail())
    job_id = enqueue(db, "chatty", {"lines": 1, "every": 0})
    try:
        wait_for(lambda: job_row(db, job_id)["status"] == "succeeded"
                 and any("job_succeeded" in line and f"job_id={job_id} " in line
                         for line in sup.log_path.read_text().splitlines()), 20)
    except AssertionError:
        raise AssertionError(f"job {job_row(db, job_id)}\n{sup.tail()}") from None
    sup.signal(signal.SIGTERM)
    assert sup.wait_exit(20) == 0
    lines = [line for line in sup.log_path.read_text().splitlines() if line.strip()]
    assert not any(line.lstrip().startswith("{") for line in lines), lines  # no JSON, children's included
    started = next(line for line in lines if "supervisor_started" in line)
    assert re.match(r"^\d{4}-\d\d-\d\dT\S+ \[info\s*\] supervisor_started\s", started), started
    assert "runner=" in started and "\x1b[" not in started  # not a terminal: no colour
    assert any("child_output" in line and "chatty line 0" in line for line in lines)


def test_console_colours_on_a_terminal(monkeypatch):
    from supervisor import logs

    master, slave = os.openpty()
    try:
        monkeypatch.delenv("NO_COLOR", raising=False)
        monkeypatch.delenv("FORCE_COLOR", raising=False)
        logs.configure("console", fd=slave)
        logs.get_logger().warning("gate_closed", reason="cpu")
        output = os.read(master, 65536)
        assert b"gate_closed" in output and b"\x1b[" in output
        monkeypatch.setenv("NO_COLOR", "1")
        assert not logs.use_colors(slave)
    finally:
        logs.configure("json")
        os.close(master)
        os.close(slave)


# ==============================================================================================
# Secrets
# ==============================================================================================
SECRET = "Sup3r-S3cret"


def with_password(dsn: str, password: str) -> str:
    parts = urlsplit(dsn)
    if parts.username:
        netloc = f"{parts.username}:{password}@{parts.netloc.rpartition('@')[2]}"
        return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
    sep = "&" if parts.query else ""
    return urlunsplit((parts.scheme, parts.netloc, parts.path, f"{parts.query}{sep}password={password}",
                       parts.fragment))


def test_dsn_password_is_masked_in_every_log_line_and_error(db, dsn, make_config, start_supervisor):
    secret_dsn = with_password(dsn, SECRET)
    try:
        psycopg.connect(secret_dsn, connect_timeout=5).close()
    except psycopg.OperationalError:
        pytest.skip("the test server checks passwords; this test needs one that does not")
    sup = start_supervisor(make_config({"database": {"dsn": secret_dsn},
                                        "imports": ["jobhandlers", "ophandlers"]}))
    sup.wait_ready()
    assert "***" in sup.wait_event("supervisor_started")["dsn"]
    job_id = enqueue(db, "leak", {"dsn": secret_dsn, "password": SECRET})
    failed = sup.wait_event("job_failed", job_id=job_id)
    assert "could not use" in failed["error"] and "***" in failed["error"]
    sup.wait_event("child_output")
    sup.signal(signal.SIGTERM)
    assert sup.wait_exit(20) == 0
    log = sup.log_path.read_text()
    assert SECRET not in log and "connecting to" in log

    # The database is unreachable: the waiting supervisor's db_unavailable lines, and the CLI.
    port = free_port()
    for password in (SECRET, "se cret pw", "s3c%ret"):  # libpq quotes the last two in its errors
        down = f"postgresql://jsuser:{password}@127.0.0.1:{port}/nodb"
        config = make_config({"database": {"dsn": down}})
        result = cli(config, "status")
        # Nothing listens there: a runtime failure; a DSN libpq cannot parse: a configuration error.
        assert result.returncode == (1 if password == SECRET else 2), result.stderr
        assert "cannot connect to database postgresql://jsuser:***@" in result.stderr
        assert password not in result.stderr + result.stdout, result.stderr
        result = cli(config, "config")
        assert password not in result.stdout and "jsuser:***@" in result.stdout
    waiting = start_supervisor(make_config({"database": {"dsn": f"postgresql://jsuser:{SECRET}@127.0.0.1:{port}/nodb"}}),
                               ready=False)
    waiting.wait_event("db_unavailable", count=2)
    waiting.signal(signal.SIGTERM)
    assert waiting.wait_exit(20) == 0
    assert SECRET not in waiting.log_path.read_text()
    # A DSN libpq cannot parse is a configuration error, reported once and masked.
    broken = start_supervisor(make_config({"database": {"dsn": f"postgresql://jsuser:se cret pw@127.0.0.1:{port}/db"}}),
                              ready=False)
    assert broken.wait_exit(20) == 2
    text = broken.log_path.read_text()
    assert "se cret pw" not in text and "cannot connect to database" in text, text


def test_kill_seen_by_the_heartbeat_before_its_notify_is_reported_as_a_kill(db, make_config, start_supervisor):
    """The lock check can find a killed job before the kill's NOTIFY arrives (or when it was
    missed): it is still a kill, logged and counted as one, not a lost lock."""
    sup = start_supervisor(make_config({"heartbeat_interval": "1s"}))
    job_id = enqueue(db, "sleep", {"seconds": 60})
    wait_handler_started(db, job_id)
    child = sup.wait_event("job_started", job_id=job_id)["child_pid"]
    # What jobs_kill does, without the NOTIFY that would make it immediate.
    db.execute("UPDATE jobs SET status = 'failed', finished_at = now(), updated_at = now(),"
               " last_error = 'killed by operator' WHERE id = %s", (job_id,))
    sup.wait_event("job_failed", job_id=job_id, error="killed by operator", timeout=10)
    assert sup.wait_event("child_exited", child_pid=child)["reason"] == "killed"
    assert not sup.find("job_lock_lost", job_id=job_id)
    assert (job_row(db, job_id)["status"], job_row(db, job_id)["last_error"]) == ("failed", "killed by operator")
