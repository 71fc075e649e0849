"""The invariant checker: what must be true of the jobs table after *any* scenario.

    from faults.invariants import Expect, assert_invariants
    assert_invariants(db, {job_id: Expect(exactly_once="ran") for job_id in ids})

``check()`` returns a :class:`Report` listing every violation in words; ``assert_invariants()``
raises ``AssertionError`` with them. The checks (SPEC §2, Guarantees and the state machine):

1. **Nothing lost, one state each.** Every enqueued id is still a row, in exactly one of the six
   statuses, with the columns that status implies (a finished job has ``finished_at``; a
   waiting one holds no lock; a running one does; a retrying or failed one says why).
2. **Settled** (``settled=True``, the default): every job reached an end state (succeeded,
   failed or cancelled), or the one its :class:`Expect` names.
3. **No job running without a live runner**: its runner's row exists with a fresh heartbeat,
   and, for runners on this host, the supervisor process and the child named in
   ``locked_by`` are alive (not zombies) and parent and child.
4. **Effects**: an effect written through ``job.conn`` (``exactly_once``) exists exactly once
   for a succeeded job, written by its last attempt, and never for a job that did not
   succeed; one written elsewhere (``at_least_once``) exists at least once for a succeeded job.
5. **Attempts never exceed max_attempts** (the row's, else the type's, else 10), and no
   attempt began that the row does not count (``started`` effects carry attempt numbers).
6. **Nothing ran after being cancelled**: no ``started`` effect is later than the cancel.

Effects live in the test table ``effects (job_id, attempt, kind, pid, at)`` written by the
handlers of ``tests/jobhandlers.py`` and ``tests/faults/handlers.py``.
"""

from __future__ import annotations

import collections
import socket
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

import psutil
import psycopg

STATUSES = ("queued", "running", "succeeded", "retry", "failed", "cancelled")
ENDED = frozenset({"succeeded", "failed", "cancelled"})
DEFAULT_MAX_ATTEMPTS = 10


@dataclass(frozen=True)
class Expect:
    """What one job's handler promises about its evidence, and where the job may end.

    ``exactly_once``: the effect kind written through ``job.conn`` (``None``: none is).
    ``at_least_once``: an effect kind written on another connection, once per success at least.
    ``started``: the kind written first thing by every attempt (attempt numbers, cancellation).
    ``final``: the statuses the job may be in when the scenario is over (``None``: any end state).
    ``max_attempts``: the job type's max_attempts, used when the row's is NULL.
    """

    exactly_once: str | None = "ran"
    at_least_once: str | None = None
    started: str | None = None
    final: frozenset[str] | None = None
    max_attempts: int | None = None


@dataclass
class Report:
    checked: int = 0
    by_status: collections.Counter = field(default_factory=collections.Counter)
    violations: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:  # truthy when everything holds
        return not self.violations

    def describe(self, limit: int = 40) -> str:
        head = (f"{len(self.violations)} invariant violation(s) among {self.checked} jobs "
                f"({dict(self.by_status)}):")
        lines = [head, *(f"  - {v}" for v in self.violations[:limit])]
        if len(self.violations) > limit:
            lines.append(f"  … and {len(self.violations) - limit} more")
        return "\n".join(lines)


def _expectations(expected: Mapping[int, Expect] | Iterable[int], default: Expect) -> dict[int, Expect]:
    if isinstance(expected, Mapping):
        return {int(k): v for k, v in expected.items()}
    return {int(job_id): default for job_id in expected}


def _pid_alive(pid: int) -> psutil.Process | None:
    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return None
        return proc
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None


def _who(row: dict[str, Any]) -> str:
    return f"job {row['id']} ({row['job_type']!r}, {row['status']}, attempt {row['attempts']})"


def check(conn: psycopg.Connection, expected: Mapping[int, Expect] | Iterable[int], *,
          default: Expect = Expect(), settled: bool = True, table: str = "jobs", effects: str = "effects",
          stale_after: float = 10.0, type_max_attempts: Mapping[str, int] | None = None) -> Report:
    """Check every invariant for the ``expected`` jobs (ids, or ids -> :class:`Expect`)."""
    wanted = _expectations(expected, default)
    report = Report(checked=len(wanted))
    bad = report.violations
    ids = sorted(wanted)
    cols = ("id", "job_type", "queue", "status", "attempts", "max_attempts", "locked_by", "locked_at",
            "finished_at", "has_error", "db_now")
    rows = conn.execute(
        f"SELECT id, job_type, queue, status, attempts, max_attempts, locked_by, locked_at, finished_at,"
        f"       last_error IS NOT NULL, now() FROM {table} WHERE id = ANY(%s::bigint[])", (ids,)).fetchall()
    found: dict[int, dict[str, Any]] = {}
    for values in rows:
        row = dict(zip(cols, values))
        if row["id"] in found:
            bad.append(f"job {row['id']} appears {sum(1 for v in rows if v[0] == row['id'])} times")
        found[row["id"]] = row
    # 1. nothing lost, one state each, columns consistent with it
    lost = [job_id for job_id in ids if job_id not in found]
    if lost:
        bad.append(f"{len(lost)} enqueued job(s) are gone from the table: {lost[:20]}")
    for row in found.values():
        report.by_status[row["status"]] += 1
        _check_columns(row, bad)
    # 2. settled
    if settled:
        for row in found.values():
            final = wanted[row["id"]].final or ENDED
            if row["status"] not in final:
                bad.append(f"{_who(row)}: should have ended {'/'.join(sorted(final))}")
    # 3. running only with a live runner and child
    running = [row for row in found.values() if row["status"] == "running"]
    if running:
        _check_runners(conn, table, running, stale_after, bad)
    # 4-6. effects and attempts
    evidence = _evidence(conn, effects, ids)
    types_max = dict(type_max_attempts or {})
    for job_id, row in found.items():
        exp = wanted[job_id]
        limit = row["max_attempts"] or exp.max_attempts or types_max.get(row["job_type"]) or DEFAULT_MAX_ATTEMPTS
        if row["attempts"] > limit:
            bad.append(f"{_who(row)}: {row['attempts']} attempts exceed max_attempts {limit}")
        mine = evidence.get(job_id, {})
        if exp.exactly_once:
            attempts = mine.get(exp.exactly_once, ([], None))[0]
            if row["status"] == "succeeded":
                if len(attempts) != 1:
                    bad.append(f"{_who(row)}: {len(attempts)} {exp.exactly_once!r} effects written through "
                               f"job.conn (by attempts {attempts}), expected exactly 1")
                elif attempts[0] != row["attempts"]:
                    bad.append(f"{_who(row)}: its {exp.exactly_once!r} effect was committed by attempt "
                               f"{attempts[0]}, not by the attempt that succeeded ({row['attempts']})")
            elif attempts:
                bad.append(f"{_who(row)}: did not succeed, yet {len(attempts)} {exp.exactly_once!r} effect(s) "
                           f"written through job.conn were committed (attempts {attempts})")
        if exp.at_least_once and row["status"] == "succeeded" and not mine.get(exp.at_least_once):
            bad.append(f"{_who(row)}: succeeded without any {exp.at_least_once!r} effect")
        if exp.started:
            started, last_at = mine.get(exp.started, ([], None))
            beyond = [a for a in started if a > row["attempts"]]
            if beyond:
                bad.append(f"{_who(row)}: attempts {sorted(set(beyond))} began but the row counts only "
                           f"{row['attempts']}")
            if row["status"] == "succeeded" and row["attempts"] not in started:
                bad.append(f"{_who(row)}: the attempt that succeeded never recorded {exp.started!r}")
            if row["status"] == "cancelled" and last_at is not None and row["finished_at"] is not None \
                    and last_at > row["finished_at"]:
                bad.append(f"{_who(row)}: an attempt began at {last_at.isoformat()}, after the job was "
                           f"cancelled at {row['finished_at'].isoformat()}")
    return report


def _check_columns(row: dict[str, Any], bad: list[str]) -> None:
    status = row["status"]
    if status not in STATUSES:
        bad.append(f"{_who(row)}: unknown status")
        return
    if status == "running":
        if not row["locked_by"] or row["locked_at"] is None:
            bad.append(f"{_who(row)}: running without a lock (locked_by {row['locked_by']!r})")
        if row["finished_at"] is not None:
            bad.append(f"{_who(row)}: running but finished_at is set")
    if status in ("queued", "retry"):
        if row["locked_by"] is not None:
            bad.append(f"{_who(row)}: waiting but still locked by {row['locked_by']!r}")
        if row["finished_at"] is not None:
            bad.append(f"{_who(row)}: waiting but finished_at is set")
    if status in ENDED and row["finished_at"] is None:
        bad.append(f"{_who(row)}: ended without finished_at")
    if status in ("retry", "failed") and not row["has_error"]:
        bad.append(f"{_who(row)}: {status} without last_error saying why")
    if status in ("running", "succeeded", "failed") and row["attempts"] < 1:
        bad.append(f"{_who(row)}: {status} after {row['attempts']} attempts")


def _check_runners(conn: psycopg.Connection, table: str, running: list[dict[str, Any]], stale_after: float,
                   bad: list[str]) -> None:
    runners = {r[0]: r[1:] for r in conn.execute(
        f"SELECT id, host, pid, extract(epoch FROM now() - heartbeat_at)::float8 FROM {table}_runners").fetchall()}
    here = socket.gethostname()
    for row in running:
        runner_id, _, child = (row["locked_by"] or "").rpartition("/")
        runner = runners.get(runner_id)
        if runner is None:
            bad.append(f"{_who(row)}: running under runner {runner_id!r}, which is not registered")
            continue
        host, pid, age = runner
        if age > stale_after:
            bad.append(f"{_who(row)}: running under runner {runner_id!r}, silent for {age:.1f}s")
        if host != here:
            continue
        parent = _pid_alive(pid)
        if parent is None:
            bad.append(f"{_who(row)}: running under runner {runner_id!r}, whose process {pid} is gone")
            continue
        kid = _pid_alive(int(child)) if child.isdigit() else None
        if kid is None:
            bad.append(f"{_who(row)}: running in child {child}, which is not alive")
        elif kid.ppid() != pid:
            bad.append(f"{_who(row)}: running in process {child}, which is not a child of runner {runner_id!r}")


def _evidence(conn: psycopg.Connection, effects: str, ids: list[int]) -> dict[int, dict[str, tuple[list[int], Any]]]:
    """job_id -> kind -> (attempt numbers, one per row, sorted; time of the latest row)."""
    out: dict[int, dict[str, tuple[list[int], Any]]] = collections.defaultdict(dict)
    for job_id, kind, attempts, last_at in conn.execute(
            f"SELECT job_id, kind, array_agg(attempt ORDER BY attempt), max(at) FROM {effects} "
            f"WHERE job_id = ANY(%s::bigint[]) GROUP BY job_id, kind", (ids,)):
        out[job_id][kind] = (list(attempts), last_at)
    return out


def assert_invariants(conn: psycopg.Connection, expected: Mapping[int, Expect] | Iterable[int], **kwargs: Any) -> Report:
    """:func:`check`, failing the test with every violation in words."""
    report = check(conn, expected, **kwargs)
    if report.violations:
        raise AssertionError(report.describe())
    return report
