"""Serve the dashboard with waitress: ``jobsupervisor web`` and the supervisor's managed child.

``python -m supervisor.web.serve -c config.yaml [--listen HOST:PORT] [--parent-pid PID]``

* The address is ``--listen``, else ``web.listen``, else ``127.0.0.1:8080``.
* The database is ``$JOBSUPERVISOR_WEB_DSN`` when set (the supervisor passes its resolved DSN
  this way, never on the command line where ``ps`` shows it), else the config's.
* ``--parent-pid PID`` (or ``$JOBSUPERVISOR_WEB_PARENT_PID``): the kernel sends SIGTERM to this
  process when its parent dies (``PR_SET_PDEATHSIG``), and it exits at once if the parent is
  already gone: a dashboard started by a supervisor never outlives it.
* SIGTERM and SIGINT stop it: it closes the listening socket and exits 0. Started with a parent
  pid (by a supervisor), it ignores SIGINT and SIGHUP: the terminal's Ctrl-C reaches the whole
  process group, and only the supervisor decides when its dashboard stops.
* Logs are JSON lines on stderr like the supervisor's: ``web_started``, ``web_stopped``,
  ``web_error`` (an exception in a request, with its traceback in one record).
"""

from __future__ import annotations

import argparse
import ctypes
import logging
import os
import re
import signal
import sys
import traceback
from typing import Sequence

ENV_PARENT_PID = "JOBSUPERVISOR_WEB_PARENT_PID"
ENV_DSN = "JOBSUPERVISOR_WEB_DSN"
DEFAULT_LISTEN = "127.0.0.1:8080"
PR_SET_PDEATHSIG = 1


def die_with_parent(parent_pid: int) -> None:
    """Ask the kernel for SIGTERM when our parent dies; exit now if it already has."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        pass
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        os._exit(1)


class _JsonLogHandler(logging.Handler):
    """Waitress and Flask log through ``logging``: keep stderr one JSON object per line."""

    def emit(self, record: logging.LogRecord) -> None:
        from ..logs import emit_json

        try:
            fields = {"logger": record.name, "message": record.getMessage()}
            if record.exc_info:
                fields["error"] = "".join(traceback.format_exception(*record.exc_info)).rstrip()
            level = "error" if record.levelno >= logging.ERROR else "warning" if record.levelno >= logging.WARNING \
                else "info"
            emit_json("web_error" if record.exc_info else "web_log", level=level, **fields)
        except Exception:  # noqa: BLE001 - logging must never take the server down
            self.handleError(record)


_LISTEN = re.compile(r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]*):(\d{1,5})")


def parse_listen(text: str) -> tuple[str, int]:
    """``host:port`` (``:8080`` is every interface) as waitress wants it; ValueError if malformed."""
    match = _LISTEN.fullmatch(text.strip())
    if not match or int(match.group(2)) > 65535:
        raise ValueError(f"expected HOST:PORT like 127.0.0.1:8080, got {text!r}")
    return match.group(1).strip("[]") or "0.0.0.0", int(match.group(2))


def serve(config, dsn: str, *, listen: str | None = None, threads: int = 8, managed: bool = False) -> int:
    """Run the dashboard for ``config`` on ``listen`` (default ``web.listen``) until SIGTERM/SIGINT.

    ``managed``: started by a supervisor, which alone decides when it stops (SIGTERM); the
    terminal's Ctrl-C and SIGHUP, sent to the whole process group, are ignored.
    """
    from waitress.server import create_server

    from ..logs import emit_json
    from . import create_app

    text = listen or config.web.listen or DEFAULT_LISTEN
    host, port = parse_listen(text)
    app = create_app(config, dsn)
    server = create_server(app, host=host, port=port, threads=threads, ident="jobsupervisor",
                           clear_untrusted_proxy_headers=True)
    shown_host = server.effective_host if isinstance(server.effective_host, str) else host
    url = f"http://{'[' + shown_host + ']' if ':' in shown_host else shown_host}:{server.effective_port}/"
    emit_json("web_started", listen=f"{shown_host}:{server.effective_port}", url=url,
              table=config.database.table, read_only=config.web.read_only,
              auth="basic" if config.web.auth else "none")
    if app.extensions["jobsupervisor"].handler_error:
        emit_json("web_handlers_missing", level="warning", error=app.extensions["jobsupervisor"].handler_error)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    signal.signal(signal.SIGINT, signal.SIG_IGN if managed else signal.default_int_handler)
    if managed:
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        server.run()
    except KeyboardInterrupt:
        pass
    finally:
        server.close()
        app.extensions["jobsupervisor"].pool.close()
    emit_json("web_stopped")
    return 0


def _title(text: str) -> None:
    try:
        import setproctitle

        setproctitle.setproctitle(f"jobsupervisor: {text}")
    except ImportError:
        pass


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m supervisor.web.serve", description="Serve the dashboard.")
    parser.add_argument("-c", "--config", metavar="FILE", default=None,
                        help="configuration file (default: $JOBSUPERVISOR_CONFIG, else built-in defaults)")
    parser.add_argument("--listen", metavar="HOST:PORT", default=None,
                        help=f"address (default: web.listen, else {DEFAULT_LISTEN})")
    parser.add_argument("--parent-pid", type=int, default=None, metavar="PID",
                        help=f"exit when this parent process dies (also ${ENV_PARENT_PID})")
    return parser


def run(config, *, listen: str | None = None, parent_pid: int | None = None) -> int:
    """Everything ``main`` and ``jobsupervisor web`` share once the config is loaded."""
    from .. import logs
    from ..errors import UserError

    if parent_pid is None and os.environ.get(ENV_PARENT_PID):
        try:
            parent_pid = int(os.environ[ENV_PARENT_PID])
        except ValueError:
            raise UserError(f"${ENV_PARENT_PID}: expected a process id, got {os.environ[ENV_PARENT_PID]!r}") from None
    if parent_pid is not None:
        die_with_parent(parent_pid)
    if listen is not None:
        try:
            parse_listen(listen)
        except ValueError:
            raise UserError(f"--listen: expected HOST:PORT like 127.0.0.1:8080, got {listen!r}") from None
    logs.configure(config.logging.format, config.logging.level, syslog_address=config.logging.syslog_address)
    handler = _JsonLogHandler()
    for name in ("waitress", "flask.app", "supervisor.web.app"):
        log = logging.getLogger(name)
        log.handlers[:] = [handler]
        log.setLevel(logging.WARNING)
        log.propagate = False
    _title(f"web [{os.path.basename(config.path or 'defaults')}]")
    dsn = os.environ.get(ENV_DSN)
    owns_embedded = False
    if not dsn:
        from ..db import resolve_dsn

        dsn = resolve_dsn(config)
        owns_embedded = not config.database.dsn
    try:
        return serve(config, dsn, listen=listen, managed=parent_pid is not None)
    except OSError as error:
        raise UserError(f"cannot listen on {listen or config.web.listen or DEFAULT_LISTEN}: "
                        f"{error.strerror or error}", exit_code=1) from None
    finally:
        if owns_embedded:
            from ..embedded import release

            release(config.database.embedded_dir)


def main(argv: Sequence[str] | None = None) -> int:
    from ..config import load_config
    from ..errors import UserError

    args = build_parser().parse_args(argv)
    try:
        config = load_config(args.config)
        return run(config, listen=args.listen, parent_pid=args.parent_pid)
    except UserError as error:
        print(f"jobsupervisor web: {error}", file=sys.stderr)
        return error.exit_code


if __name__ == "__main__":
    sys.exit(main())
