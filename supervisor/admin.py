"""The operator's view and actions on the jobs table, shared by the CLI and the dashboard."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import psycopg
from psycopg.rows import dict_row

from .queries import queries_for

STATUSES = ("queued", "running", "succeeded", "retry", "failed", "cancelled")


# A runner silent this long no longer counts as handling its job types in ``status``.
RUNNER_STALE_AFTER = 30.0


def status(conn: psycopg.Connection, table: str) -> dict[str, Any]:
    return _status(conn, table, matrix=False)


def overview(conn: psycopg.Connection, table: str) -> dict[str, Any]:
    """:func:`status` plus ``by_type_queue``: counts by status for each (job type, queue)
    pair, from the same single counting query (the dashboard's overview)."""
    return _status(conn, table, matrix=True)


def _status(conn: psycopg.Connection, table: str, matrix: bool) -> dict[str, Any]:
    q = queries_for(table)
    by_status = {s: 0 for s in STATUSES}
    by_type: dict[str, dict[str, int]] = {}
    by_queue: dict[str, dict[str, int]] = {}
    by_type_queue: dict[tuple[str, str], dict[str, int]] = {}
    for st, job_type, queue, n in conn.execute(q.jobs_count_by_status).fetchall():
        by_status[st] = by_status.get(st, 0) + n
        by_type.setdefault(job_type, {s: 0 for s in STATUSES})[st] += n
        by_queue.setdefault(queue, {s: 0 for s in STATUSES})[st] += n
        by_type_queue.setdefault((job_type, queue), {s: 0 for s in STATUSES})[st] += n
    with conn.cursor(row_factory=dict_row) as cur:
        oldest = cur.execute(q.job_oldest_waiting).fetchone()
        runners = cur.execute(q.runners_list).fetchall()
    handled = set()
    for runner in runners:
        runner["stale"] = runner["heartbeat_age"] > RUNNER_STALE_AFTER
        if not runner["stale"]:
            handled.update(runner["job_types"] or [])
    unhandled = sorted(t for t, counts in by_type.items()
                       if counts["queued"] + counts["retry"] > 0 and t not in handled)
    data = {
        "table": table,
        "by_status": by_status,
        "by_type": by_type,
        "by_queue": by_queue,
        "oldest_waiting": oldest,
        "runners": runners,
        "unhandled_types": unhandled,
    }
    if matrix:
        data["by_type_queue"] = by_type_queue
    return data


def list_jobs(conn: psycopg.Connection, table: str, *, status: str | None = None, job_type: str | None = None,
              queue: str | None = None, limit: int = 50, before_id: int | None = None) -> list[dict[str, Any]]:
    q = queries_for(table)
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(q.jobs_list, {"status": status, "job_type": job_type, "queue": queue,
                                         "limit": limit, "before_id": before_id}).fetchall()


def get_job(conn: psycopg.Connection, table: str, job_id: int) -> dict[str, Any] | None:
    q = queries_for(table)
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(q.job_get, {"id": job_id}).fetchone()


@dataclass
class ActionResult:
    """What an operator action changed, and why it refused the rest."""

    action: str
    changed: list[int]
    refused: dict[int, str]  # id -> reason

    @property
    def ok(self) -> bool:
        return not self.refused


_ACTIONS = {
    "retry": ("jobs_retry", "only failed or cancelled jobs can be retried"),
    "cancel": ("jobs_cancel", "only queued or retry jobs can be cancelled"),
    "run-now": ("jobs_run_now", "only queued or retry jobs can be run now"),
    "delete": ("jobs_delete", "a running job cannot be deleted (kill it first)"),
}
KILL_REFUSAL = "only running jobs can be killed"
ACTIONS = ("retry", "cancel", "run-now", "delete", "kill")

# The statuses each action applies to (SPEC §2 state machine).
APPLIES_TO = {
    "retry": ("failed", "cancelled"),
    "cancel": ("queued", "retry"),
    "run-now": ("queued", "retry"),
    "delete": ("queued", "retry", "succeeded", "failed", "cancelled"),
    "kill": ("running",),
}


def refusal_reason(action: str) -> str:
    return KILL_REFUSAL if action == "kill" else _ACTIONS[action][1]


def _refusals(conn: psycopg.Connection, q: Any, ids: list[int], changed: list[int], reason: str) -> dict[int, str]:
    done = set(changed)
    rest = [i for i in dict.fromkeys(ids) if i not in done]
    if not rest:
        return {}
    found = dict(conn.execute(q.jobs_status_of, {"ids": rest}).fetchall())
    return {job_id: (f"job {job_id} does not exist" if job_id not in found
                     else f"job {job_id} is {found[job_id]}: {reason}") for job_id in rest}


def act(conn: psycopg.Connection, table: str, action: str, ids: list[int]) -> ActionResult:
    """Apply ``retry``, ``cancel``, ``run-now``, ``delete`` or ``kill`` to ids; one transaction.
    Ids the action cannot apply to (or that do not exist) are refused, each with its reason."""
    if action == "kill":
        return kill(conn, table, ids)
    if action not in _ACTIONS:
        raise ValueError(f"unknown action {action!r}")
    q = queries_for(table)
    query_name, refusal = _ACTIONS[action]
    with conn.transaction():
        changed = [row[0] for row in conn.execute(getattr(q, query_name), {"ids": ids}).fetchall()]
        refused = _refusals(conn, q, ids, changed, refusal)
        if changed and action in ("retry", "run-now"):
            conn.execute(q.jobs_notify)
    return ActionResult(action, sorted(changed), refused)


def kill(conn: psycopg.Connection, table: str, ids: list[int]) -> ActionResult:
    """Fail running jobs with ``killed by operator`` and tell their runners to kill the child.

    The row changes first (durable: a runner that misses the NOTIFY still sees at its next
    heartbeat that its lock is gone), then the NOTIFY makes it immediate, across machines.
    """
    import json

    q = queries_for(table)
    with conn.transaction():
        rows = conn.execute(q.jobs_kill, {"ids": ids}).fetchall()
        for job_id, lock in rows:
            conn.execute(q.control_notify, {"payload": json.dumps({"kill": job_id, "lock": lock})})
        changed = [row[0] for row in rows]
        refused = _refusals(conn, q, ids, changed, KILL_REFUSAL)
    return ActionResult("kill", sorted(changed), refused)


class FilterError(ValueError):
    """A filter an action cannot be applied on (empty, or a status the action never applies to)."""


def act_on_filter(conn: psycopg.Connection, table: str, action: str, filters: "JobFilter", *,
                  batch: int = 500) -> ActionResult:
    """Apply an action to every job matching ``filters`` that it applies to (the Python API
    behind ``jobsupervisor retry --type T --status failed`` and friends).

    Without ``filters.status`` the action takes every status it applies to (``retry --type T``
    retries T's failed and cancelled jobs); a status it never applies to, or an empty filter,
    raises :class:`FilterError` and changes nothing. Jobs are changed in batches of ``batch``,
    one short transaction each (built on :func:`act_on_matching`). ``refused`` lists only
    jobs whose status changed between being selected and being acted on.
    """
    if action not in APPLIES_TO:
        raise ValueError(f"unknown action {action!r}")
    if not filters.active:
        raise FilterError(f"{action}: give job ids or at least one filter (type, status, queue); "
                          "an empty filter would match every job")
    statuses = APPLIES_TO[action]
    if filters.status is not None:
        if filters.status not in statuses:
            raise FilterError(f"{action} cannot apply to {filters.status} jobs: {refusal_reason(action)}")
        statuses = (filters.status,)
    changed: list[int] = []
    refused: dict[int, str] = {}
    for status in statuses:
        result, _ = act_on_matching(conn, table, action, replace(filters, status=status),
                                    limit=2**62, batch=batch)
        changed.extend(result.changed)
        refused.update(result.refused)
    return ActionResult(action, sorted(changed), refused)


def stop_runner(conn: psycopg.Connection, table: str, runner_id: str) -> str | None:
    """Ask one runner to drain and exit, through the database: its row asks (seen at its next
    heartbeat) and a NOTIFY on the control channel makes it immediate, across machines.

    ``runner_id`` is a runner's id, or the ``host:pid`` (or ``host``) of exactly one, or its pid when
    only one runner has it. Returns the id asked, None when no runner matches; raises
    ValueError naming the candidates when several do."""
    import json

    q = queries_for(table)
    with conn.transaction():
        target = _resolve_runner(conn, q, runner_id)
        if target is None:
            return None
        found = conn.execute(q.runner_request_stop, {"id": target}).fetchone()
        if found:
            conn.execute(q.control_notify, {"payload": json.dumps({"stop": target})})
    return target if found else None


def _resolve_runner(conn: psycopg.Connection, q: Any, text: str) -> str | None:
    text = text.strip()
    rows = conn.execute(q.runners_list).fetchall()
    ids = [row[0] for row in rows]
    if text in ids:
        return text
    matches = [i for i in ids if i.startswith(text + ":")] if text else []  # host, or host:pid
    if not matches and text.isdigit():
        matches = [row[0] for row in rows if str(row[2]) == text]
    if len(matches) > 1:
        raise ValueError(f"runner {text!r} is ambiguous: it matches {', '.join(sorted(matches))}")
    return matches[0] if matches else None


# --- the dashboard's queries (supervisor/web) -------------------------------------------------


@dataclass(frozen=True)
class JobFilter:
    """What a job list shows: every field optional (None: no filter).

    ``runner`` matches ``locked_by`` by prefix (a host, or a whole runner id); ``search`` is a
    case-insensitive substring of the payload's JSON text or of last_error; the time range is
    on ``created_at`` (``created_from`` inclusive, ``created_to`` exclusive).
    """

    status: str | None = None
    job_type: str | None = None
    queue: str | None = None
    runner: str | None = None
    created_from: Any = None
    created_to: Any = None
    search: str | None = None

    def params(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "job_type": self.job_type,
            "queue": self.queue,
            "runner": self.runner,
            "created_from": self.created_from,
            "created_to": self.created_to,
            "pattern": like_pattern(self.search) if self.search else None,
        }

    @property
    def active(self) -> bool:
        return any(value is not None for value in self.params().values())


def like_pattern(text: str) -> str:
    """An ILIKE pattern matching ``text`` anywhere, its own ``%``, ``_`` and ``\\`` taken literally."""
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def page_jobs(conn: psycopg.Connection, table: str, filters: JobFilter = JobFilter(), *, limit: int = 50,
              before_id: int | None = None, after_id: int | None = None,
              ascending: bool = False) -> list[dict[str, Any]]:
    """One keyset page of jobs matching ``filters``.

    Descending (newest first) pages start below ``before_id``; ascending pages start above
    ``after_id``. Both are index range scans however deep the page is.
    """
    q = queries_for(table)
    params = filters.params()
    params["limit"] = limit
    if ascending:
        params["after_id"] = after_id
        query = q.jobs_page_oldest
    else:
        params["before_id"] = before_id
        query = q.jobs_page_newest
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(query, params).fetchall()


def act_on_matching(conn: psycopg.Connection, table: str, action: str, filters: JobFilter, *,
                    limit: int = 100_000, batch: int = 500) -> tuple[ActionResult, bool]:
    """Apply an action (``retry``, ``cancel``, ``run-now``, ``delete`` or ``kill``) to every job
    matching ``filters``, newest first, in batches of ``batch`` (one transaction each), at most
    ``limit`` jobs. Returns the combined result and whether the limit stopped it early."""
    if action not in APPLIES_TO:
        raise ValueError(f"unknown action {action!r}")
    q = queries_for(table)
    params = filters.params()
    changed: list[int] = []
    refused: dict[int, str] = {}
    seen = 0
    before_id = None
    while seen < limit:
        params.update(before_id=before_id, limit=min(batch, limit - seen))
        ids = [row[0] for row in conn.execute(q.jobs_ids_matching, params).fetchall()]
        if not ids:
            return ActionResult(action, sorted(changed), refused), False
        result = act(conn, table, action, ids)
        changed.extend(result.changed)
        refused.update(result.refused)
        seen += len(ids)
        before_id = ids[-1]
    more = conn.execute(q.jobs_ids_matching, dict(params, before_id=before_id, limit=1)).fetchone() is not None
    return ActionResult(action, sorted(changed), refused), more


def list_runners(conn: psycopg.Connection, table: str) -> list[dict[str, Any]]:
    """Registered runners with their heartbeat age; ``stale`` when not heard from lately."""
    q = queries_for(table)
    with conn.cursor(row_factory=dict_row) as cur:
        runners = cur.execute(q.runners_list).fetchall()
    for runner in runners:
        runner["stale"] = runner["heartbeat_age"] > RUNNER_STALE_AFTER
    return runners


def finished_per_bucket(conn: psycopg.Connection, table: str, *, window: float,
                        bucket: float) -> list[dict[str, Any]]:
    """Succeeded and failed jobs per (bucket start as epoch seconds, job type) over the last
    ``window`` seconds: one grouped query on ``finished_at``."""
    q = queries_for(table)
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(q.jobs_finished_per_bucket, {"window": float(window), "bucket": float(bucket)}).fetchall()


def duration_buckets(conn: psycopg.Connection, table: str, *, window: float,
                     bounds: list[float]) -> list[dict[str, Any]]:
    """For each job type finished in the last ``window`` seconds and each bound: how many ran
    at most that long, with the type's total count and summed seconds."""
    q = queries_for(table)
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(q.jobs_duration_buckets, {"window": float(window),
                                                     "bounds": [float(b) for b in bounds]}).fetchall()


def db_now(conn: psycopg.Connection, table: str) -> float:
    """The database's clock, epoch seconds."""
    return conn.execute(queries_for(table).db_now).fetchone()[0]
