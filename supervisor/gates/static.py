"""Static limits on one supervisor: per queue (``queues.<name>.concurrency``) and per job type
(``jobs.<type>.max_concurrency``). They do not cap the batch size; they tell the claim
statement how much room each type and queue has left, so a saturated type never blocks
the others (the claim skips it instead of waiting behind it)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Room:
    """Claim parameters: the types that may start now and their remaining room (None: no cap)."""

    types: list[str]
    type_room: list[int | None]
    queues: list[str] | None
    queue_room: list[int | None] | None

    @property
    def empty(self) -> bool:
        return not self.types or (self.queues is not None and not self.queues)


def room(type_caps: dict[str, int | None], queue_caps: dict[str, int | None] | None,
         running_by_type: dict[str, int], running_by_queue: dict[str, int]) -> Room:
    """Types and queues with room left. ``queue_caps`` None: every queue is served, uncapped."""
    types: list[str] = []
    type_room: list[int | None] = []
    for name, cap in sorted(type_caps.items()):
        left = None if cap is None else cap - running_by_type.get(name, 0)
        if left is None or left > 0:
            types.append(name)
            type_room.append(left)
    if queue_caps is None:
        return Room(types, type_room, None, None)
    queues: list[str] = []
    queue_room: list[int | None] = []
    for name, cap in sorted(queue_caps.items()):
        left = None if cap is None else cap - running_by_queue.get(name, 0)
        if left is None or left > 0:
            queues.append(name)
            queue_room.append(left)
    return Room(types, type_room, queues, queue_room)
