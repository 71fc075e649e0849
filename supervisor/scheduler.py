"""Built-in cron (config ``schedules``): each tick of each schedule is enqueued exactly once,
however many supervisors run it.

Cron expressions are parsed by ``cronsim`` (5 fields, or 6 with seconds first), which keeps
Debian cron's DST rules: a job at a fixed hour runs once on the night the clocks go back
and at the first valid moment on the night they go forward. Every supervisor runs the same
schedules; a tick is enqueued by whoever first moves the schedule's ``last_tick`` forward
(compare-and-set) in the same transaction as the job insert.

Ticks younger than ``ON_TIME_WINDOW`` are all enqueued (a loop that woke a second late loses
nothing); a tick older than that was missed while every supervisor was down: then, with
``catch_up: latest``, only the most recent due tick is enqueued, once (never one job per
missed tick); with ``none`` the missed ticks are skipped.
"""

from __future__ import annotations

import datetime as dt
import json
import time
import zoneinfo
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import psycopg
from cronsim import CronSim, CronSimError

from .enqueue import enqueue

ON_TIME_WINDOW = 60.0  # seconds
MAX_TICKS_PER_PASS = 1000


def cron_error(expr: str) -> str | None:
    """Why ``expr`` is not a valid cron expression (None: it is)."""
    try:
        CronSim(expr, dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc))
    except CronSimError as error:
        return str(error)
    return None


def next_runs(expr: str, timezone: str, after: dt.datetime, count: int = 3) -> list[dt.datetime]:
    """The next ``count`` ticks after ``after``, as aware datetimes in the schedule's zone."""
    it = CronSim(expr, after.astimezone(zoneinfo.ZoneInfo(timezone)))
    return [next(it) for _ in range(count)]


@dataclass
class Enqueued:
    schedule: str
    tick: dt.datetime
    job_id: int
    catch_up: bool


class Scheduler:
    def __init__(self, schedules: tuple[Any, ...], queries: Any, table: str,
                 default_queue: Callable[[str], str] | None = None):
        self.schedules = schedules
        self.q = queries
        self.table = table
        self.default_queue = default_queue or (lambda job_type: "default")
        self.initialized: set[str] = set()
        self.db_clock_offset = 0.0  # database clock - local clock, seen at the last pass

    def _ticks_between(self, expr: str, tz: zoneinfo.ZoneInfo, start: dt.datetime,
                       end: dt.datetime) -> Iterator[dt.datetime]:
        """Ticks t with start < t <= end (UTC)."""
        for count, tick in enumerate(CronSim(expr, start.astimezone(tz))):
            if tick > end or count >= MAX_TICKS_PER_PASS:
                return
            yield tick.astimezone(dt.timezone.utc)

    def next_due(self, now: dt.datetime | None = None) -> float | None:
        """Epoch seconds of the earliest upcoming tick of any schedule (None: no schedules).

        ``now`` defaults to the database's clock as estimated at the last pass: a tick the
        database has already reached is not "upcoming" (with a local clock behind the
        database's, the caller would otherwise wake again at once, over and over)."""
        if now is None:
            now = dt.datetime.fromtimestamp(time.time() + self.db_clock_offset, dt.timezone.utc)
        best: float | None = None
        for s in self.schedules:
            tick = next(CronSim(s.cron, now.astimezone(zoneinfo.ZoneInfo(s.timezone))))
            value = tick.timestamp()
            best = value if best is None or value < best else best
        return best

    def run_once(self, conn: psycopg.Connection, now: dt.datetime | None = None) -> list[Enqueued]:
        """Enqueue every due tick not yet enqueued by anyone. ``conn`` in autocommit mode;
        ``now`` should come from the database clock.

        Ticks in ``(last_tick, now]`` are due. While the fleet keeps up (no due tick is older
        than ``ON_TIME_WINDOW``) each is enqueued. Once a tick was missed by more than that
        (every supervisor was down), the missed ticks are not owed one by one: with
        ``catch_up: latest`` only the most recent due tick is enqueued, once; with ``none`` a
        tick still within the window is enqueued (it is merely late) and the older ones are
        skipped for good.
        """
        if now is None:
            local = time.time()
            now = conn.execute("SELECT clock_timestamp()").fetchone()[0]
            self.db_clock_offset = now.timestamp() - (local + time.time()) / 2
        done: list[Enqueued] = []
        for s in self.schedules:
            if s.name not in self.initialized:
                conn.execute(self.q.schedule_init, {"name": s.name, "now": now, "cron": s.cron})
                self.initialized.add(s.name)
            row = conn.execute(self.q.schedule_get, {"name": s.name}).fetchone()
            if row is None:  # the row was removed by hand: start counting again next time
                self.initialized.discard(s.name)
                continue
            last_tick: dt.datetime = row[0]
            tz = zoneinfo.ZoneInfo(s.timezone)
            window_start = now - dt.timedelta(seconds=ON_TIME_WINDOW)
            # The latest tick strictly before the window: due and late, if after last_tick.
            latest_missed = next(CronSim(s.cron, window_start.astimezone(tz), reverse=True), None)
            missed = latest_missed is not None and latest_missed.astimezone(dt.timezone.utc) > last_tick
            # A tick exactly at the window's edge is on time (the reverse search above is strict).
            start = max(last_tick, window_start - dt.timedelta(microseconds=1))
            on_time = list(self._ticks_between(s.cron, tz, start, now))
            due: list[tuple[dt.datetime, bool]]
            if not missed:
                due = [(tick, False) for tick in on_time]
            elif s.catch_up == "latest":
                # Missed while every supervisor was down: the most recent due tick, once.
                due = [(on_time[-1] if on_time else latest_missed.astimezone(dt.timezone.utc), True)]
            else:
                due = [(on_time[-1], False)] if on_time else []
            for tick, catch_up in due:
                job_id = self._enqueue_tick(conn, s, tick)
                if job_id is not None:
                    done.append(Enqueued(s.name, tick, job_id, catch_up))
            if missed and not due:
                # catch_up none: skip the missed ticks for good.
                conn.execute(self.q.schedule_advance, {"name": s.name, "tick": latest_missed, "cron": s.cron})
        return done

    def _enqueue_tick(self, conn: psycopg.Connection, s: Any, tick: dt.datetime) -> int | None:
        with conn.transaction():
            won = conn.execute(self.q.schedule_advance, {"name": s.name, "tick": tick, "cron": s.cron}).fetchone()
            if won is None:
                return None  # another supervisor enqueued this tick
            job_id = enqueue(
                conn, s.job, s.payload, run_at=tick,
                queue=s.queue if s.queue is not None else self.default_queue(s.job),
                priority=s.priority, table=self.table,
                unique_key=f"schedule:{s.name}:{tick.isoformat()}",
            )
        return int(job_id)


def describe_schedules(schedules: tuple[Any, ...], last_ticks: dict[str, dt.datetime], now: dt.datetime,
                       count: int = 3) -> list[dict[str, Any]]:
    out = []
    for s in schedules:
        out.append({
            "name": s.name, "cron": s.cron, "timezone": s.timezone, "job": s.job,
            "payload": json.loads(json.dumps(s.payload)), "queue": s.queue, "priority": s.priority,
            "catch_up": s.catch_up,
            "last_tick": last_ticks.get(s.name),
            "next_runs": next_runs(s.cron, s.timezone, now, count),
        })
    return out
