"""Concurrency gates: before each claim, how many more jobs may start now, and why not.

Each gate answers one question through ``allowance(state) -> Allowance``: ``limit`` is the
most new jobs it lets start (None: no limit from this gate), ``reason`` says why it holds
work back. The supervisor asks every gate and takes the smallest answer. A limit of 0 is a
closed gate (logged), unless ``at_cap`` says it is only a cap that is reached for now (a gate
that allows N running jobs while N run): that is a full pool, not a closed gate. Limits that must
hold across machines (``global_concurrency``) are not gates: they live in the claim SQL.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True)
class Allowance:
    limit: int | None = None
    reason: str | None = None
    values: dict[str, Any] = field(default_factory=dict)
    at_cap: bool = False

    @property
    def closed(self) -> bool:
        return self.limit == 0 and not self.at_cap


@dataclass(frozen=True)
class PoolState:
    """What a gate may look at: the pool right now."""

    idle: int
    busy: int
    children: int
    running_by_type: dict[str, int]
    running_by_queue: dict[str, int]


class Gate(Protocol):
    name: str

    def allowance(self, state: PoolState) -> Allowance: ...


def combine(answers: list[Allowance]) -> Allowance:
    """The strictest answer wins; its reason is kept."""
    best = Allowance()
    for answer in answers:
        if answer.limit is None:
            continue
        if best.limit is None or answer.limit < best.limit:
            best = answer
    return best


@dataclass(frozen=True)
class ClaimPlan:
    """What the next claim may take: ``n`` jobs at most, of ``room.types`` (within their room),
    with fleet-wide limits ``global_limits`` (type -> N) enforced in SQL."""

    n: int
    room: Any  # static.Room
    global_limits: dict[str, int]
    allowance: Allowance
    # Some limit is in force (a type's, a queue's, fleet-wide or a gate's cap): a claim that
    # comes back short may have left work waiting that a finished job lets start.
    capped: bool = False

    @property
    def limited(self) -> bool:
        r = self.room
        return bool(self.global_limits) or any(x is not None for x in r.type_room) or (
            r.queue_room is not None and any(x is not None for x in r.queue_room))


class Gatekeeper:
    """Every gate of one supervisor, asked together before each claim.

    It remembers whether new work is held back, so that closing and opening are logged once
    (``gate_closed`` / ``gate_opened`` with the reason and measured values), not every tick.
    """

    def __init__(self, config: Any, fresh: bool = False):
        from .load import LoadGate
        from .python import PythonGate, load_function

        self.config = config
        self.gates: list[Any] = []
        self.load: LoadGate | None = None
        self.python: PythonGate | None = None
        if config.gate.kind == "load":
            self.load = LoadGate(config.gate.cpu_percent_max, config.gate.memory_available_min,
                                 config.gate.loadavg_per_core_max)
            self.gates.append(self.load)
        if config.gate.python:
            # Errors surface at start (or in config_reload_failed); on SIGHUP the module is
            # read again (``fresh``), as children load the handlers' code anew.
            func = load_function(config.gate.python, config.base_dir, fresh=fresh)
            self.python = PythonGate(config.gate.python, func)
            self.gates.append(self.python)
        self.closed: Allowance | None = None
        self.events: list[tuple[str, dict[str, Any]]] = []  # for the loop to log

    def plan(self, idle: int, running: list[tuple[str, str]], types: dict[str, dict[str, Any]]) -> ClaimPlan:
        """``running``: (job_type, queue) of every job this supervisor runs now."""
        by_type, by_queue = _count(running)
        state = PoolState(idle=idle, busy=len(running), children=idle + len(running),
                          running_by_type=by_type, running_by_queue=by_queue)
        allowance = combine([gate.allowance(state) for gate in self.gates])
        self._note(allowance)
        n = idle if allowance.limit is None else max(min(idle, allowance.limit), 0)
        r = self.room(running, types)
        global_limits = {t: types[t]["global_concurrency"] for t in r.types if types[t].get("global_concurrency")}
        capped = (allowance.limit is not None
                  or any(o.get("max_concurrency") or o.get("global_concurrency") for o in types.values())
                  or any(q.concurrency for q in (self.config.queues or {}).values()))
        return ClaimPlan(n, r, global_limits, allowance, capped)

    def room(self, running: list[tuple[str, str]], types: dict[str, dict[str, Any]]) -> Any:
        """The static room alone (no gate is asked): which types and queues may start more."""
        from .static import room

        by_type, by_queue = _count(running)
        queues = self.config.queues
        queue_caps = None if queues is None else {name: q.concurrency for name, q in queues.items()}
        return room({t: opts.get("max_concurrency") for t, opts in types.items()}, queue_caps, by_type, by_queue)

    def _note(self, allowance: Allowance) -> None:
        if self.python is not None:
            for error in self.python.errors:
                self.events.append(("gate_error", {"gate": self.python.spec, "error": error}))
            self.python.errors.clear()
        if allowance.closed and self.closed is None:
            self.closed = allowance
            self.events.append(("gate_closed", {"reason": allowance.reason, **allowance.values}))
        elif allowance.closed:
            self.closed = allowance  # still closed: status shows the current reason and values
        elif self.closed is not None:
            values = self.load.last.as_dict() if self.load is not None and self.load.last else {}
            self.events.append(("gate_opened", {"was": self.closed.reason, **values}))
            self.closed = None

    def describe(self) -> dict[str, Any]:
        """Published in the runners table (``info.gate``) for status and the dashboard."""
        out: dict[str, Any] = {"kind": self.config.gate.kind, "open": self.closed is None,
                               "reason": self.closed.reason if self.closed else None}
        if self.load is not None and self.load.last is not None:
            out["values"] = self.load.last.as_dict()
        elif self.closed is not None and self.closed.values:
            out["values"] = dict(self.closed.values)
        if self.python is not None:
            out["python"] = self.python.spec
        return out


def _count(running: list[tuple[str, str]]) -> tuple[dict[str, int], dict[str, int]]:
    by_type: dict[str, int] = {}
    by_queue: dict[str, int] = {}
    for job_type, queue in running:
        by_type[job_type] = by_type.get(job_type, 0) + 1
        by_queue[queue] = by_queue.get(queue, 0) + 1
    return by_type, by_queue
