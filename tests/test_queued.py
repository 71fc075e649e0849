"""Jobs queued ahead in a child (quick job types, while a backlog waits): handed back unstarted
when the job in front of them turns long or one of them is killed, recorded in batches, and
never run twice or lost."""

from __future__ import annotations

from conftest import job_row, run_cli, statuses, wait_for

from supervisor import enqueue_many


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
    config = make_config({"children": {"min": 1, "max": 1}})
    sup = start_supervisor(config)
    warm_up(db, sup)
    long_id, quick = long_then_quick(db, 5)

    def claimed_behind_the_long_job() -> list[int]:
        lock = job_row(db, long_id)["locked_by"]
        return [i for i in quick if lock and job_row(db, i)["locked_by"] == lock]

    queued_here = wait_for(claimed_behind_the_long_job, timeout=5, message="jobs queued behind the long job")
    victim = queued_here[-1]
    result = run_cli("-c", str(config), "kill", str(victim))
    assert result.returncode == 0, result.stderr
    wait_for(lambda: statuses(db) == {"succeeded": 5 + 1 + len(quick) - 1, "failed": 1}, timeout=20,
             message=f"all done ({statuses(db)})")
    row = job_row(db, victim)
    assert (row["status"], row["last_error"]) == ("failed", "killed by operator")
    assert started(db, victim) == 0  # it never ran
    assert job_row(db, long_id)["status"] == "succeeded"  # the job in front was not killed
    assert [started(db, i) for i in quick if i != victim] == [1] * (len(quick) - 1)


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
