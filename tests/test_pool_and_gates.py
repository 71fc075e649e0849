"""Gates and the elastic pool, end to end (issue #4): real supervisors, real children, a real
Postgres.

Concurrency is measured, never assumed: the ``peak`` / ``peak_other`` handlers record a
"start" and an "end" row with ``clock_timestamp()`` on their own connection around a hold,
and :func:`peak` sweeps those intervals for the most that ran at once. Every wait is a
condition with a deadline; the holds only give jobs a chance to overlap.
"""

from __future__ import annotations

import datetime as dt
import signal
import time
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest

from conftest import cli_env, job_row, run_cli, statuses, wait_for

from supervisor.enqueue import enqueue, enqueue_many

pytestmark = pytest.mark.timeout(60)

INF = dt.datetime.max.replace(tzinfo=dt.timezone.utc)


# --- measuring --------------------------------------------------------------------------------
@dataclass(frozen=True)
class Run:
    """One attempt of a ``peak`` handler: when it held its slot, where, and as which job."""

    job_id: int
    job_type: str
    queue: str
    batch: str | None
    start: dt.datetime
    end: dt.datetime  # INF while it still runs
    pid: int


def runs(db, **match: str) -> list[Run]:
    """Every recorded hold, optionally only those whose job_type / queue / batch match."""
    rows = db.execute("""
        SELECT j.id, j.job_type, j.queue, j.payload->>'batch', s.at, e.at, s.pid
        FROM jobs j
        JOIN effects s ON s.job_id = j.id AND s.kind = 'start'
        LEFT JOIN effects e ON e.job_id = j.id AND e.kind = 'end' AND e.attempt = s.attempt
        ORDER BY s.at""").fetchall()
    out = [Run(i, t, q, b, s, e or INF, p) for i, t, q, b, s, e, p in rows]
    return [r for r in out if all(getattr(r, k) == v for k, v in match.items())]


def peak(selected: list[Run]) -> int:
    """The most holds that overlapped at any instant (a start at the very instant of an end
    counts as overlapping: the stricter reading)."""
    edges = sorted([(r.start, 0, +1) for r in selected] + [(r.end, 1, -1) for r in selected])
    running = best = 0
    for _, _, step in edges:
        running += step
        best = max(best, running)
    return best


def running_at(selected: list[Run], at: dt.datetime) -> int:
    return sum(1 for r in selected if r.start <= at < r.end)


def wait_all_succeeded(db, count: int, timeout: float = 30.0) -> None:
    try:
        wait_for(lambda: statuses(db) == {"succeeded": count}, timeout, message=f"{count} jobs succeeded")
    except AssertionError as error:
        raise AssertionError(f"{error}; now {statuses(db)}") from None


def holds(job_type: str, count: int, hold: float, payload: dict | None = None, **extra) -> list[dict]:
    """``count`` jobs for enqueue_many whose handler holds its slot ``hold`` seconds."""
    return [{"job_type": job_type, "payload": {"hold": hold, **(payload or {})}, **extra} for _ in range(count)]


# --- the pool's processes -------------------------------------------------------------------
def live_children(sup) -> list[int]:
    out = []
    for pid in sup.children():
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                out.append(pid)
        except psutil.NoSuchProcess:
            pass
    return out


def ready_children(sup) -> list[int]:
    """Live children past their start-up (their title no longer says "starting")."""
    out = []
    for pid in live_children(sup):
        try:
            title = " ".join(psutil.Process(pid).cmdline())
        except psutil.NoSuchProcess:
            continue
        if title.startswith("jobsupervisor: child") and "starting" not in title:
            out.append(pid)
    return out


def wait_children(sup, count: int, timeout: float = 15.0) -> list[int]:
    """Until exactly ``count`` children are alive and every one of them is ready."""
    return wait_for(lambda: len(live_children(sup)) == count and len(pids := ready_children(sup)) == count and pids,
                    timeout, message=f"{count} ready children (have {live_children(sup)})\n{sup.tail()}")


def log_time(event: dict) -> dt.datetime:
    return dt.datetime.fromisoformat(event["timestamp"].replace("Z", "+00:00"))


# --- static limits: per type, per queue, fleet-wide -----------------------------------------
def test_type_max_concurrency_is_reached_never_exceeded_and_does_not_block_other_types(
        db, make_config, start_supervisor):
    # poll_interval 60s: only the loop's own claims move work, no safety poll hides a stall.
    sup = start_supervisor(make_config({"children": {"min": 4, "max": 4}, "poll_interval": "60s",
                                        "jobs": {"peak": {"max_concurrency": 2}}}))
    wait_children(sup, 4)
    # More limited jobs than one claim looks at (32), all ahead of the others by priority.
    enqueue_many(db, holds("peak", 36, 0.1, priority=10) + holds("peak_other", 6, 0.3))
    wait_all_succeeded(db, 42)

    limited, others = runs(db, job_type="peak"), runs(db, job_type="peak_other")
    assert peak(limited) == 2
    assert peak(limited + others) == 4
    # The saturated type did not hold the others back: they all started long before the
    # limited backlog (which outranks them) was through, while it ran at its limit.
    assert max(r.start for r in others) < max(r.start for r in limited)
    assert any(running_at(limited, r.start) == 2 for r in others)


def test_queue_concurrency_is_reached_never_exceeded_and_does_not_block_other_queues(
        db, make_config, start_supervisor):
    sup = start_supervisor(make_config({"children": {"min": 4, "max": 4}, "poll_interval": "60s",
                                        "queues": {"narrow": {"concurrency": 2}, "default": None}}))
    wait_children(sup, 4)
    enqueue_many(db, holds("peak", 36, 0.1, queue="narrow", priority=10) + holds("peak", 6, 0.3))
    wait_all_succeeded(db, 42)

    narrow, default = runs(db, queue="narrow"), runs(db, queue="default")
    assert peak(narrow) == 2
    assert peak(narrow + default) == 4
    assert max(r.start for r in default) < max(r.start for r in narrow)
    assert any(running_at(narrow, r.start) == 2 for r in default)


def test_global_concurrency_holds_across_two_supervisors(db, make_config, start_supervisor):
    config = make_config({"children": {"min": 4, "max": 4}, "poll_interval": "60s",
                          "jobs": {"peak": {"global_concurrency": 2}}})
    sups = [start_supervisor(config), start_supervisor(config)]
    for sup in sups:
        wait_children(sup, 4)
    wait_for(lambda: db.execute("SELECT count(*) FROM jobs_runners WHERE 'peak' = ANY(job_types)").fetchone()[0] == 2,
             message="both runners know their job types")
    # Both supervisors hear the NOTIFYs of one insert at once and race for the same rows; a
    # few more rounds, a few more races.
    enqueue_many(db, holds("peak", 36, 0.1, priority=10) + holds("peak_other", 4, 0.3))
    wait_all_succeeded(db, 40)
    for done in (48, 56, 64):
        enqueue_many(db, holds("peak", 8, 0.1))
        wait_all_succeeded(db, done)

    limited, others = runs(db, job_type="peak"), runs(db, job_type="peak_other")
    assert peak(limited) == 2
    # A type saturated fleet-wide is skipped, not waited behind.
    assert max(r.start for r in others) < max(r.start for r in limited)
    children = {pid for sup in sups for pid in sup.started_children()}
    assert {r.pid for r in limited + others} <= children


def test_a_fleet_wide_limited_type_starts_its_next_job_when_the_last_one_ends(db, make_config, start_supervisor):
    """The supervisor's own finished jobs count as running until it records them: it records
    them before the limited claim, so the next job of the type starts at once rather than at
    the next fleet check (a second later, each time)."""
    config = make_config({"children": {"min": 2, "max": 2}, "poll_interval": "60s",
                          "jobs": {"peak": {"global_concurrency": 1}}})
    sup = start_supervisor(config)
    wait_children(sup, 2)
    enqueue_many(db, holds("peak", 12, 0.05))
    wait_all_succeeded(db, 12)

    limited = runs(db, job_type="peak")
    assert peak(limited) == 1
    gaps = sorted((b.start - a.end).total_seconds() for a, b in zip(limited, limited[1:]))
    # Ends are recorded by the handler before it returns, so a gap includes the report and the
    # claim (milliseconds here); a fleet check between each would make every gap ~1 s.
    assert gaps[len(gaps) // 2] < 0.5, gaps


def test_global_concurrency_binds_when_each_supervisor_alone_stays_below_it(db, make_config, start_supervisor):
    """Each supervisor may run 2 (max_concurrency), the fleet 3: the limit is only reached with
    both running the type at once, and neither may take the third slot of the other."""
    config = make_config({"children": {"min": 4, "max": 4}, "poll_interval": "60s",
                          "jobs": {"peak": {"max_concurrency": 2, "global_concurrency": 3}}})
    sups = [start_supervisor(config), start_supervisor(config)]
    for sup in sups:
        wait_children(sup, 4)
    wait_for(lambda: db.execute("SELECT count(*) FROM jobs_runners WHERE 'peak' = ANY(job_types)").fetchone()[0] == 2,
             message="both runners know their job types")
    enqueue_many(db, holds("peak", 24, 0.2))
    wait_all_succeeded(db, 24)

    every = runs(db)
    mine = [[r for r in every if r.pid in set(sup.started_children())] for sup in sups]
    assert sum(map(len, mine)) == 24
    assert all(1 <= peak(m) <= 2 for m in mine), [peak(m) for m in mine]
    assert peak(every) == 3  # so both ran the type at once, and together never more than 3


# --- the load gate ------------------------------------------------------------------------------
def status_text(config: Path) -> str:
    result = run_cli("-c", str(config), "status")
    assert result.returncode == 0, result
    return result.stdout


def test_load_gate_with_impossible_threshold_holds_every_job_and_reopens_after_sighup(
        db, make_config, start_supervisor):
    ids = [enqueue(db, "noop") for _ in range(3)]  # waiting before the supervisor's first claim
    # Only memory can close it (CPU percent never exceeds 100): the reason is known in advance.
    impossible = {"gate": {"kind": "load", "memory_available_min": "100TB", "cpu_percent_max": 100,
                           "loadavg_per_core_max": 1000}}
    config = make_config(impossible, name="load.yaml")
    sup = start_supervisor(config)

    closed = sup.wait_event("gate_closed")
    assert closed["reason"].startswith("machine load: memory available"), closed
    assert closed["memory_available"] > 0 and "cpu_percent" in closed and "loadavg_per_core" in closed
    # The gate is asked again every second; the runner row publishes it with the heartbeat.
    text = wait_for(lambda: "CLOSED" in (out := status_text(config)) and out, 10, interval=0.3,
                    message="status shows the gate")
    assert "gate load: CLOSED (machine load: memory available" in text, text
    assert "memory available" in text.split(");", 1)[1]  # the values measured
    assert [job_row(db, i)["status"] for i in ids] == ["queued"] * 3
    assert db.execute("SELECT max(attempts) FROM jobs").fetchone()[0] == 0
    assert not sup.find("job_started")
    assert len(sup.find("gate_closed")) == 1  # logged when it closed, not on every check

    make_config({"gate": {"kind": "load", "cpu_percent_max": 100, "memory_available_min": "1MB",
                          "loadavg_per_core_max": 1000}}, name="load.yaml")
    sup.signal(signal.SIGHUP)
    sup.wait_event("config_reloaded")
    opened = sup.wait_event("gate_opened")
    assert "memory available" in opened["was"] and opened["memory_available"] > 0
    wait_all_succeeded(db, 3)
    wait_for(lambda: "gate load: open" in status_text(config), 10, interval=0.3, message="status shows the gate open")


# --- a gate in Python ----------------------------------------------------------------------------
@pytest.fixture
def flag(tmp_path):
    """The file tests/testgates.py:flag reads, and the environment that points it there."""
    path = tmp_path / "gate-flag"
    return path, cli_env(TESTGATE_FLAG=str(path))


def calls(flag_path: Path) -> int:
    try:
        return len(Path(f"{flag_path}.calls").read_text().splitlines())
    except FileNotFoundError:
        return 0


def test_python_gate_that_raises_holds_jobs_logs_once_and_jobs_flow_once_it_is_fixed(
        db, make_config, start_supervisor, flag):
    path, env = flag
    path.write_text("raise")
    ids = [enqueue(db, "noop") for _ in range(2)]
    config = make_config({"gate": {"python": "testgates:flag"}})
    sup = start_supervisor(config, env=env)

    closed = sup.wait_event("gate_closed")
    assert closed["reason"] == "gate testgates:flag raised RuntimeError", closed
    asked = calls(path)
    wait_for(lambda: calls(path) >= asked + 3, 10, message="the gate asked three more times")
    errors = sup.find("gate_error")
    assert len(errors) == 1, errors  # rate-limited: one line, not one per check
    assert errors[0]["level"] == "error"
    assert "RuntimeError: the test gate was asked to raise" in errors[0]["error"]
    assert errors[0]["gate"] == "testgates:flag"
    assert sup.proc.poll() is None
    assert [job_row(db, i)["status"] for i in ids] == ["queued", "queued"]
    assert not sup.find("job_started")
    assert "gate static + python testgates:flag: CLOSED (gate testgates:flag raised RuntimeError)" in status_text(config)

    path.write_text("open")
    opened = sup.wait_event("gate_opened")
    assert opened["was"] == closed["reason"]
    wait_all_succeeded(db, 2)
    assert len(sup.find("gate_closed")) == 1


def test_python_gate_returning_an_int_caps_running_jobs(db, make_config, start_supervisor, flag):
    path, env = flag
    path.write_text("2")
    sup = start_supervisor(make_config({"children": {"min": 4, "max": 4}, "gate": {"python": "testgates:flag"}}),
                           env=env)
    wait_children(sup, 4)
    enqueue_many(db, holds("peak", 12, 0.2))
    wait_all_succeeded(db, 12)
    assert peak(runs(db)) == 2
    # A cap that is reached is not a closed gate.
    assert not sup.find("gate_closed") and not sup.find("gate_error")


@pytest.mark.parametrize("spec", ["testgates_missing:flag", "testgates:no_such_function"])
def test_unloadable_gate_python_exits_2_with_one_line(spec, make_config):
    result = run_cli("-c", str(make_config({"gate": {"python": spec}})), "run", timeout=30)
    assert result.returncode == 2, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "gate.python" in lines[0] and spec in lines[0]
    assert "Traceback" not in result.stderr


# --- the elastic pool ---------------------------------------------------------------------------
def test_first_job_runs_on_the_warm_child_without_waiting_for_a_spawn(db, make_config, start_supervisor):
    sup = start_supervisor(make_config({"children": {"min": 1, "max": 4}}))
    (warm,) = wait_children(sup, 1)
    job_id = enqueue(db, "noop")
    started = sup.wait_event("job_started", job_id=job_id)
    assert started["child_pid"] == warm
    row = wait_for(lambda: (r := job_row(db, job_id))["status"] == "succeeded" and r, message="job succeeded")
    assert (row["locked_at"] - row["created_at"]).total_seconds() < 0.5
    assert sup.started_children() == [warm]  # no child was started for it


def test_pool_grows_to_max_under_a_backlog_and_shrinks_back_to_min_when_idle(db, make_config, start_supervisor):
    sup = start_supervisor(make_config({"children": {"min": 1, "max": 4, "idle_timeout": "1s"}}))
    wait_children(sup, 1)
    enqueue_many(db, holds("peak", 16, 0.5))
    most = 0

    def grown():
        nonlocal most
        most = max(most, len(live_children(sup)))
        return most >= 4

    wait_for(grown, 15, message="the pool grew to children.max")
    wait_all_succeeded(db, 16)
    assert peak(runs(db)) == 4
    wait_children(sup, 1, timeout=15)  # back to min once idle for idle_timeout
    retiring = sup.find("child_retiring")
    assert len(retiring) >= 3 and all(e["idle_seconds"] >= 1.0 for e in retiring)
    assert most == 4 and len(sup.started_children()) == 4  # grew once for the backlog: no churn
    time.sleep(1.5)  # longer than idle_timeout: min is kept, not retired too
    assert len(live_children(sup)) == 1


def test_child_recycled_after_max_jobs(db, make_config, start_supervisor):
    sup = start_supervisor(make_config({"children": {"min": 1, "max": 1, "max_jobs": 3}}))
    ids = enqueue_many(db, [{"job_type": "effect"} for _ in range(7)])
    wait_all_succeeded(db, 7)
    pids = [db.execute("SELECT pid FROM effects WHERE job_id = %s", (i,)).fetchone()[0] for i in ids]
    assert len(set(pids)) == 3 and [pids.count(p) for p in dict.fromkeys(pids)] == [3, 3, 1], pids
    recycled = sup.find("child_recycled")
    assert [(e["reason"], e["jobs"]) for e in recycled] == [("max_jobs", 3), ("max_jobs", 3)]
    assert [e["child_pid"] for e in recycled] == list(dict.fromkeys(pids))[:2]
    for pid in list(dict.fromkeys(pids))[:2]:
        exited = sup.wait_event("child_exited", child_pid=pid)
        assert (exited["reason"], exited["status"]) == ("recycle", "exit status 0")


def test_child_recycled_when_its_rss_after_a_job_exceeds_max_memory(db, make_config, start_supervisor):
    sup = start_supervisor(make_config({"children": {"min": 1, "max": 1, "max_memory": "150MB"}}))
    small = enqueue(db, "effect")
    wait_all_succeeded(db, 1)
    big = enqueue(db, "hog", {"mb": 200})
    after = enqueue(db, "effect")
    wait_all_succeeded(db, 3)
    pid = {i: db.execute("SELECT pid FROM effects WHERE job_id = %s", (i,)).fetchone()[0] for i in (small, big, after)}
    assert pid[small] == pid[big] != pid[after]  # a small job does not recycle; the hog does
    (recycled,) = sup.find("child_recycled")
    assert recycled["reason"] == "max_memory" and recycled["child_pid"] == pid[big]
    assert recycled["rss"] > 150 * 2**20 and recycled["max_memory"] == 150 * 2**20
    exited = sup.wait_event("child_exited", child_pid=pid[big])
    assert exited["reason"] == "recycle"


# --- signals --------------------------------------------------------------------------------------
def test_sighup_reads_a_changed_gate_module_again_and_a_broken_one_changes_nothing(
        db, make_config, start_supervisor, tmp_path):
    """gate.python's module lives next to the config (its directory is on the path). Edited
    and SIGHUPed, the new code decides; an edit that does not load is refused as a whole."""
    gate = tmp_path / "hupgate.py"
    gate.write_text("def gate(state):\n    return False\n")
    config = make_config({"gate": {"python": "hupgate:gate"}})
    sup = start_supervisor(config)
    ids = [enqueue(db, "noop") for _ in range(2)]
    assert sup.wait_event("gate_closed")["reason"] == "gate hupgate:gate denied"

    gate.write_text("def gate(state)\n    return True\n")  # no colon
    sup.signal(signal.SIGHUP)
    failed = sup.wait_event("config_reload_failed")
    assert "gate.python: cannot load 'hupgate:gate': SyntaxError" in failed["error"], failed
    sup.wait_event("gate_closed", count=1)
    assert [job_row(db, i)["status"] for i in ids] == ["queued", "queued"]
    assert not sup.find("config_reloaded") and not sup.find("gate_opened")

    gate.write_text("def gate(state):\n    return state.busy < 1\n")
    sup.signal(signal.SIGHUP)
    sup.wait_event("config_reloaded")
    assert sup.wait_event("gate_opened")["was"] == "gate hupgate:gate denied"
    wait_all_succeeded(db, 2)
    assert sup.proc.poll() is None


def test_sighup_lowering_a_type_limit_applies_at_once_after_running_jobs_finish(db, make_config, start_supervisor):
    children = {"min": 3, "max": 3}
    config = make_config({"children": children, "jobs": {"peak": {"max_concurrency": 3}}}, name="hup.yaml")
    sup = start_supervisor(config)
    old = set(wait_children(sup, 3))
    first = enqueue_many(db, holds("peak", 3, 1.5, payload={"batch": "before"}))
    wait_for(lambda: len(runs(db, batch="before")) == 3, message="the first batch runs")

    make_config({"children": children, "jobs": {"peak": {"max_concurrency": 1}}}, name="hup.yaml")
    sup.signal(signal.SIGHUP)
    sup.wait_event("config_reloaded")
    enqueue_many(db, holds("peak", 4, 0.2, payload={"batch": "after"}))
    wait_all_succeeded(db, 7)

    before, after = runs(db, batch="before"), runs(db, batch="after")
    assert peak(before) == 3
    assert peak(after) == 1
    # No job of the new batch started while the old ones still ran: the new limit counts them.
    assert all(running_at(before + after, r.start) == 1 for r in after)
    # The running jobs finished in their old children, which then left for the reload.
    assert {r.pid for r in before} == old and all(job_row(db, i)["attempts"] == 1 for i in first)
    for pid in old:
        exited = sup.wait_event("child_exited", child_pid=pid)
        assert (exited["reason"], exited["status"]) == ("reload", "exit status 0")
    assert not {r.pid for r in after} & old
    assert not sup.find("job_returned") and not sup.find("job_worker_died")


def test_sighup_with_a_gate_that_cannot_load_keeps_the_old_config_entirely(db, make_config, start_supervisor):
    config = make_config({"children": {"min": 1, "max": 1}}, name="badgate.yaml")
    sup = start_supervisor(config)
    (child,) = wait_children(sup, 1)
    make_config({"children": {"min": 3, "max": 3}, "gate": {"python": "testgates_missing:flag"}}, name="badgate.yaml")
    sup.signal(signal.SIGHUP)
    failed = sup.wait_event("config_reload_failed")
    assert "gate.python" in failed["error"] and "testgates_missing" in failed["error"]
    job_id = enqueue(db, "noop")  # a few turns of the loop later: still the old pool bounds
    assert sup.wait_event("job_started", job_id=job_id)["child_pid"] == child
    wait_all_succeeded(db, 1)
    assert sup.started_children() == [child] and live_children(sup) == [child]
    assert not sup.find("config_reloaded")


def test_sigttin_adds_a_child_to_a_grown_pool_and_beyond_max_raises_it_sigttou_takes_one_away(
        db, make_config, start_supervisor, tmp_path):
    sup = start_supervisor(make_config({"children": {"min": 1, "max": 2, "idle_timeout": "60s"}}))
    wait_children(sup, 1)
    enqueue_many(db, holds("peak", 2, 0.3))
    wait_all_succeeded(db, 2)
    wait_children(sup, 2)  # grew for the work, above min: SIGTTIN adds to what runs now
    sup.signal(signal.SIGTTIN)
    resized = sup.wait_event("pool_resized")
    assert (resized["children_min"], resized["children_max"]) == (3, 3)
    wait_children(sup, 3)
    sup.signal(signal.SIGTTIN)
    resized = sup.wait_event("pool_resized", count=2)
    assert (resized["children_min"], resized["children_max"]) == (4, 4)
    wait_children(sup, 4)
    enqueue_many(db, holds("peak", 8, 0.3))
    wait_all_succeeded(db, 10)
    assert peak(runs(db)) == 4  # the raised maximum is used

    sup.signal(signal.SIGTTOU)
    resized = sup.wait_event("pool_resized", signal="SIGTTOU")
    assert (resized["children_min"], resized["children_max"]) == (3, 3)
    wait_children(sup, 3)
