"""The load gate (``gate.kind: load``): hold new claims back while the machine is busy.

It samples CPU percent, available memory and load average per core with psutil, at most
once per ``SAMPLE_INTERVAL``, and uses hysteresis so it does not flap: it closes when any
value crosses its threshold and opens again only when every value is back on the good side
of it by a margin, and not sooner than ``MIN_DWELL`` after closing. Running jobs are never
touched; only new claims wait.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Callable

import psutil

from . import Allowance, PoolState

SAMPLE_INTERVAL = 1.0
MIN_DWELL = 2.0
REOPEN_MARGIN = 0.9  # reopen below 90 % of a maximum / above 110 % of a minimum


@dataclass(frozen=True)
class Sample:
    cpu_percent: float
    memory_available: int
    loadavg_per_core: float

    def as_dict(self) -> dict[str, float]:
        return {"cpu_percent": round(self.cpu_percent, 1), "memory_available": self.memory_available,
                "loadavg_per_core": round(self.loadavg_per_core, 2)}


MIN_CPU_SPAN = 0.5  # seconds: CPU percent over a shorter span is mostly noise
_cpu: list[float] = []  # [monotonic time of the last psutil.cpu_percent call, its value]


def cpu_percent() -> float:
    """CPU percent since the previous measurement, without blocking. psutil measures from
    its previous call, process-wide: a gate made again by a reload would otherwise measure
    a few milliseconds (0 % or 100 %), so a recent value is reused instead."""
    now = time.monotonic()
    if _cpu and now - _cpu[0] < MIN_CPU_SPAN:
        return _cpu[1]
    value = psutil.cpu_percent(interval=None)
    _cpu[:] = [now, value]
    return value


def sample_machine() -> Sample:
    cores = os.cpu_count() or 1
    return Sample(
        cpu_percent=cpu_percent(),
        memory_available=psutil.virtual_memory().available,
        loadavg_per_core=os.getloadavg()[0] / cores,
    )


class LoadGate:
    name = "load"

    def __init__(self, cpu_percent_max: float, memory_available_min: int, loadavg_per_core_max: float,
                 sampler: Callable[[], Sample] = sample_machine, clock: Callable[[], float] = time.monotonic):
        self.cpu_percent_max = cpu_percent_max
        self.memory_available_min = memory_available_min
        self.loadavg_per_core_max = loadavg_per_core_max
        self.sampler = sampler
        self.clock = clock
        self.closed = False
        self.closed_at = 0.0
        self.reason: str | None = None
        self.last: Sample | None = None
        self.next_sample = 0.0
        self.changes: list[tuple[str, str | None, dict[str, float]]] = []  # for the loop to log
        if sampler is sample_machine and not _cpu:
            cpu_percent()  # prime, once per process: the first call has nothing to compare with

    def over(self, s: Sample, margin: float = 1.0) -> str | None:
        """Why ``s`` is too much load (None: it is fine), every threshold crossed. ``margin`` < 1
        is the reopening test."""
        reasons = []
        if s.cpu_percent > self.cpu_percent_max * margin:
            reasons.append(f"cpu {s.cpu_percent:.0f}% > {self.cpu_percent_max * margin:.0f}%")
        if s.memory_available < self.memory_available_min / margin:
            reasons.append(f"memory available {s.memory_available // 2**20}MiB < "
                           f"{int(self.memory_available_min / margin) // 2**20}MiB")
        if s.loadavg_per_core > self.loadavg_per_core_max * margin:
            reasons.append(f"load average per core {s.loadavg_per_core:.2f} > "
                           f"{self.loadavg_per_core_max * margin:.2f}")
        return ", ".join(reasons) or None

    def update(self) -> None:
        now = self.clock()
        if now < self.next_sample:
            return
        self.next_sample = now + SAMPLE_INTERVAL
        s = self.sampler()
        self.last = s
        if not self.closed:
            reason = self.over(s)
            if reason:
                self.closed, self.closed_at, self.reason = True, now, reason
                self.changes.append(("gate_closed", reason, s.as_dict()))
        else:
            still = self.over(s, REOPEN_MARGIN)
            if still is None and now - self.closed_at >= MIN_DWELL:
                self.closed, self.reason = False, None
                self.changes.append(("gate_opened", None, s.as_dict()))
            elif still:
                self.reason = still

    def allowance(self, state: PoolState) -> Allowance:
        self.update()
        if self.closed:
            return Allowance(0, f"machine load: {self.reason}", self.last.as_dict() if self.last else {})
        return Allowance(None)

    def describe(self) -> dict[str, object]:
        return {"kind": "load", "open": not self.closed, "reason": self.reason,
                "values": self.last.as_dict() if self.last else {}}
