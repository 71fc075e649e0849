"""The dashboard's Flask application: pages, actions, the JSON API and ``/metrics``.

Security rules, in one place:

* every page is rendered by autoescaping Jinja templates; nothing user-controlled is ever
  marked safe (the only markup assembled outside a template is none: charts are templates);
* basic auth (when configured) compares digests of user and password in constant time and
  answers 401 with ``WWW-Authenticate``;
* every POST carries the session's CSRF token (a signed cookie holds the session), else 403;
* ``web.read_only`` hides every action and refuses every POST with 403;
* SQL comes from the named blocks of ``sql/queries.sql`` through :mod:`supervisor.admin`,
  always with bound parameters;
* a Content-Security-Policy allows only this application's own scripts and styles.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import ipaddress
import json
import os
import secrets
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Iterator

import psycopg
from flask import (Blueprint, Flask, Response, abort, current_app, flash, g, jsonify, redirect, render_template,
                   request, session, url_for)
from flask.json.provider import DefaultJSONProvider
from werkzeug.exceptions import HTTPException

from .. import __version__, admin
from ..admin import STATUSES, JobFilter
from ..units import format_duration, parse_duration
from . import charts as charts_mod
from . import metrics as metrics_mod

ENV_SECRET = "JOBSUPERVISOR_WEB_SECRET"
ENV_ALLOWED_HOSTS = "JOBSUPERVISOR_WEB_ALLOWED_HOSTS"
LIVE_HEADER = "X-Live"
PAGE_SIZES = (25, 50, 100, 200)
DEFAULT_PAGE_SIZE = 50
BULK_LIMIT = 100_000
SINCE_CHOICES = (("", "any time"), ("15m", "last 15 minutes"), ("1h", "last hour"), ("24h", "last 24 hours"),
                 ("7d", "last 7 days"))
STATEMENT_TIMEOUT_MS = 15_000
MAX_TEXT = 500  # longest filter value accepted
MAX_PAYLOAD_SHOWN = 200_000  # characters of pretty JSON shown on a job's page

# The actions of SPEC §8: label, the statuses it applies to, whether it asks for confirmation.
ACTIONS: dict[str, tuple[str, tuple[str, ...], bool]] = {
    "retry": ("Retry", ("failed", "cancelled"), False),
    "run-now": ("Run now", ("queued", "retry"), False),
    "cancel": ("Cancel", ("queued", "retry"), True),
    "kill": ("Kill", ("running",), True),
    "delete": ("Delete", ("queued", "retry", "succeeded", "failed", "cancelled"), True),
}
PAST_TENSE = {"retry": "queued again", "run-now": "due now", "cancel": "cancelled", "kill": "killed",
              "delete": "deleted"}

bp = Blueprint("dashboard", __name__)


# --- connections ----------------------------------------------------------------------------
class Pool:
    """A few open connections shared by the server's threads.

    Autocommit, a statement timeout, and ``prepare_threshold=None``: every query is planned with
    its actual parameters, so an unused (NULL) filter folds away and the right index is chosen.
    """

    def __init__(self, dsn: str, size: int = 8, statement_timeout_ms: int = STATEMENT_TIMEOUT_MS):
        self.dsn = dsn
        self.size = size
        self.statement_timeout_ms = statement_timeout_ms
        self._idle: list[psycopg.Connection] = []
        self._lock = threading.Lock()

    def _open(self) -> psycopg.Connection:
        from ..db import connect, tolerate_unreadable_json

        conn = tolerate_unreadable_json(connect(self.dsn, autocommit=True, prepare_threshold=None,
                                                application_name="jobsupervisor-web"))
        conn.execute("SELECT set_config('statement_timeout', %s, false)", (str(self.statement_timeout_ms),))
        return conn

    @contextmanager
    def connection(self) -> Iterator[psycopg.Connection]:
        with self._lock:
            conn = self._idle.pop() if self._idle else None
        if conn is None or conn.closed or conn.broken:
            conn = self._open()
        try:
            yield conn
        finally:
            self.put(conn)

    def put(self, conn: psycopg.Connection) -> None:
        healthy = not conn.closed and not conn.broken and \
            conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
        with self._lock:
            if healthy and len(self._idle) < self.size:
                self._idle.append(conn)
                return
        conn.close()

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()


@dataclass
class State:
    config: Any
    table: str
    pool: Pool
    read_only: bool
    auth: Any  # BasicAuth | None
    handler_error: str | None
    allowed_hosts: list[str] = field(default_factory=list)  # host names besides IPs/localhost; ["*"]: any


def state() -> State:
    return current_app.extensions["jobsupervisor"]


def db() -> psycopg.Connection:
    """This request's connection (taken from the pool on first use, returned at teardown)."""
    if "db_conn" not in g:
        cm = state().pool.connection()
        g.db_conn = cm.__enter__()
        g.db_cm = cm
    return g.db_conn


class _JSON(DefaultJSONProvider):
    """ISO 8601 for times (Flask's default is the HTTP date format)."""

    @staticmethod
    def default(o: Any) -> Any:
        if isinstance(o, (dt.datetime, dt.date)):
            return o.isoformat()
        if isinstance(o, (set, tuple)):
            return list(o)
        return DefaultJSONProvider.default(o)


# --- the application ------------------------------------------------------------------------
def create_app(config, dsn: str, *, secret_key: str | bytes | None = None, import_handlers: bool = True,
               pool_size: int = 8, allowed_hosts: list[str] | None = None) -> Flask:
    """The dashboard for ``config``'s jobs table in the database at ``dsn``.

    ``secret_key`` signs the session cookie that carries the CSRF token; default
    ``$JOBSUPERVISOR_WEB_SECRET``, else random per process (forms open across a restart are
    then refused once, with a clear message). Set it when several processes serve the same
    dashboard. ``import_handlers`` imports ``config.imports`` so that handlers' ``describe=``
    summaries and job types are known; a failure there is shown, not raised.
    """
    app = Flask(__name__)
    app.json = _JSON(app)
    app.config.update(
        SECRET_KEY=secret_key or os.environ.get(ENV_SECRET) or secrets.token_bytes(32),
        SESSION_COOKIE_NAME="jobsupervisor_session",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SEND_FILE_MAX_AGE_DEFAULT=3600,
        MAX_CONTENT_LENGTH=4 * 1024 * 1024,
        MAX_FORM_MEMORY_SIZE=4 * 1024 * 1024,
    )
    handler_error = None
    if import_handlers and config.imports:
        from ..registry import import_handlers as do_import

        try:
            do_import(config.imports, config.base_dir)
        except Exception as error:  # noqa: BLE001 - the dashboard works without the handlers
            handler_error = f"{type(error).__name__}: {error}"
    allowed = allowed_hosts if allowed_hosts is not None else [
        h.strip().lower() for h in os.environ.get(ENV_ALLOWED_HOSTS, "").split(",") if h.strip()]
    app.extensions["jobsupervisor"] = State(config=config, table=config.database.table, pool=Pool(dsn, pool_size),
                                            allowed_hosts=allowed,
                                            read_only=config.web.read_only, auth=config.web.auth,
                                            handler_error=handler_error)
    app.register_blueprint(bp)
    env = app.jinja_env
    env.autoescape = True
    env.filters.update(ts=_ts, ago=_ago, dur=_dur, num=_num, pct=_pct)
    env.globals.update(csrf_token=csrf_token, STATUSES=STATUSES, ACTIONS=ACTIONS, version=__version__,
                       list_url=list_url, SINCE_CHOICES=SINCE_CHOICES, PAGE_SIZES=PAGE_SIZES,
                       runner_of=runner_of, gate_of=gate_of, static_url=static_url)
    return app


def static_url(filename: str) -> str:
    return url_for("static", filename=filename, v=__version__)


# --- request checks: auth, read-only, CSRF --------------------------------------------------
def _digest(text: str | None) -> bytes:
    return hashlib.sha256((text or "").encode("utf-8", "surrogatepass")).digest()


def _local_host(host: str) -> bool:
    """Is a Host header an IP literal or a localhost name (what a browser sends to a
    dashboard reached by address), rather than a DNS name an attacker could re-point?"""
    name = host.strip().lower()
    if name.startswith("["):  # [::1]:8080
        name = name[1:name.find("]")] if "]" in name else name[1:]
    elif name.count(":") == 1:
        name = name.rsplit(":", 1)[0]
    if name in ("localhost", "localhost.") or name.endswith(".localhost"):
        return True
    try:
        ipaddress.ip_address(name)
        return True
    except ValueError:
        return False


@bp.before_app_request
def _guard() -> Response | None:
    st = state()
    g.now = time.time()
    if st.auth is None and st.allowed_hosts != ["*"]:
        # Without auth, a foreign host name is DNS rebinding: a page on evil.example re-points
        # its name at our address and becomes same-origin with us. Answer only to addresses,
        # localhost, and names the operator allowed ($JOBSUPERVISOR_WEB_ALLOWED_HOSTS).
        host = request.host or ""
        bare = host.rsplit(":", 1)[0].lower() if not host.startswith("[") else host
        if not _local_host(host) and bare not in st.allowed_hosts:
            return Response("Unknown host name: without web.auth this dashboard answers only to IP addresses,"
                            " localhost and $JOBSUPERVISOR_WEB_ALLOWED_HOSTS.\n", 421,
                            {"Content-Type": "text/plain; charset=utf-8"})
    if st.auth is not None:
        given = request.authorization
        ok = False
        if given is not None and given.type == "basic":
            user_ok = hmac.compare_digest(_digest(given.username), _digest(st.auth.user))
            password_ok = hmac.compare_digest(_digest(given.password), _digest(st.auth.password))
            ok = user_ok and password_ok
        if not ok:
            return Response("Authentication required.\n", 401, {
                "WWW-Authenticate": 'Basic realm="jobsupervisor", charset="UTF-8"',
                "Content-Type": "text/plain; charset=utf-8"})
    if request.method not in ("GET", "HEAD", "OPTIONS"):
        if st.read_only:
            abort(403, "This dashboard is read-only (web.read_only: true).")
        expected = session.get("csrf")
        given_token = request.form.get("csrf_token") or request.headers.get("X-CSRF-Token") or ""
        if not expected or not hmac.compare_digest(given_token.encode(), str(expected).encode()):
            abort(403, "The form's security token is missing or expired (CSRF check). Reload the page and try again.")
    return None


def csrf_token() -> str:
    token = session.get("csrf")
    if not token:
        token = secrets.token_urlsafe(32)
        session["csrf"] = token
    return token


@bp.after_app_request
def _headers(response: Response) -> Response:
    response.headers.setdefault(
        "Content-Security-Policy",
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
        "form-action 'self'; base-uri 'none'; frame-ancestors 'none'")
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("X-Frame-Options", "DENY")
    response.headers.setdefault("Referrer-Policy", "same-origin")
    if request.endpoint != "static":
        response.headers.setdefault("Cache-Control", "no-store")
    return response


@bp.teardown_app_request
def _release(exc: BaseException | None) -> None:
    cm = g.pop("db_cm", None)
    g.pop("db_conn", None)
    if cm is not None:
        cm.__exit__(None, None, None)


def _wants_json() -> bool:
    return request.path.startswith("/api/") or request.headers.get(LIVE_HEADER) == "1"


@bp.app_errorhandler(HTTPException)
def _http_error(error: HTTPException):
    if _wants_json():
        return jsonify(error=error.description, status=error.code), error.code
    return render_template("error.html", code=error.code, title=error.name, message=error.description), error.code


@bp.app_errorhandler(psycopg.Error)
def _db_error(error: psycopg.Error):
    if isinstance(error, psycopg.errors.QueryCanceled):
        code, message = 503, ("The database took too long to answer (statement timeout). "
                              "A search over a large table scans it: narrow it with a status, type or time range.")
    elif isinstance(error, psycopg.errors.UndefinedTable):
        code, message = 503, (f"The table {state().table!r} does not exist yet: run 'jobsupervisor migrate'.")
    elif isinstance(error, psycopg.OperationalError):
        code, message = 503, "The database is unavailable: " + " ".join(str(error).split())[:300]
    else:
        current_app.logger.exception("database error")
        code, message = 500, f"Database error: {type(error).__name__}"
    if _wants_json():
        return jsonify(error=message, status=code), code
    return render_template("error.html", code=code, title="Database problem", message=message), code


# --- formatting helpers (Jinja filters) -----------------------------------------------------
def _epoch(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=dt.timezone.utc)
        return value.timestamp()
    return float(value)


def _ts(value: Any) -> str:
    epoch = _epoch(value)
    if epoch is None:
        return "—"
    return dt.datetime.fromtimestamp(epoch, dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def _ago(value: Any) -> str:
    epoch = _epoch(value)
    if epoch is None:
        return "—"
    delta = g.get("now", time.time()) - epoch
    if abs(delta) < 1:
        return "just now"
    text = format_duration(round(abs(delta)) if abs(delta) < 3600 else round(abs(delta) / 60) * 60)
    return f"{text} ago" if delta > 0 else f"in {text}"


def _dur(seconds: Any) -> str:
    if seconds is None:
        return "—"
    seconds = float(seconds)
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    if seconds < 60:
        return f"{seconds:.1f}s"
    return format_duration(round(seconds))


def _num(value: Any) -> str:
    return f"{int(value):,}" if value is not None else "—"


def _pct(value: Any) -> str:
    if value is None:
        return "—"
    return f"{value * 100:.1f}%" if value < 0.995 or value == 1 else f"{value * 100:.2f}%"


def runner_of(locked_by: str | None) -> str | None:
    """The runner id in a lock (``host:pid:token/childpid`` → ``host:pid:token``)."""
    if not locked_by:
        return None
    return locked_by.split("/", 1)[0]


def gate_of(runner: dict[str, Any]) -> dict[str, Any] | None:
    gate = (runner.get("info") or {}).get("gate")
    return gate if isinstance(gate, dict) else None


# --- rendering ------------------------------------------------------------------------------
@bp.app_context_processor
def _page_context() -> dict[str, Any]:
    st = state()
    return {"read_only": st.read_only, "handler_error": st.handler_error, "table": st.table}


def render_page(template: str, regions: dict[str, str], **context: Any):
    """The page, or for a live refresh (``X-Live: 1``) just its live regions as JSON."""
    if request.headers.get(LIVE_HEADER) == "1":
        return jsonify(regions={name: render_template(part, **context) for name, part in regions.items()},
                       now=g.now)
    return render_template(template, **context)


def summarize(job_type: str, payload: Any) -> tuple[str | None, str | None]:
    """A handler's own summary of a payload (``@job(..., describe=...)``): (text, error)."""
    from ..registry import get_handler

    handler = get_handler(job_type)
    if handler is None or handler.describe is None or payload is None:
        return None, None
    try:
        text = handler.describe(payload)
    except Exception as error:  # noqa: BLE001 - a broken describe must not break the page
        return None, f"{type(error).__name__}: {error}"[:500]
    if text is None:
        return None, None
    text = str(text)
    return (text[:2000] + "…" if len(text) > 2000 else text), None


# --- job list filters -----------------------------------------------------------------------
FILTER_KEYS = ("status", "type", "queue", "runner", "q", "since", "from", "to", "order", "limit")


@dataclass
class ListQuery:
    filters: JobFilter
    order: str
    before: int | None
    after: int | None
    limit: int
    args: dict[str, str]  # the accepted filter arguments, to rebuild URLs and the form
    errors: list[str]


def _text_arg(args, name: str, label: str, errors: list[str]) -> str | None:
    value = (args.get(name) or "").strip()
    if not value:
        return None
    if "\x00" in value or len(value) > MAX_TEXT:
        errors.append(f"{label}: ignored (too long, or contains a NUL character)")
        return None
    return value


def _time_arg(args, name: str, label: str, errors: list[str]) -> dt.datetime | None:
    value = (args.get(name) or "").strip()
    if not value:
        return None
    try:
        parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00") if value.endswith("Z") else value)
    except ValueError:
        errors.append(f"{label}: expected a time like 2026-01-31T12:00 (UTC), got {value[:60]!r}")
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.timezone.utc)


def _id_arg(args, name: str, errors: list[str]) -> int | None:
    value = (args.get(name) or "").strip()
    if not value:
        return None
    if not value.isdigit() or not 0 < int(value) < 2**63:
        errors.append(f"{name}: expected a job id, got {value[:30]!r}")
        return None
    return int(value)


def parse_list_args(args) -> ListQuery:
    errors: list[str] = []
    accepted: dict[str, str] = {}
    status = (args.get("status") or "").strip() or None
    if status is not None and status not in STATUSES:
        errors.append(f"status: expected one of {', '.join(STATUSES)}")
        status = None
    job_type = _text_arg(args, "type", "type", errors)
    queue = _text_arg(args, "queue", "queue", errors)
    runner = _text_arg(args, "runner", "runner", errors)
    search = _text_arg(args, "q", "search", errors)
    created_from = _time_arg(args, "from", "from", errors)
    created_to = _time_arg(args, "to", "to", errors)
    since = (args.get("since") or "").strip() or None
    if since is not None:
        try:
            seconds = parse_duration(since)
            if seconds <= 0:
                raise ValueError("must be positive")
            since_from = dt.datetime.fromtimestamp(g.now - seconds, dt.timezone.utc)
            created_from = max(created_from, since_from) if created_from else since_from
        except ValueError:
            errors.append(f"since: expected a duration like 1h, got {since[:30]!r}")
            since = None
    order = args.get("order") or "newest"
    if order not in ("newest", "oldest"):
        errors.append("order: expected newest or oldest")
        order = "newest"
    try:
        limit = int(args.get("limit") or DEFAULT_PAGE_SIZE)
    except ValueError:
        limit = DEFAULT_PAGE_SIZE
    limit = min(max(limit, 1), max(PAGE_SIZES))
    for key, value in (("status", status), ("type", job_type), ("queue", queue), ("runner", runner),
                       ("q", search), ("since", since), ("from", args.get("from") if created_from else None),
                       ("to", args.get("to") if created_to else None)):
        if value:
            accepted[key] = str(value).strip()
    if order != "newest":
        accepted["order"] = order
    if limit != DEFAULT_PAGE_SIZE:
        accepted["limit"] = str(limit)
    filters = JobFilter(status=status, job_type=job_type, queue=queue, runner=runner, created_from=created_from,
                        created_to=created_to, search=search)
    return ListQuery(filters=filters, order=order, before=_id_arg(args, "before", errors),
                     after=_id_arg(args, "after", errors), limit=limit, args=accepted, errors=errors)


def list_url(base: dict[str, str] | None = None, endpoint: str = "dashboard.jobs", **changes: Any) -> str:
    """The job list URL with ``base`` filters and ``changes`` (None removes a key)."""
    params = dict(base or {})
    for key, value in changes.items():
        if value is None or value == "":
            params.pop(key, None)
        else:
            params[key] = str(value)
    return url_for(endpoint, **params)


@dataclass
class Page:
    rows: list[dict[str, Any]]
    newer: dict[str, int] | None  # cursor of the previous page in display order
    older: dict[str, int] | None  # cursor of the next page
    first: bool  # this is the first page


def fetch_page(conn, table: str, lq: ListQuery) -> Page:
    """Keyset pagination in both directions of both orders (ids are the cursor)."""
    newest = lq.order == "newest"
    backwards = (newest and lq.after is not None) or (not newest and lq.before is not None)
    n = lq.limit
    if backwards:
        rows = admin.page_jobs(conn, table, lq.filters, limit=n + 1, ascending=newest,
                               after_id=lq.after, before_id=lq.before)
        more_back = len(rows) > n
        rows = rows[:n]
        rows.reverse()
        more_forward, more_backward = True, more_back
    else:
        rows = admin.page_jobs(conn, table, lq.filters, limit=n + 1, ascending=not newest,
                               after_id=lq.after, before_id=lq.before)
        more_forward = len(rows) > n
        rows = rows[:n]
        more_backward = lq.before is not None or lq.after is not None
    prev_key, next_key = ("after", "before") if newest else ("before", "after")
    newer = {prev_key: rows[0]["id"]} if rows and more_backward else None
    older = {next_key: rows[-1]["id"]} if rows and more_forward else None
    return Page(rows=rows, newer=newer, older=older, first=not more_backward)


def _row_summaries(rows: list[dict[str, Any]]) -> None:
    for row in rows:
        row["summary"], row["summary_error"] = summarize(row["job_type"], row.pop("payload_small", None))


def _job_types_known(runners: list[dict[str, Any]]) -> list[str]:
    from ..registry import handlers

    names = set(handlers())
    for runner in runners:
        names.update(runner.get("job_types") or [])
    names.update(state().config.jobs)
    return sorted(names)


def _queues_known(runners: list[dict[str, Any]]) -> list[str]:
    from ..registry import handlers

    names = {"default"} | {h.options.queue for h in handlers().values()}
    for runner in runners:
        names.update(runner.get("queues") or [])
    if state().config.queues:
        names.update(state().config.queues)
    return sorted(names)


# --- pages ----------------------------------------------------------------------------------
@bp.get("/")
def overview():
    st = state()
    conn = db()
    data = admin.overview(conn, st.table)
    window = charts_mod.WINDOWS.get(request.args.get("window", "hour"), charts_mod.WINDOWS["hour"])
    now = admin.db_now(conn, st.table)
    rows = admin.finished_per_bucket(conn, st.table, window=window.seconds, bucket=window.bucket)
    charts = charts_mod.build(rows, now=now, window=window)
    matrix = sorted(data["by_type_queue"].items(),
                    key=lambda item: (-(item[1]["queued"] + item[1]["retry"] + item[1]["running"]), item[0]))
    waiting = data["by_status"]["queued"] + data["by_status"]["retry"]
    return render_page("overview.html", {"overview": "_overview_live.html"}, data=data, charts=charts,
                       matrix=matrix[:100], matrix_hidden=max(len(matrix) - 100, 0), window=window,
                       windows=charts_mod.WINDOWS, waiting=waiting, total=sum(data["by_status"].values()))


@bp.get("/jobs")
def jobs():
    st = state()
    lq = parse_list_args(request.args)
    conn = db()
    page = fetch_page(conn, st.table, lq)
    _row_summaries(page.rows)
    runners = admin.list_runners(conn, st.table)
    return render_page("jobs.html", {"rows": "_jobs_rows.html"}, lq=lq, page=page, runners=runners,
                       job_types=_job_types_known(runners), queues=_queues_known(runners),
                       here=list_url(lq.args, before=lq.before, after=lq.after))


def _load_job(job_id: int) -> dict[str, Any]:
    if not 0 < job_id < 2**63:
        abort(404, f"Job {job_id} does not exist.")
    job = admin.get_job(db(), state().table, job_id)
    if job is None:
        abort(404, f"Job {job_id} does not exist (it may have been deleted or pruned).")
    return job


def _job_view(job: dict[str, Any]) -> dict[str, Any]:
    from ..registry import options_for

    view = dict(job)
    view["summary"], view["summary_error"] = summarize(job["job_type"], job["payload"])
    view["max_attempts_effective"] = job["max_attempts"] or options_for(job["job_type"], state().config).max_attempts
    pretty = json.dumps(job["payload"], indent=2, ensure_ascii=False, sort_keys=False)
    view["payload_cut"] = len(pretty) > MAX_PAYLOAD_SHOWN
    view["payload_pretty"] = pretty[:MAX_PAYLOAD_SHOWN]
    if job["finished_at"] and job["locked_at"] and job["status"] in ("succeeded", "failed"):
        view["duration"] = (job["finished_at"] - job["locked_at"]).total_seconds()
    elif job["status"] == "running" and job["locked_at"]:
        view["duration"] = g.now - job["locked_at"].timestamp()
    else:
        view["duration"] = None
    view["runner"] = runner_of(job["locked_by"])
    view["actions"] = [name for name, (_, applies, _) in ACTIONS.items() if job["status"] in applies]
    return view


@bp.get("/jobs/<int:job_id>")
def job_detail(job_id: int):
    job = _job_view(_load_job(job_id))
    return render_page("job.html", {"job": "_job_live.html"}, job=job)


@bp.get("/runners")
def runners():
    rows = admin.list_runners(db(), state().table)
    return render_page("runners.html", {"runners": "_runners_live.html"}, runners=rows)


# --- actions --------------------------------------------------------------------------------
def _apply(action: str, ids: list[int]) -> admin.ActionResult:
    conn = db()
    if action == "kill":
        return admin.kill(conn, state().table, ids)
    return admin.act(conn, state().table, action, ids)


def _flash_result(result: admin.ActionResult, more: bool = False) -> None:
    past = PAST_TENSE[result.action]
    if result.changed:
        shown = ", ".join(f"#{i}" for i in result.changed[:10])
        extra = f" and {len(result.changed) - 10} more" if len(result.changed) > 10 else ""
        noun = "job" if len(result.changed) == 1 else "jobs"
        flash(f"{len(result.changed):,} {noun} {past}: {shown}{extra}.", "success")
    if result.refused:
        reasons = list(result.refused.values())
        extra = f" (and {len(reasons) - 5} more)" if len(reasons) > 5 else ""
        flash(f"{len(reasons):,} refused: " + "; ".join(reasons[:5]) + extra + ".", "error")
    if not result.changed and not result.refused:
        flash("No job matched: nothing changed.", "warning")
    if more:
        flash(f"Stopped after {BULK_LIMIT:,} jobs; apply again to continue.", "warning")


def _safe_next(default: str) -> str:
    """Where to go after a POST: a local path from the form, never another site."""
    target = request.form.get("next") or ""
    root = request.script_root + "/"
    if (target.startswith(root) and not target.startswith("//") and "\\" not in target
            and not any(ch in target for ch in "\r\n\t")):
        return target
    return default


@bp.post("/jobs/<int:job_id>/<action>")
def job_action(job_id: int, action: str):
    if action not in ACTIONS:
        abort(404, f"Unknown action {action!r}: expected one of {', '.join(ACTIONS)}.")
    result = _apply(action, [job_id])
    _flash_result(result)
    if action == "delete" and result.changed:
        return redirect(url_for("dashboard.jobs"), 303)
    return redirect(_safe_next(url_for("dashboard.job_detail", job_id=job_id)), 303)


@bp.post("/jobs/bulk")
def jobs_bulk():
    action = request.form.get("action") or ""
    if action not in ACTIONS:
        abort(400, f"Choose an action: one of {', '.join(ACTIONS)}.")
    scope = request.form.get("scope") or "selected"
    back = _safe_next(url_for("dashboard.jobs"))
    if scope == "matching":
        lq = parse_list_args(request.form)
        if lq.errors:
            flash("Nothing done: the filter has errors: " + "; ".join(lq.errors), "error")
            return redirect(back, 303)
        result, more = admin.act_on_matching(db(), state().table, action, lq.filters, limit=BULK_LIMIT)
        _flash_result(result, more)
        return redirect(back, 303)
    ids = []
    for value in request.form.getlist("ids"):
        if value.isdigit() and 0 < int(value) < 2**63:
            ids.append(int(value))
    if not ids:
        flash("Select jobs first (the boxes in the first column), or apply the action to every job matching "
              "the filter.", "warning")
        return redirect(back, 303)
    _flash_result(_apply(action, ids))
    return redirect(back, 303)


@bp.post("/runners/stop")
def runner_stop():
    runner_id = (request.form.get("runner") or "").strip()
    if not runner_id:
        abort(400, "Which runner? (form field 'runner')")
    if admin.stop_runner(db(), state().table, runner_id):
        flash(f"Asked runner {runner_id} to stop: it drains its running jobs, then exits.", "success")
    else:
        flash(f"No runner {runner_id} is registered (it may have stopped already).", "error")
    return redirect(url_for("dashboard.runners"), 303)


# --- enqueue --------------------------------------------------------------------------------
ENQUEUE_FIELDS = ("job_type", "payload", "queue", "priority", "delay", "run_at", "max_attempts", "unique_key")


def _enqueue_form(values: dict[str, str], error: str | None = None, status: int = 200):
    runners = admin.list_runners(db(), state().table)
    return render_template("enqueue.html", values=values, error=error, job_types=_job_types_known(runners),
                           queues=_queues_known(runners)), status


def _json_error_message(text: str, error: json.JSONDecodeError) -> str:
    line = text.splitlines()[error.lineno - 1] if 0 < error.lineno <= len(text.splitlines()) else ""
    near = f" near {line.strip()[:60]!r}" if line.strip() else ""
    return f"The payload is not valid JSON: {error.msg} at line {error.lineno}, column {error.colno}{near}."


@bp.route("/enqueue", methods=["GET", "POST"])
def enqueue_job():
    from ..enqueue import enqueue

    if state().read_only:
        abort(403, "This dashboard is read-only (web.read_only: true).")
    if request.method == "GET":
        values = {"payload": "{}"}
        if request.args.get("type"):
            values["job_type"] = request.args["type"][:MAX_TEXT]
        return _enqueue_form(values)
    values = {name: (request.form.get(name) or "") for name in ENQUEUE_FIELDS}
    job_type = values["job_type"].strip()
    if not job_type:
        return _enqueue_form(values, "Give a job type.", 400)
    text = values["payload"].strip() or "{}"
    try:
        payload = json.loads(text)
    except json.JSONDecodeError as error:
        return _enqueue_form(values, _json_error_message(text, error), 400)
    kwargs: dict[str, Any] = {}
    for name, label in (("priority", "Priority"), ("max_attempts", "Max attempts")):
        raw = values[name].strip()
        if raw:
            try:
                kwargs[name] = int(raw)
            except ValueError:
                return _enqueue_form(values, f"{label} must be a whole number, got {raw[:30]!r}.", 400)
    if values["queue"].strip():
        kwargs["queue"] = values["queue"].strip()
    if values["unique_key"].strip():
        kwargs["unique_key"] = values["unique_key"].strip()
    if values["delay"].strip():
        kwargs["delay"] = values["delay"].strip()
    if values["run_at"].strip():
        kwargs["run_at"] = values["run_at"].strip()
    conn = db()
    try:
        with conn.transaction():
            job_id = enqueue(conn, job_type, payload, table=state().table, config=state().config, **kwargs)
    except (TypeError, ValueError) as error:
        message = str(error)
        return _enqueue_form(values, message[:1].upper() + message[1:] + ("" if message.endswith(".") else "."), 400)
    if job_id.created:
        flash(f"Enqueued {job_type} as job #{job_id}.", "success")
    else:
        flash(f"A job with unique key {kwargs.get('unique_key')!r} is already waiting or running: "
              f"job #{job_id}. Nothing new was enqueued.", "warning")
    runners = admin.list_runners(conn, state().table)
    handled = {t for r in runners if not r["stale"] for t in (r.get("job_types") or [])}
    if job_type not in handled:
        flash(f"No live runner handles job type {job_type!r}: the job waits until one does.", "warning")
    return redirect(url_for("dashboard.job_detail", job_id=int(job_id)), 303)


# --- metrics and the JSON API -------------------------------------------------------------
@bp.get("/metrics")
def metrics():
    return Response(metrics_mod.render(db(), state().table), mimetype=None,
                    headers={"Content-Type": metrics_mod.CONTENT_TYPE})


@bp.get("/api/status")
def api_status():
    data = admin.status(db(), state().table)
    data["read_only"] = state().read_only
    return jsonify(data)


@bp.get("/api/jobs")
def api_jobs():
    lq = parse_list_args(request.args)
    if lq.errors:
        abort(400, "; ".join(lq.errors))
    page = fetch_page(db(), state().table, lq)
    _row_summaries(page.rows)
    return jsonify(
        jobs=page.rows,
        newer=list_url(lq.args, "dashboard.api_jobs", **page.newer) if page.newer else None,
        older=list_url(lq.args, "dashboard.api_jobs", **page.older) if page.older else None)


@bp.get("/api/jobs/<int:job_id>")
def api_job(job_id: int):
    job = _job_view(_load_job(job_id))
    job.pop("payload_pretty", None)
    job.pop("payload_cut", None)
    return jsonify(job)


@bp.get("/api/runners")
def api_runners():
    return jsonify(runners=admin.list_runners(db(), state().table))


@bp.get("/api/throughput")
def api_throughput():
    name = request.args.get("window", "hour")
    if name not in charts_mod.WINDOWS:
        abort(400, f"window: expected one of {', '.join(charts_mod.WINDOWS)}")
    window = charts_mod.WINDOWS[name]
    rows = admin.finished_per_bucket(db(), state().table, window=window.seconds, bucket=window.bucket)
    return jsonify(window=name, window_seconds=window.seconds, bucket_seconds=window.bucket,
                   buckets=[{"start": dt.datetime.fromtimestamp(r["bucket"], dt.timezone.utc),
                             "job_type": r["job_type"], "succeeded": r["succeeded"], "failed": r["failed"]}
                            for r in rows])


__all__ = ["ACTIONS", "Pool", "create_app", "fetch_page", "parse_list_args"]
