"""Gates as pure logic: static room, the load gate's hysteresis, a user's gate that misbehaves."""

from supervisor.gates import Allowance, PoolState, combine
from supervisor.gates.load import MIN_DWELL, LoadGate, Sample
from supervisor.gates.python import PythonGate
from supervisor.gates.static import room

STATE = PoolState(idle=2, busy=0, children=2, running_by_type={}, running_by_queue={})
MiB = 2**20


def test_room_skips_saturated_types_and_keeps_uncapped_ones():
    r = room({"a": 2, "b": None, "c": 1}, None, {"a": 2, "c": 0}, {})
    assert r.types == ["b", "c"] and r.type_room == [None, 1]
    assert r.queues is None


def test_room_per_queue_caps():
    r = room({"a": None}, {"emails": 1, "default": None, "reports": 2}, {}, {"emails": 1, "reports": 1})
    assert r.queues == ["default", "reports"] and r.queue_room == [None, 1]


def test_room_is_empty_when_every_served_queue_is_full():
    r = room({"a": None}, {"emails": 1}, {}, {"emails": 1})
    assert r.empty


def test_combine_takes_the_strictest_answer():
    assert combine([Allowance(None), Allowance(3, "x"), Allowance(1, "y")]).reason == "y"
    assert combine([Allowance(None)]).limit is None


class FakeMachine:
    def __init__(self):
        self.now = 0.0
        self.sample = Sample(10.0, 4096 * MiB, 0.1)

    def clock(self):
        return self.now


def make_gate(machine):
    return LoadGate(85.0, 256 * MiB, 2.0, sampler=lambda: machine.sample, clock=machine.clock)


def test_load_gate_closes_over_threshold_and_logs_why():
    m = FakeMachine()
    gate = make_gate(m)
    assert gate.allowance(STATE).limit is None
    m.now += 1.0
    m.sample = Sample(99.0, 4096 * MiB, 0.1)
    answer = gate.allowance(STATE)
    assert answer.limit == 0 and "cpu 99%" in answer.reason
    assert gate.changes[-1][0] == "gate_closed" and gate.changes[-1][2]["cpu_percent"] == 99.0


def test_load_gate_does_not_flap_near_the_threshold():
    m = FakeMachine()
    gate = make_gate(m)
    m.sample = Sample(90.0, 4096 * MiB, 0.1)
    assert gate.allowance(STATE).limit == 0
    # Just under the threshold is not enough to reopen: it must fall below 90 % of it.
    m.now += MIN_DWELL + 1
    m.sample = Sample(80.0, 4096 * MiB, 0.1)
    assert gate.allowance(STATE).limit == 0
    m.now += 1.0
    m.sample = Sample(50.0, 4096 * MiB, 0.1)
    assert gate.allowance(STATE).limit is None
    assert [c[0] for c in gate.changes] == ["gate_closed", "gate_opened"]


def test_load_gate_stays_closed_for_the_minimum_dwell():
    m = FakeMachine()
    gate = make_gate(m)
    m.sample = Sample(10.0, 100 * MiB, 0.1)
    assert "memory available" in gate.allowance(STATE).reason
    m.now += 1.0
    m.sample = Sample(10.0, 4096 * MiB, 0.1)
    assert gate.allowance(STATE).limit == 0  # good values, but too soon
    m.now += MIN_DWELL
    assert gate.allowance(STATE).limit is None


def test_load_gate_samples_at_most_once_per_interval():
    m = FakeMachine()
    calls = []
    gate = LoadGate(85.0, 256 * MiB, 2.0, sampler=lambda: calls.append(1) or m.sample, clock=m.clock)
    for _ in range(50):
        gate.allowance(STATE)
    assert len(calls) == 1


def test_load_gate_on_the_real_machine_answers():
    gate = LoadGate(85.0, 256 * MiB, 2.0)
    answer = gate.allowance(STATE)
    assert gate.last is not None and gate.last.memory_available > 0
    assert answer.limit in (None, 0)


def test_python_gate_allows_denies_and_caps():
    assert PythonGate("m:f", lambda s: True).allowance(STATE).limit is None
    assert PythonGate("m:f", lambda s: None).allowance(STATE).limit is None
    assert PythonGate("m:f", lambda s: False).allowance(STATE).limit == 0
    assert PythonGate("m:f", lambda s: 1).allowance(STATE).limit == 1


def test_python_gate_that_raises_denies_and_reports_once():
    def broken(state):
        raise KeyError("nope")

    gate = PythonGate("m:broken", broken)
    for _ in range(5):
        answer = gate.allowance(STATE)
        assert answer.limit == 0 and "KeyError" in answer.reason
    assert len(gate.errors) == 1 and "KeyError" in gate.errors[0]


def test_python_gate_invalid_answer_denies():
    gate = PythonGate("m:f", lambda s: "yes")
    assert gate.allowance(STATE).limit == 0
    assert "expected True, False, None or an int" in gate.errors[0]


def test_python_gate_that_exits_denies_instead_of_stopping_the_supervisor():
    import sys

    gate = PythonGate("m:quits", lambda s: sys.exit(3))
    answer = gate.allowance(STATE)
    assert answer.limit == 0 and "SystemExit" in answer.reason


def test_python_gate_int_caps_running_jobs_and_a_reached_cap_is_not_a_closed_gate():
    busy = PoolState(idle=2, busy=3, children=5, running_by_type={}, running_by_queue={})
    gate = PythonGate("m:f", lambda s: 4)
    assert gate.allowance(STATE).limit == 4
    assert gate.allowance(busy).limit == 1 and not gate.allowance(busy).closed
    full = PythonGate("m:f", lambda s: 3).allowance(busy)
    assert full.limit == 0 and full.at_cap and not full.closed
    assert PythonGate("m:f", lambda s: 0).allowance(busy).closed
