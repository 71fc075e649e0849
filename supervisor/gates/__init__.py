"""Concurrency gates: before each claim, how many more jobs may start now, and why not.

Each gate answers one question through ``allowance(state) -> Allowance``: ``limit`` is the
most new jobs it lets start (None: no limit from this gate), ``reason`` says why it holds
work back. The supervisor asks every gate and takes the smallest answer. Limits that must
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
