"""Jobs queued ahead in a child (quick job types, while a backlog waits): handed back unstarted
when the job in front of them turns long or one of them is killed, recorded in batches, and
never run twice or lost."""

from __future__ import annotations

import collections
import os
import signal
import time

from conftest import job_row, statuses, wait_for

from supervisor import enqueue_many
from supervisor.admin import act
from supervisor.parent import AHEAD_FIRST
from supervisor.queries import queries_for


def started(db, job_id: int) -> int:
    return db.execute("SELECT count(*) FROM effects WHERE job_id = %s AND kind = 'started'", (job_id,)).fetchone()[0]


def warm_up(db, sup) -> None:
    """A few quick 'sleep' jobs first: the supervisor learns the type is quick, so it queues
    the next ones ahead for a busy child."""
    enqueue_many(db, [{"job_type": "sleep", "payload": {"seconds": 0}} for _ in range(5)])
    wait_for(lambda: statuses(db).get("succeeded") == 5, message="warm-up jobs done")
    sup.wait_event("job_succeeded", count=5)


def long_then_quick(db, quick: int) -> tuple[int, list[int]]:
    ids = enqueue_many(db, [{"job_type": "sleep", "payload": {"seconds": 4}}]
                       + [{"job_type": "sleep", "payload": {"seconds": 0}} for _ in range(quick)])
    return ids[0], ids[1:]


def test_queued_jobs_are_given_back_when_the_job_in_front_turns_long(db, make_config, start_supervisor):
    sup = start_supervisor(make_config({"children": {"min": 1, "max": 1}}))
    warm_up(db, sup)
    long_id, quick = long_then_quick(db, 8)
    wait_for(lambda: job_row(db, long_id)["status"] == "running", message="the long job running")
    # Claimed for the busy child behind the long job, then given back after 0.5 s: the reader
    # thread of the child answers while the handler still sleeps.
    returned = sup.wait_event("job_returned", timeout=5)
    assert "not started" in returned["reason"] and "long job" in returned["reason"], returned
    assert returned["job_id"] in quick
    # While the long job runs, nothing queued stays claimed, and none was started or counted.
    wait_for(lambda: all(job_row(db, i)["status"] == "queued" for i in quick), timeout=3,
             message="the quick jobs back in the queue while the long one runs")
    assert job_row(db, long_id)["status"] == "running"
    assert all(job_row(db, i)["attempts"] == 0 for i in quick)
    assert sum(started(db, i) for i in quick) == 0
    # Then everything runs, once each.
    wait_for(lambda: statuses(db) == {"succeeded": 5 + 1 + len(quick)}, timeout=20, message=f"all done ({statuses(db)})")
    assert [(started(db, i), job_row(db, i)["attempts"]) for i in quick] == [(1, 1)] * len(quick)
    assert sup.find("job_succeeded", job_id=long_id)


def test_killing_a_job_queued_in_a_child_never_starts_it(db, make_config, start_supervisor):
    sup = start_supervisor(make_config({"children": {"min": 1, "max": 1}}))
    warm_up(db, sup)
    long_id, quick = long_then_quick(db, 5)

    def claimed_behind_the_long_job() -> list[int]:
        lock = job_row(db, long_id)["locked_by"]
        return [i for i in quick if lock and job_row(db, i)["status"] == "running" and job_row(db, i)["locked_by"] == lock]

    # In process, not through the CLI: the child gives its queue back on its own after 0.5 s.
    queued_here = wait_for(claimed_behind_the_long_job, timeout=5, message="jobs queued behind the long job")
    victim = queued_here[-1]
    assert act(db, "jobs", "kill", [victim]).changed == [victim]
    wait_for(lambda: statuses(db) == {"succeeded": 5 + 1 + len(quick) - 1, "failed": 1}, timeout=20,
             message=f"all done ({statuses(db)})")
    row = job_row(db, victim)
    assert (row["status"], row["last_error"]) == ("failed", "killed by operator")
    assert started(db, victim) == 0  # it never ran
    assert job_row(db, long_id)["status"] == "succeeded"  # the job in front was not killed
    assert [started(db, i) for i in quick if i != victim] == [1] * (len(quick) - 1)
    assert not sup.find("job_started", job_id=victim)


def test_many_quick_jobs_each_succeed_once_and_are_logged_once(db, make_config, start_supervisor):
    sup = start_supervisor(make_config({"children": {"min": 3, "max": 3}}))
    ids = enqueue_many(db, [{"job_type": "noop"} for _ in range(3000)])
    wait_for(lambda: statuses(db) == {"succeeded": 3000}, timeout=60, message=f"all done ({statuses(db)})")
    rows = db.execute("SELECT attempts, finished_at >= locked_at FROM jobs").fetchall()
    assert set(rows) == {(1, True)}
    # One job_started and one job_succeeded line per job, started before succeeded.
    sup.wait_event("job_succeeded", count=3000, timeout=10)
    events = [(e["event"], e["job_id"]) for e in sup.events() if e["event"] in ("job_started", "job_succeeded")]
    assert sorted(i for e, i in events if e == "job_started") == sorted(ids)
    assert sorted(i for e, i in events if e == "job_succeeded") == sorted(ids)
    position = {(e, i): n for n, (e, i) in enumerate(events)}
    assert all(position[("job_started", i)] < position[("job_succeeded", i)] for i in ids)
    # Claimed in batches, not one by one.
    claims = db.execute("SELECT count(DISTINCT locked_at) FROM jobs").fetchone()[0]
    assert claims < 3000 / 5, claims


def test_a_burst_is_claimed_in_statements_that_start_small_and_grow(db, make_config, start_supervisor):
    """A statement claiming a thousand rows keeps Postgres busy for 50-100 ms while children
    with nothing queued wait: the first claims ahead of a burst are small (AHEAD_FIRST rows),
    each next one at most twice as big."""
    sup = start_supervisor(make_config({"children": {"min": 2, "max": 2}}))
    enqueue_many(db, [{"job_type": "noop"} for _ in range(20)])
    wait_for(lambda: statuses(db) == {"succeeded": 20}, message="warm-up jobs done")
    sup.wait_event("job_succeeded", count=20)  # the supervisor knows noop is quick now
    db.execute("TRUNCATE jobs")
    enqueue_many(db, [{"job_type": "noop"} for _ in range(4000)])
    wait_for(lambda: statuses(db) == {"succeeded": 4000}, timeout=60, message=f"all done ({statuses(db)})")
    # One statement, one transaction, one now(): rows that share locked_at were claimed together.
    sizes = [n for (n,) in db.execute("SELECT count(*) FROM jobs GROUP BY locked_at ORDER BY locked_at")]
    # Two statements may be out at once and start in either order: the first three took at most
    # the first three caps (the idle children's claim, then 64 and 128 ahead, or 64, 128, 256).
    assert max(sizes[:3]) <= 4 * AHEAD_FIRST, sizes[:10]
    assert all(n <= AHEAD_FIRST * 2 ** i for i, n in enumerate(sizes)), sizes[:10]
    assert db.execute("SELECT DISTINCT attempts FROM jobs").fetchall() == [(1,)]


def test_a_claim_whose_answer_was_lost_with_the_connection_is_given_back(db, make_config, start_supervisor):
    """A claim can commit while the connection breaks before its rows arrive: the jobs are
    then locked by this runner's children without the supervisor knowing them. After the
    reconnect it finds them and puts them back (not counted), instead of leaving them 'running'
    until lock_timeout."""
    sup = start_supervisor(make_config({"children": {"min": 1, "max": 1}}))
    warm_up(db, sup)
    runner = wait_for(lambda: db.execute("SELECT id FROM jobs_runners").fetchone(), message="runner row")[0]
    child_pid = sup.wait_event("child_started")["child_pid"]
    (job_id,) = enqueue_many(db, [{"job_type": "sleep", "payload": {"seconds": 0}, "delay": 3600}])
    # What the lost claim did: the row is ours, the supervisor never heard of it.
    db.execute("UPDATE jobs SET status = 'running', attempts = 1, run_at = now(), locked_by = %s, "
               "locked_at = now() WHERE id = %s", (f"{runner}/{child_pid}", job_id))
    rows = db.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() "
                      "AND pid <> pg_backend_pid() AND application_name = 'jobsupervisor'").fetchall()
    assert rows
    returned = sup.wait_event("job_returned", job_id=job_id, timeout=15)
    assert "connection broke" in returned["reason"]
    wait_for(lambda: job_row(db, job_id)["status"] == "succeeded", timeout=15, message="the job ran after all")
    assert (job_row(db, job_id)["attempts"], started(db, job_id)) == (1, 1)


def test_cutting_the_claims_connection_during_a_backlog_loses_and_repeats_nothing(db, make_config, start_supervisor,
                                                                                 tmp_path):
    """While a backlog of quick jobs drains, claims and success records travel on the courier's
    connection ('jobsupervisor-claims'). Cut it again and again: a claim that committed without
    its answer is given back (not counted), a success batch whose commit is uncertain is
    recorded again without counting twice. Every job runs once, attempt 1."""
    sup = start_supervisor(make_config({"children": {"min": 2, "max": 2}}))
    warm_up(db, sup)
    runs = tmp_path / "runs.txt"
    ids = enqueue_many(db, [{"job_type": "tally", "payload": {"file": str(runs)}} for _ in range(8000)])
    cuts = 0
    deadline = time.monotonic() + 60
    while statuses(db).get("queued", 0) > 1000 and time.monotonic() < deadline:
        cuts += len(db.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                               "WHERE datname = current_database() AND application_name = 'jobsupervisor-claims'"
                               ).fetchall())
        time.sleep(0.1)  # let it reconnect and claim again (the cut is the event under test)
    assert cuts >= 2, f"the claims connection was cut {cuts} times"
    wait_for(lambda: statuses(db) == {"succeeded": 5 + len(ids)}, timeout=60, message=f"all done ({statuses(db)})")
    assert set(db.execute("SELECT attempts FROM jobs WHERE id = ANY(%s)", (ids,)).fetchall()) == {(1,)}
    ran = collections.Counter(runs.read_text().split("\n")[:-1])
    assert ran == {f"{i} 1": 1 for i in ids}, [line for line, n in ran.items() if n != 1][:10]
    assert sup.find("db_connection_lost", connection="claims")
    assert sup.find("db_reconnected", connection="claims")
    sup.wait_event("job_succeeded", count=5 + len(ids), timeout=20)
    assert len({e["job_id"] for e in sup.find("job_succeeded")}) == 5 + len(ids)


def test_a_drain_in_the_middle_of_a_backlog_leaves_every_job_succeeded_once_or_queued(db, make_config,
                                                                                     start_supervisor, tmp_path):
    """SIGTERM while claims and success batches are on their way through the courier: the
    supervisor exits 0 with no job left 'running'; what ran is recorded as succeeded, what
    was claimed ahead and never started is back in the queue with its attempt uncounted.
    A second supervisor finishes the rest: every job ran exactly once."""
    config = make_config({"children": {"min": 2, "max": 2}})
    sup = start_supervisor(config)
    warm_up(db, sup)
    runs = tmp_path / "runs.txt"
    ids = enqueue_many(db, [{"job_type": "tally", "payload": {"file": str(runs)}} for _ in range(20000)])
    wait_for(lambda: statuses(db).get("succeeded", 0) > 3000, timeout=60, message="the backlog draining")
    sup.signal(signal.SIGTERM)
    assert sup.wait_exit(30) == 0, sup.tail()
    by_status = dict(db.execute("SELECT status, count(*) FROM jobs WHERE id = ANY(%s) GROUP BY 1", (ids,)).fetchall())
    assert set(by_status) <= {"succeeded", "queued"}, by_status
    assert by_status.get("queued"), "the drain came too late to test anything"
    ran = collections.Counter(runs.read_text().split("\n")[:-1])
    succeeded = {row[0] for row in db.execute("SELECT id FROM jobs WHERE id = ANY(%s) AND status = 'succeeded'",
                                              (ids,)).fetchall()}
    assert ran == {f"{i} 1": 1 for i in succeeded}  # what ran is what is recorded, once
    assert set(db.execute("SELECT attempts FROM jobs WHERE id = ANY(%s) AND status = 'queued'",
                          (ids,)).fetchall()) == {(0,)}
    start_supervisor(config)
    wait_for(lambda: statuses(db) == {"succeeded": 5 + len(ids)}, timeout=60, message=f"all done ({statuses(db)})")
    ran = collections.Counter(runs.read_text().split("\n")[:-1])
    assert ran == {f"{i} 1": 1 for i in ids}, [line for line, n in ran.items() if n != 1][:10]


def test_children_leaving_during_a_backlog_give_back_what_was_claimed_for_them(db, make_config, start_supervisor,
                                                                               tmp_path):
    """Rows the courier claimed for a child may arrive after the child left (SIGTTOU retired
    it, or it was killed): they go back to the queue, unstarted, instead of waiting in a
    queue nobody reads. Every job succeeds; a job that ran twice is one whose child died
    under it (the attempt counted), never one that was only queued."""
    sup = start_supervisor(make_config({"children": {"min": 3, "max": 3}}))
    warm_up(db, sup)
    runs = tmp_path / "runs.txt"
    ids = enqueue_many(db, [{"job_type": "tally", "payload": {"file": str(runs)}} for _ in range(20000)])
    wait_for(lambda: statuses(db).get("succeeded", 0) > 2000, timeout=60, message="the backlog draining")
    sup.signal(signal.SIGTTOU)  # one fewer child: it stops after its current job
    wait_for(lambda: statuses(db).get("succeeded", 0) > 6000, timeout=60, message="more of the backlog")
    os.kill(sup.children()[0], signal.SIGKILL)
    wait_for(lambda: statuses(db) == {"succeeded": 5 + len(ids)}, timeout=90, message=f"all done ({statuses(db)})")
    ran = collections.Counter(line.split()[0] for line in runs.read_text().split("\n")[:-1])
    attempts = dict(db.execute("SELECT id, attempts FROM jobs WHERE id = ANY(%s)", (ids,)).fetchall())
    assert set(ran) == {str(i) for i in ids}
    assert all(ran[str(i)] <= attempts[i] for i in ids), [i for i in ids if ran[str(i)] > attempts[i]][:10]
    assert sum(1 for i in ids if attempts[i] > 1) <= 1  # at most the one the kill hit
    assert sup.find("job_returned")


def test_an_urgent_job_of_another_type_does_not_wait_for_a_backlog_of_quick_ones(db, make_config, start_supervisor,
                                                                                tmp_path):
    """Claims ahead take only the quick types. Children that run dry are claimed for with
    every type in priority order, so a high-priority job of a type not known to be quick
    starts while a backlog of quick ones is still draining, not after it."""
    sup = start_supervisor(make_config({"children": {"min": 2, "max": 2}}))
    runs = tmp_path / "runs.txt"
    enqueue_many(db, [{"job_type": "tally", "payload": {"file": str(runs)}} for _ in range(40000)])
    wait_for(lambda: statuses(db).get("succeeded", 0) > 2000, timeout=60, message="the backlog draining")
    (urgent,) = enqueue_many(db, [{"job_type": "noop", "priority": 10}])
    wait_for(lambda: job_row(db, urgent)["status"] == "succeeded", timeout=30, message="the urgent job done")
    waiting = statuses(db).get("queued", 0)
    assert waiting > 0, "the urgent job waited for the whole backlog"
    wait_for(lambda: statuses(db) == {"succeeded": 40001}, timeout=90, message=f"all done ({statuses(db)})")
    assert sup.find("job_succeeded", job_id=urgent)


def test_a_queued_job_that_hangs_times_out_and_the_rest_run_once(db, make_config, start_supervisor):
    """A job that hangs among quick ones of its type, queued ahead in a child: its deadline
    counts from when the child started it (its report of the job before may be read later),
    the jobs queued behind it go back and run elsewhere, each once."""
    sup = start_supervisor(make_config({"children": {"min": 2, "max": 2}}))
    enqueue_many(db, [{"job_type": "timeout", "payload": {"seconds": 0}} for _ in range(10)])
    wait_for(lambda: statuses(db).get("succeeded") == 10, message="warm-up jobs done")
    ids = enqueue_many(db, [{"job_type": "timeout", "payload": {"seconds": 0}} for _ in range(150)]
                       + [{"job_type": "timeout", "payload": {"seconds": 30}}]
                       + [{"job_type": "timeout", "payload": {"seconds": 0}} for _ in range(150)])
    hung = ids[150]
    wait_for(lambda: job_row(db, hung)["status"] == "failed", timeout=30, message=f"the hung job failed ({job_row(db, hung)})")
    wait_for(lambda: statuses(db) == {"succeeded": 310, "failed": 1}, timeout=30, message=f"all done ({statuses(db)})")
    row = job_row(db, hung)
    assert (row["attempts"], row["last_error"]) == (2, "timed out after 1s")
    assert [started(db, i) for i in ids if i != hung] == [1] * 300
    assert started(db, hung) == 2
    # Killed one second after it started, each time: not before (the deadline counts from its
    # start, not from the claim), and not long after.
    kills = [e["duration_ms"] for e in sup.find("job_timed_out", job_id=hung)]
    assert len(kills) == 2 and all(1000 <= ms < 3000 for ms in kills), kills


def test_a_batched_success_finishes_when_its_child_reported_it_not_when_it_was_recorded(db):
    """Successes wait up to COMPLETION_DELAY_AHEAD to be recorded together; each one's
    finished_at is its child's report, ``ages`` microseconds before the statement (never before the
    claim, whatever the two machines' clocks say)."""
    q = queries_for("jobs")
    ids = [row[0] for row in db.execute(
        """INSERT INTO jobs (job_type, status, attempts, locked_by, locked_at)
           SELECT 'noop', 'running', 1, 'h:1:a/' || i, now() - interval '10 seconds'
           FROM generate_series(1, 6) AS i RETURNING id""").fetchall()]
    locks = [f"h:1:a/{i}" for i in range(1, 7)]

    def finished(statement: str, params: dict) -> list[str]:
        """Seconds before the statement, or 'claim' when at locked_at."""
        with db.transaction():  # now() is the statement's
            db.execute(statement, params)
            return [row[0] for row in db.execute(
                """SELECT CASE WHEN finished_at = locked_at THEN 'claim'
                               ELSE extract(epoch FROM now() - finished_at)::text END
                   FROM jobs WHERE id = ANY(%s) ORDER BY id""",
                (params.get("ids") or params["done_ids"],)).fetchall()]

    assert finished(q.jobs_set_succeeded_many, {"ids": ids[:3], "locks": locks[:3], "ages": [2_500_000, 0, 1_000_000_000]}) \
        == ["2.500000", "0.000000", "claim"]
    assert finished(q.jobs_record_and_claim, {
        "n": 1, "types": ["none"], "head_types": [], "queues": None, "locks": ["h:1:a/9"],
        "done_ids": ids[3:], "done_locks": locks[3:], "done_ages": [125_000, 0, 1_000_000_000]}) == ["0.125000", "0.000000", "claim"]


def test_batched_successes_finish_after_their_handlers_last_write(db, make_config, start_supervisor):
    sup = start_supervisor(make_config({"children": {"min": 2, "max": 2}}))
    enqueue_many(db, [{"job_type": "effect_outside"} for _ in range(10)])
    wait_for(lambda: statuses(db).get("succeeded") == 10, message="warm-up jobs done")
    enqueue_many(db, [{"job_type": "effect_outside"} for _ in range(500)])
    wait_for(lambda: statuses(db) == {"succeeded": 510}, timeout=60, message=f"all done ({statuses(db)})")
    late = db.execute("""SELECT j.id, e.at, j.finished_at, j.locked_at FROM jobs AS j JOIN effects AS e ON e.job_id = j.id
                         WHERE NOT (e.at <= j.finished_at AND j.locked_at <= j.finished_at)""").fetchall()
    assert late == []
    assert sup.find("job_succeeded", job_type="effect_outside")
