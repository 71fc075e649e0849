"""The ``jobsupervisor`` command (SPEC §5).

Exit status: 0 success, 1 runtime failure, 2 usage or configuration error. Every error a
user can cause is one line on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import signal
import sys
import time
from typing import Any, Sequence

from . import __version__

_STATUSES = ("queued", "running", "succeeded", "retry", "failed", "cancelled")
COMMANDS = ("run", "migrate", "enqueue", "status", "jobs", "show", "retry", "cancel", "run-now", "delete",
            "stop", "config", "web", "kill", "runners", "schedules")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2
        from .errors import UserError

        raise UserError(f"{message} (see 'jobsupervisor --help')", exit_code=2)


def _config_option(parser: argparse.ArgumentParser, top: bool) -> None:
    parser.add_argument("-c", "--config", metavar="FILE", default=None if top else argparse.SUPPRESS,
                        help="configuration file (default: $JOBSUPERVISOR_CONFIG, else built-in defaults)")


def _job_id(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a job id: {text!r}") from None
    if not 0 < value < 2**63:
        raise argparse.ArgumentTypeError(f"not a job id: {text!r} (ids are positive 64-bit integers)")
    return value


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 0, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 0, got {text!r}")
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="jobsupervisor", description="Postgres-backed background jobs, run by a supervisor.")
    _config_option(parser, top=True)
    parser.add_argument("--version", action="version", version=f"jobsupervisor {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    def add(name: str, help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text)
        _config_option(p, top=False)
        return p

    add("run", "run the supervisor in the foreground (the default command)")
    add("migrate", "create or upgrade the schema")

    p = add("enqueue", "enqueue one job and print its id; TYPE '-' reads JSON lines from stdin")
    p.add_argument("job_type", metavar="TYPE")
    p.add_argument("payload", metavar="PAYLOAD_JSON", nargs="?", default=None)
    p.add_argument("--queue")
    p.add_argument("--priority", type=int)
    p.add_argument("--run-at", metavar="ISO8601")
    p.add_argument("--in", dest="delay", metavar="DURATION")
    p.add_argument("--max-attempts", type=int)
    p.add_argument("--unique-key")

    p = add("status", "counts by status, type and queue; runners; oldest waiting job")
    p.add_argument("--json", action="store_true")

    p = add("jobs", "list jobs, newest first")
    p.add_argument("--status", choices=list(_STATUSES))
    p.add_argument("--type", dest="job_type")
    p.add_argument("--queue")
    p.add_argument("--limit", type=_non_negative_int, default=50)
    p.add_argument("--before", type=_job_id, metavar="ID", help="only jobs with an id below ID (next page)")
    p.add_argument("--json", action="store_true")

    p = add("show", "show one job")
    p.add_argument("id", type=_job_id)
    p.add_argument("--json", action="store_true")

    for name, text in (("retry", "put failed or cancelled jobs back in the queue"),
                       ("cancel", "cancel waiting (queued or retry) jobs"),
                       ("run-now", "make waiting jobs due now"),
                       ("delete", "delete jobs that are not running"),
                       ("kill", "kill running jobs: their child is killed at once, the job fails with "
                                "'killed by operator'")):
        p = add(name, f"{text}; on job IDs, or on every job matching a filter")
        p.add_argument("ids", type=_job_id, nargs="*", metavar="ID")
        p.add_argument("--type", dest="job_type", metavar="T", help="every job of this type")
        p.add_argument("--status", choices=list(_STATUSES), help="every job in this status")
        p.add_argument("--queue", metavar="Q", help="every job in this queue")
        p.add_argument("--json", action="store_true", help="print what changed as JSON")

    p = add("runners", "list live supervisors; 'runners stop ID' asks one to drain and exit (ID: a runner id, "
                       "a unique prefix such as host:pid, or a pid)")
    p.add_argument("action", nargs="?", choices=["list", "stop"], default="list")
    p.add_argument("runner_id", nargs="?", metavar="ID")
    p.add_argument("--json", action="store_true")

    p = add("schedules", "list the configured cron schedules with their next runs")
    p.add_argument("--count", type=_positive_int, default=3, help="how many next runs to show")
    p.add_argument("--json", action="store_true")

    p = add("stop", "gracefully stop the supervisor named by the pidfile, and wait")
    p.add_argument("--timeout", type=float, default=None, metavar="SECONDS",
                   help="how long to wait (default: shutdown_timeout + 15s)")

    p = add("config", "print the configuration")
    p.add_argument("--defaults", action="store_true", help="every key with its default and meaning")

    p = add("web", "serve the dashboard alone (on web.listen, else 127.0.0.1:8080)")
    p.add_argument("--listen", metavar="HOST:PORT", help="address to serve on instead of web.listen")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from .errors import UserError

    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        return _main(argv)
    except UserError as error:
        from .units import mask_secrets

        print(f"jobsupervisor: {mask_secrets(str(error))}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        print("jobsupervisor: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    except Exception as error:  # noqa: BLE001 - a database failure is a runtime failure, not a bug
        import psycopg

        if not isinstance(error, psycopg.Error):
            raise
        from .db import describe_error

        print(f"jobsupervisor: database error: {describe_error(error)}", file=sys.stderr)
        return 1


def _main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    command = args.command or "run"
    from .config import defaults_yaml, load_config

    if command == "config" and args.defaults:
        sys.stdout.write(defaults_yaml())
        return 0
    config = load_config(args.config)
    handler = globals()["cmd_" + command.replace("-", "_")]
    return handler(config, args)


# --- helpers -------------------------------------------------------------------------------
def _dsn(config) -> str:
    from .db import resolve_dsn

    return resolve_dsn(config)


def _connect(config, *, autocommit: bool = True):
    from .db import connect_or_exit

    return connect_or_exit(_dsn(config), autocommit=autocommit)


def _require_schema(conn, config) -> None:
    from .errors import UserError
    from .migrate import current_version

    if current_version(conn, config.database.table) == 0:
        raise UserError(f"table {config.database.table!r} does not exist yet: run 'jobsupervisor migrate'", exit_code=2)


def _json_default(value: Any) -> Any:
    if isinstance(value, (dt.datetime, dt.date)):
        return value.isoformat()
    return str(value)


def _print_json(data: Any) -> None:
    print(json.dumps(data, default=_json_default, indent=2, ensure_ascii=False))


def _age(seconds: float | None) -> str:
    from .units import format_duration

    return "-" if seconds is None else format_duration(max(round(seconds), 0))


# --- commands ----------------------------------------------------------------------------
def cmd_run(config, args) -> int:
    from . import logs
    from .errors import UserError
    from .parent import run_supervisor
    from .pidfile import Pidfile

    logs.configure(config.logging.format, config.logging.level, syslog_address=config.logging.syslog_address)
    try:
        import setproctitle

        setproctitle.setproctitle(f"jobsupervisor: supervisor [{os.path.basename(config.path or 'defaults')}]")
    except ImportError:
        pass
    pidfile = Pidfile(config.pidfile) if config.pidfile else None
    if pidfile is not None:
        pidfile.acquire()
    try:
        dsn = _dsn(config)
        try:
            return run_supervisor(config, dsn)
        except UserError as error:
            if error.exit_code == 0:
                return 0
            raise
    finally:
        if pidfile is not None:
            pidfile.release()
        if not config.database.dsn:
            from .embedded import release

            release(config.database.embedded_dir)


def cmd_migrate(config, args) -> int:
    from .migrate import latest_version, migrate

    with _connect(config) as conn:
        applied = migrate(conn, config.database.table)
    if applied:
        for m in applied:
            print(f"applied {m.version:04d}_{m.name} to table {config.database.table}")
    else:
        print(f"table {config.database.table} is up to date (schema version {latest_version()})")
    return 0


def cmd_enqueue(config, args) -> int:
    from .enqueue import enqueue, enqueue_many
    from .errors import UserError
    from .registry import import_handlers

    table = config.database.table
    try:
        import_handlers(config.imports, config.base_dir)  # the handlers' default queue and priority apply
    except Exception as error:  # noqa: BLE001 - a broken handler module must not block the CLI
        print(f"jobsupervisor: warning: could not import handlers ({type(error).__name__}: {error}); "
              "using configured defaults", file=sys.stderr)
    if args.job_type == "-":
        if args.payload is not None:
            raise UserError("enqueue -: the jobs come from stdin, one JSON object per line; give no PAYLOAD_JSON",
                            exit_code=2)
        jobs = _read_job_lines(sys.stdin, config)
        with _connect(config, autocommit=False) as conn:
            _require_schema(conn, config)
            try:
                ids = enqueue_many(conn, jobs, table=table, config=config)
            except (TypeError, ValueError) as error:
                conn.rollback()
                raise UserError(f"nothing enqueued: {error}", exit_code=2) from None
            conn.commit()
        for job_id in ids:
            print(job_id if job_id.created else f"{job_id} (existing job with the same unique key)")
        print(f"enqueued {sum(1 for i in ids if i.created)} job(s)", file=sys.stderr)
        return 0
    payload: Any = {}
    if args.payload is not None:
        try:
            payload = json.loads(args.payload)
        except RecursionError:
            raise UserError("PAYLOAD_JSON is nested too deeply", exit_code=2) from None
        except ValueError as error:
            raise UserError(f"PAYLOAD_JSON is not valid JSON: {error}", exit_code=2) from None
    if args.run_at and args.delay:
        raise UserError("give --run-at or --in, not both", exit_code=2)
    run_at = None
    if args.run_at:
        try:
            run_at = dt.datetime.fromisoformat(args.run_at)
        except ValueError:
            raise UserError(f"--run-at: expected an ISO 8601 time like 2026-01-31T12:00:00+00:00, got {args.run_at!r}",
                            exit_code=2) from None
    delay = None
    if args.delay:
        from .units import parse_duration

        try:
            delay = parse_duration(args.delay)
        except ValueError as error:
            raise UserError(f"--in: {error}", exit_code=2) from None
    if args.max_attempts is not None and args.max_attempts < 1:
        raise UserError("--max-attempts: expected an integer >= 1", exit_code=2)
    with _connect(config, autocommit=False) as conn:
        _require_schema(conn, config)
        try:
            job_id = enqueue(conn, args.job_type, payload, run_at=run_at, delay=delay, priority=args.priority,
                             queue=args.queue, max_attempts=args.max_attempts, unique_key=args.unique_key,
                             table=table, config=config)
        except (TypeError, ValueError) as error:
            raise UserError(str(error), exit_code=2) from None
        conn.commit()
    print(job_id)
    if not job_id.created:
        print(f"job {job_id} with unique key {args.unique_key!r} is already waiting or running; nothing new enqueued",
              file=sys.stderr)
    return 0


def _read_job_lines(stream, config=None) -> list[dict[str, Any]]:
    from .enqueue import _row
    from .errors import UserError

    jobs = []
    # Bytes, decoded here line by line: invalid UTF-8 is then an error naming its line, not a
    # UnicodeDecodeError from the middle of the loop (or, with surrogateescape, text that only
    # fails in the database). A byte-order mark at the very start is allowed.
    raw = getattr(stream, "buffer", stream)
    for number, line in enumerate(raw, 1):
        if isinstance(line, bytes):
            try:
                line = line.decode("utf-8-sig" if number == 1 else "utf-8")
            except UnicodeDecodeError as error:
                raise UserError(f"stdin line {number}: not valid UTF-8 (byte {error.start + 1} of the line); "
                                "nothing enqueued", exit_code=2) from None
        elif number == 1:
            line = line.removeprefix("\ufeff")
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except RecursionError:
            raise UserError(f"stdin line {number}: JSON nested too deeply; nothing enqueued", exit_code=2) from None
        except ValueError as error:
            raise UserError(f"stdin line {number}: not valid JSON ({error}); nothing enqueued", exit_code=2) from None
        if not isinstance(item, dict) or not isinstance(item.get("job_type"), str):
            raise UserError(f"stdin line {number}: expected an object with a \"job_type\" string; nothing enqueued",
                            exit_code=2)
        if "in" in item:
            item["delay"] = item.pop("in")
        allowed = {"job_type", "payload", "queue", "priority", "run_at", "delay", "max_attempts", "unique_key"}
        unknown = sorted(set(item) - allowed)
        if unknown:
            raise UserError(f"stdin line {number}: unknown field(s) {', '.join(unknown)}; nothing enqueued", exit_code=2)
        try:  # every line is checked before anything is sent, so the error can name the line
            _row(config=config, **item)
        except (TypeError, ValueError) as error:
            raise UserError(f"stdin line {number}: {error}; nothing enqueued", exit_code=2) from None
        jobs.append(item)
    return jobs


def cmd_status(config, args) -> int:
    from .admin import STATUSES, status

    with _connect(config) as conn:
        _require_schema(conn, config)
        data = status(conn, config.database.table)
    if args.json:
        _print_json(data)
        return 0
    print(f"table {data['table']}: " + ", ".join(f"{s} {data['by_status'][s]}" for s in STATUSES))
    if data["by_type"]:
        print()
        print(f"{'job type':<28}" + "".join(f"{s:>11}" for s in STATUSES))
        for job_type, counts in sorted(data["by_type"].items()):
            print(f"{job_type[:27]:<28}" + "".join(f"{counts[s]:>11}" for s in STATUSES))
        print()
        print(f"{'queue':<28}" + "".join(f"{s:>11}" for s in STATUSES))
        for queue, counts in sorted(data["by_queue"].items()):
            print(f"{queue[:27]:<28}" + "".join(f"{counts[s]:>11}" for s in STATUSES))
    oldest = data["oldest_waiting"]
    print()
    if oldest:
        print(f"oldest waiting job: {oldest['job_type']}#{oldest['id']} in queue {oldest['queue']}, "
              f"due {_age(oldest['waiting_seconds'])} ago")
    else:
        print("oldest waiting job: none")
    if data["unhandled_types"]:
        print(f"waiting job types no live runner handles: {', '.join(data['unhandled_types'])}")
    print()
    if not data["runners"]:
        print("runners: none")
    for r in data["runners"]:
        queues = ",".join(r["queues"]) if r["queues"] else "all"
        print(f"runner {r['id']}: {r['busy']}/{r['children']} children busy, queues {queues}, "
              f"heartbeat {_age(r['heartbeat_age'])} ago, version {r['version']}" + (" (STALE: not heard from)" if r.get('stale') else ""))
        gate = (r.get("info") or {}).get("gate")
        if gate and (gate.get("kind") != "static" or gate.get("python") or not gate.get("open", True)):
            print("    " + _gate_line(gate))
    return 0


def _gate_line(gate: dict[str, Any]) -> str:
    """``gate load: CLOSED (machine load: cpu 97% > 85%); cpu 97.0%, memory available 21.3GiB, ...``"""
    from .units import format_size

    names = {"cpu_percent": ("cpu", "{}%"), "loadavg_per_core": ("load average per core", "{}")}
    values = []
    for key, value in (gate.get("values") or {}).items():
        if key == "memory_available" and isinstance(value, int):
            values.append(f"memory available {format_size(value)}")
        else:
            label, shape = names.get(key, (key, "{}"))
            values.append(f"{label} {shape.format(value)}")
    kind = gate.get("kind") or "static"
    if gate.get("python"):
        kind += f" + python {gate['python']}"
    state = "open" if gate.get("open", True) else f"CLOSED ({gate.get('reason')})"
    return f"gate {kind}: {state}" + (f"; {', '.join(values)}" if values else "")


def cmd_jobs(config, args) -> int:
    from .admin import list_jobs

    with _connect(config) as conn:
        _require_schema(conn, config)
        rows = list_jobs(conn, config.database.table, status=args.status, job_type=args.job_type,
                         queue=args.queue, limit=args.limit, before_id=args.before)
    if args.json:
        _print_json(rows)
        return 0
    print(f"{'id':>10}  {'status':<10} {'type':<24} {'queue':<12} {'attempts':>8}  {'run_at':<25} last_error")
    for r in rows:
        error = (r["error_summary"] or "")[:60]
        attempts = f"{r['attempts']}/{r['max_attempts'] or '-'}"
        print(f"{r['id']:>10}  {r['status']:<10} {r['job_type'][:24]:<24} {r['queue'][:12]:<12} {attempts:>8}  "
              f"{r['run_at'].isoformat(timespec='seconds'):<25} {error}")
    return 0


def cmd_show(config, args) -> int:
    from .admin import get_job
    from .errors import UserError

    with _connect(config) as conn:
        _require_schema(conn, config)
        row = get_job(conn, config.database.table, args.id)
    if row is None:
        raise UserError(f"job {args.id} does not exist", exit_code=1)
    if args.json:
        _print_json(row)
        return 0
    for key, value in row.items():
        if key in ("payload", "last_error"):
            continue
        print(f"{key:>13}: {value.isoformat() if isinstance(value, dt.datetime) else value}")
    print(f"{'payload':>13}: {json.dumps(row['payload'], indent=2, ensure_ascii=False)}")
    if row["last_error"]:
        print(f"{'last_error':>13}:")
        print(row["last_error"])
    return 0


_DONE = {"retry": ("queued again", "retried"), "cancel": ("cancelled", "cancelled"),
         "run-now": ("due now", "made due now"), "delete": ("deleted", "deleted"),
         "kill": ("killed", "killed")}
SHOW_IDS_UP_TO = 20  # a filter that changed more jobs prints the count, not every id


def _act(config, args, action: str) -> int:
    """retry/cancel/run-now/delete/kill on ids (each refusal named, exit 1) or on a filter
    (applied in batches; a filter the action cannot apply to is refused with exit 2)."""
    from .admin import FilterError, JobFilter, act, act_on_filter
    from .errors import UserError

    filters = JobFilter(status=args.status, job_type=args.job_type, queue=args.queue)
    if args.ids and filters.active:
        raise UserError(f"{action}: give job IDs or a filter (--type, --status, --queue), not both", exit_code=2)
    if not args.ids and not filters.active:
        raise UserError(f"{action}: give job IDs, or a filter: at least one of --type T, --status S, --queue Q",
                        exit_code=2)
    with _connect(config) as conn:
        _require_schema(conn, config)
        if args.ids:
            result = act(conn, config.database.table, action, args.ids)
        else:
            try:
                result = act_on_filter(conn, config.database.table, action, filters)
            except FilterError as error:
                raise UserError(f"{error}; nothing changed", exit_code=2) from None
    each, summary = _DONE[action]
    if args.json:
        _print_json({"action": action, "changed": result.changed,
                     "refused": {str(k): v for k, v in result.refused.items()}})
    else:
        if args.ids or len(result.changed) <= SHOW_IDS_UP_TO:
            for job_id in result.changed:
                print(f"job {job_id}: {each}")
        where = ""
        if not args.ids:
            where = " matching " + ", ".join(f"{name} {value}" for name, value in
                                             (("type", args.job_type), ("status", args.status),
                                              ("queue", args.queue)) if value is not None)
        count = len(result.changed)
        print(f"{summary} {count} job{'' if count == 1 else 's'}{where}")
    if args.ids:
        for job_id, reason in result.refused.items():
            print(f"jobsupervisor: {reason}", file=sys.stderr)
        return 0 if result.ok else 1
    if result.refused:  # a filter's jobs that changed state between selection and action
        print(f"jobsupervisor: {len(result.refused)} matching job(s) changed state meanwhile and were left alone: "
              + ", ".join(str(i) for i in list(result.refused)[:SHOW_IDS_UP_TO])
              + (" …" if len(result.refused) > SHOW_IDS_UP_TO else ""), file=sys.stderr)
    return 0


def cmd_retry(config, args) -> int:
    return _act(config, args, "retry")


def cmd_cancel(config, args) -> int:
    return _act(config, args, "cancel")


def cmd_run_now(config, args) -> int:
    return _act(config, args, "run-now")


def cmd_delete(config, args) -> int:
    return _act(config, args, "delete")


def cmd_kill(config, args) -> int:
    return _act(config, args, "kill")


def cmd_runners(config, args) -> int:
    from .admin import list_runners, stop_runner
    from .errors import UserError

    if args.action == "list" and args.runner_id:
        raise UserError(f"unexpected argument {args.runner_id!r}: did you mean 'runners stop {args.runner_id}'?",
                        exit_code=2)
    with _connect(config) as conn:
        _require_schema(conn, config)
        if args.action == "stop":
            if not args.runner_id:
                raise UserError("runners stop needs a runner ID (see 'jobsupervisor runners')", exit_code=2)
            try:
                target = stop_runner(conn, config.database.table, args.runner_id)
            except ValueError as error:
                raise UserError(str(error), exit_code=1) from None
            if target is None:
                raise UserError(f"runner {args.runner_id} is not registered (see 'jobsupervisor runners')",
                                exit_code=1)
            stale = [r for r in list_runners(conn, config.database.table) if r["id"] == target and r["stale"]]
            if args.json:
                _print_json({"stopping": target, "stale": bool(stale)})
            else:
                print(f"runner {target}: asked to drain and exit")
            if stale:
                print(f"jobsupervisor: warning: runner {target} has not sent a heartbeat for "
                      f"{_age(stale[0]['heartbeat_age'])}; it may be gone already", file=sys.stderr)
            return 0
        runners = list_runners(conn, config.database.table)
    if args.json:
        _print_json(runners)
        return 0
    if not runners:
        print("no runners")
        return 0
    print(f"{'id':<36} {'host':<20} {'pid':>7} {'version':<9} {'children':>8} {'busy':>5} {'queues':<16} heartbeat")
    for r in runners:
        queues = ",".join(r["queues"]) if r["queues"] else "all"
        beat = _age(r["heartbeat_age"]) + " ago" + (" STALE" if r.get("stale") else "")
        if (r.get("info") or {}).get("stop"):
            beat += " (stopping)"
        print(f"{r['id']:<36} {r['host'][:20]:<20} {r['pid']:>7} {r['version']:<9} {r['children']:>8} "
              f"{r['busy']:>5} {queues[:16]:<16} {beat}")
    return 0


def cmd_schedules(config, args) -> int:
    from .migrate import current_version
    from .queries import queries_for
    from .scheduler import describe_schedules

    last: dict[str, Any] = {}
    now = dt.datetime.now(dt.timezone.utc)
    if config.schedules:
        with _connect(config) as conn:
            if current_version(conn, config.database.table) >= 3:
                rows = conn.execute(queries_for(config.database.table).schedules_list).fetchall()
                last = {name: tick for name, tick, _ in rows}
            now = conn.execute("SELECT now()").fetchone()[0]
    rows = describe_schedules(config.schedules, last, now, args.count)
    if args.json:
        _print_json(rows)
        return 0
    if not rows:
        print("no schedules configured")
        return 0
    for r in rows:
        last_tick = r["last_tick"].isoformat() if r["last_tick"] else "never"
        extras = [f"queue {r['queue']}" if r["queue"] else None,
                  f"priority {r['priority']}" if r.get("priority") is not None else None,
                  f"catch_up {r['catch_up']}"]
        print(f"{r['name']}: '{r['cron']}' ({r['timezone']}) -> {r['job']} {json.dumps(r['payload'])}, "
              + ", ".join(e for e in extras if e) + f"; last tick {last_tick}")
        for run in r["next_runs"]:
            print(f"    next: {run.isoformat()}")
    return 0


def cmd_stop(config, args) -> int:
    from .errors import UserError
    from .pidfile import Pidfile

    if not config.pidfile:
        raise UserError("stop needs 'pidfile' in the configuration", exit_code=2)
    pid = Pidfile(config.pidfile).read_live_pid()
    if pid is None:
        print(f"jobsupervisor: no supervisor is running (pidfile {config.pidfile})", file=sys.stderr)
        return 1
    timeout = args.timeout if args.timeout is not None else config.shutdown_timeout + 15
    os.kill(pid, signal.SIGTERM)
    print(f"asked supervisor {pid} to drain (timeout {timeout:g}s)", file=sys.stderr)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _alive(pid):
            print(f"supervisor {pid} stopped")
            return 0
        time.sleep(0.1)
    print(f"jobsupervisor: supervisor {pid} still running after {timeout:g}s", file=sys.stderr)
    return 1


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie is gone for our purposes
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def cmd_web(config, args) -> int:
    from .web.serve import run

    return run(config, listen=args.listen)


def cmd_config(config, args) -> int:
    import dataclasses

    from .units import mask_dsn

    data = dataclasses.asdict(config)
    if data["database"].get("dsn"):
        data["database"]["dsn"] = mask_dsn(data["database"]["dsn"])
    if data.get("web", {}).get("auth"):
        data["web"]["auth"]["password"] = "***"
    _print_json(data)
    return 0


if __name__ == "__main__":
    sys.exit(main())
