"""Rules of the supervisor's loop, on a Supervisor that is never started.

When children's reports may wait (report_batch): only while every child has jobs queued in its
socket to go on with, for at most half of the least-stocked child's queued work and at most
REPORT_BATCH; never while draining, for unknown types or for quick jobs. A job a child started
from its queue counts (its deadline, how long it ran) from the child's report of the one before,
not from when the loop read it. Which child each row of
a claim ahead is for (fill_order): the shortest queue first, so a short answer (the end of a
backlog) leaves the queues even."""

from types import SimpleNamespace

import pytest

import time

from supervisor.children.pool import BUSY, Child, Running
from supervisor.config import config_from_dict
from supervisor.parent import REPORT_BATCH, REPORT_BATCH_MAX_LATE, Supervisor, fill_order, reported_at, successes


@pytest.fixture
def sup(dsn):
    return Supervisor(config_from_dict({"database": {"dsn": dsn}}), dsn)


def add_child(sup: Supervisor, key: int, queued: int, job_type: str = "cpu") -> Child:
    child = Child(proc=None, sock=None, out_fd=-1, generation=0, lock=f"r/{key}", state=BUSY)
    child.job = SimpleNamespace(job_type=job_type)
    child.prefetched.extend((SimpleNamespace(job_type=job_type), {}, "{}") for _ in range(queued))
    child.sent = queued
    sup.pool.children[key] = child
    return child


def test_no_children_or_no_queue_means_no_waiting(sup):
    sup.type_avg["cpu"] = 0.003
    assert sup.report_batch() == 0.0
    add_child(sup, 1, queued=10)
    idle = add_child(sup, 2, queued=0)
    assert sup.report_batch() == 0.0
    idle.prefetched.extend((SimpleNamespace(job_type="cpu"), {}, "{}") for _ in range(5))
    idle.sent = 1  # one queued job: its report is what tells us to send the next
    assert sup.report_batch() == 0.0
    idle.sent = 5  # 15 ms queued
    assert sup.report_batch() == pytest.approx(0.0075)


def test_half_of_the_least_stocked_childs_queued_work_at_most(sup):
    sup.type_avg["cpu"] = 0.002
    add_child(sup, 1, queued=100)
    add_child(sup, 2, queued=6)  # 12 ms queued: its reports may wait 6 ms
    assert sup.report_batch() == pytest.approx(0.006)
    sup.type_avg["cpu"] = 0.00002  # no-op jobs: 120 µs queued, ticks batch on their own
    assert sup.report_batch() == 0.0


def test_unknown_type_releasing_ending_or_draining_means_no_waiting(sup):
    sup.type_avg["cpu"] = 0.003
    child = add_child(sup, 1, queued=40)
    assert sup.report_batch() == REPORT_BATCH
    add_child(sup, 2, queued=40, job_type="new")
    assert sup.report_batch() == 0.0
    sup.type_avg["new"] = 0.003
    assert sup.report_batch() == REPORT_BATCH
    for attribute, value in (("releasing", "stale"), ("ending", "timeout"), ("kill_at", 1.0)):
        setattr(child, attribute, value)
        assert sup.report_batch() == 0.0, attribute
        setattr(child, attribute, None)
    sup.draining = True
    assert sup.report_batch() == 0.0


def test_claim_ahead_rows_fill_the_shortest_queue_first():
    a, b, c = "a", "b", "c"  # fill_order only orders what it is given
    # depth 8: a has 6 places left (2 queued), b 2 (6 queued), c none.
    order = fill_order([(a, 6), (b, 2)], 8)
    assert len(order) == 8 and order.count(a) == 6 and order.count(b) == 2
    assert order[:4] == [a, a, a, a]  # a catches up with b first
    assert sorted(order[4:]) == [a, a, b, b]
    # Any prefix (a short answer) leaves the queues as even as it can.
    for n in range(9):
        queued = {a: 2 + order[:n].count(a), b: 6 + order[:n].count(b)}
        assert abs(queued[a] - queued[b]) <= max(0, 4 - n) or abs(queued[a] - queued[b]) <= 1
    assert fill_order([(a, 3), (b, 3), (c, 3)], 3) == [a, b, c] * 3


def test_a_queued_job_counts_from_when_the_child_started_it(sup):
    child = add_child(sup, 1, queued=0)
    child.proc = SimpleNamespace(pid=4242)
    sup.pool.hand_out = lambda *args, **kwargs: True  # nothing to send: it was queued there

    def queue_one(job_id: int) -> Running:
        running = Running(job_id, "cpu", "default", 1, None, "r/1", 0.0, None, 2.0)
        child.prefetched.append((running, {}, "{}"))
        child.sent = 1
        return running

    # Reported 40 ms ago (the reports waited): the deadline counts from then.
    at = time.monotonic() - 0.04
    running = queue_one(1)
    sup.start_next(child, at)
    assert running.started == at and running.deadline == at + 2.0
    # A time that cannot be right (from before a pause, the future, not a float) is not used.
    assert reported_at(at) == at
    for wrong in (time.monotonic() - REPORT_BATCH_MAX_LATE - 1, time.monotonic() + 5, "soon", None, 7):
        assert reported_at(wrong) is None, wrong
        before = time.monotonic()
        running = queue_one(2)
        sup.start_next(child, reported_at(wrong))
        assert before <= running.started <= time.monotonic(), wrong
    # Not queued there (sent now): it starts now, whatever the report said.
    running = queue_one(3)
    child.sent = 0
    before = time.monotonic()
    sup.start_next(child, at)
    assert running.started >= before and running.deadline == running.started + 2.0


def test_waiting_successes_carry_how_long_ago_each_ended():
    now = time.monotonic()
    jobs = [Running(i, "cpu", "default", 1, None, f"r/{i}", 0.0, None, None, finished=now - 0.25 * i) for i in range(3)]
    params = successes([(job, 4242, 1.0) for job in jobs])
    assert params["ids"] == "{0,1,2}" and params["locks"] == '{"r/0","r/1","r/2"}'
    ages = [int(x) for x in params["ages"].strip("{}").split(",")]  # microseconds
    assert [round(a / 1e6, 2) for a in ages] == [0.0, 0.25, 0.5]
    jobs[0].finished = now + 60  # a clock that cannot be: never a negative age
    assert successes([(jobs[0], 4242, 1.0)])["ages"] == "{0}"
    jobs[0].finished = 0.0  # never reported: recorded as finished now, not at the claim
    assert successes([(jobs[0], 4242, 1.0)])["ages"] == "{0}"
