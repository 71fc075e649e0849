"""Rules of the supervisor's loop, on a Supervisor that is never started.

When children's reports may wait (report_batch): only while every child has jobs queued in its
socket to go on with, for at most half of the least-stocked child's queued work and at most
REPORT_BATCH; never while draining, for unknown types or for quick jobs. Which child each row of
a claim ahead is for (fill_order): the shortest queue first, so a short answer (the end of a
backlog) leaves the queues even."""

from types import SimpleNamespace

import pytest

from supervisor.children.pool import BUSY, Child
from supervisor.config import config_from_dict
from supervisor.parent import REPORT_BATCH, Supervisor, fill_order


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
    child = add_child(sup, 1, queued=10)
    assert sup.report_batch() == REPORT_BATCH
    add_child(sup, 2, queued=10, job_type="new")
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
