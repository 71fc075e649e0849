"""Structured logs (SPEC §7): one JSON object per line on stderr, written with a single
``write()`` so that lines are never interleaved or split.

Only the supervisor writes to the real stderr: children's stdout and stderr are pipes that
the supervisor reads and re-emits line by line (see ``children/pool.py``), so one writer
owns the stream. ``console`` renders the same events for humans; ``syslog`` sends them as
``@cee:`` JSON.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import socket
import sys
from typing import Any

import structlog

LEVELS = {"debug": 10, "info": 20, "warning": 30, "error": 40, "critical": 50}
MAX_LINE = 64 * 1024  # one log line never exceeds this; longer fields are cut


class _FdWriter:
    """A structlog logger that writes each rendered record with one os.write()."""

    def __init__(self, fd: int):
        self.fd = fd

    def msg(self, message: str) -> None:
        write_line(message.encode("utf-8", "replace"), self.fd)

    log = debug = info = warning = warn = error = critical = exception = fatal = msg


class _SyslogWriter:
    """RFC 5424 records with the JSON object behind ``@cee:``, to /dev/log or host:port."""

    def __init__(self, address: str | None):
        self.hostname = socket.gethostname()
        if address and ":" in address and not address.startswith("/"):
            host, _, port = address.rpartition(":")
            self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            self.target: Any = (host or "127.0.0.1", int(port))
        else:
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            self.target = address or "/dev/log"

    def msg(self, message: str) -> None:
        severity = 6
        try:
            level = json.loads(message).get("level", "info")
            severity = {"debug": 7, "info": 6, "warning": 4, "error": 3, "critical": 2}.get(level, 6)
        except ValueError:
            pass
        stamp = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="milliseconds")
        record = f"<{8 + severity}>1 {stamp} {self.hostname} jobsupervisor {os.getpid()} - - @cee:{message}"
        try:
            self.sock.sendto(record.encode("utf-8", "replace")[:65000], self.target)
        except OSError:
            write_line(message.encode("utf-8", "replace"), 2)  # never lose a record silently

    log = debug = info = warning = warn = error = critical = exception = fatal = msg


def write_line(data: bytes, fd: int = 2) -> None:
    """Write one line with as few write() calls as the kernel allows (normally one)."""
    if not data.endswith(b"\n"):
        data += b"\n"
    view = memoryview(data)
    while view:
        try:
            written = os.write(fd, view)
        except InterruptedError:
            continue
        except BlockingIOError:
            import select

            select.select([], [fd], [], 1.0)
            continue
        except OSError:
            return  # stderr closed: nothing sensible left to do with a log line
        view = view[written:]


def _add_pid(logger: Any, method: str, event: dict[str, Any]) -> dict[str, Any]:
    event.setdefault("pid", os.getpid())
    return event


def _truncate(logger: Any, method: str, event: dict[str, Any]) -> dict[str, Any]:
    for key, value in event.items():
        if isinstance(value, str) and len(value) > 16 * 1024:
            event[key] = value[: 16 * 1024] + f"… [{len(value) - 16 * 1024} more characters]"
    return event


def _key_order(logger: Any, method: str, event: dict[str, Any]) -> dict[str, Any]:
    """timestamp, level, event and pid first: what a human scanning the raw stream looks for."""
    head = {key: event.pop(key) for key in ("timestamp", "level", "event", "pid") if key in event}
    head.update(event)
    return head


def _json_dumps(obj: Any, **kwargs: Any) -> str:
    return json.dumps(obj, default=str, ensure_ascii=False, separators=(",", ":"))


def configure(fmt: str = "json", level: str = "info", *, syslog_address: str | None = None, fd: int = 2) -> None:
    """Set up structlog for this process. Safe to call again (after a config reload)."""
    shared = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True, key="timestamp"),
        _add_pid,
        _truncate,
        structlog.processors.format_exc_info,
        _key_order,
    ]
    if fmt == "console":
        colors = False
        try:
            colors = os.isatty(fd)
        except OSError:
            pass
        renderer: Any = structlog.dev.ConsoleRenderer(colors=colors)
        factory: Any = lambda *args: _FdWriter(fd)  # noqa: E731
    elif fmt == "syslog":
        renderer = structlog.processors.JSONRenderer(serializer=_json_dumps)
        writer = _SyslogWriter(syslog_address)
        factory = lambda *args: writer  # noqa: E731
    else:
        renderer = structlog.processors.JSONRenderer(serializer=_json_dumps)
        factory = lambda *args: _FdWriter(fd)  # noqa: E731
    structlog.configure(
        processors=[*shared, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(LEVELS.get(level, 20)),
        logger_factory=factory,
        cache_logger_on_first_use=False,
    )


def get_logger(**context: Any) -> Any:
    return structlog.get_logger().bind(**context) if context else structlog.get_logger()


def wrap_foreign_line(line: bytes, **context: Any) -> bytes:
    """A line a child printed: pass JSON objects through, wrap anything else as child_output."""
    stripped = line.strip()
    if stripped.startswith(b"{") and stripped.endswith(b"}") and len(stripped) <= MAX_LINE:
        try:
            json.loads(stripped)
            return stripped
        except ValueError:
            pass
    text = stripped.decode("utf-8", "replace")
    if len(text) > 16 * 1024:
        text = text[: 16 * 1024] + f"… [{len(text) - 16 * 1024} more characters]"
    record = {
        "timestamp": _dt.datetime.now(_dt.timezone.utc).isoformat(),
        "level": "info",
        "event": "child_output",
        **context,
        "line": text,
    }
    return _json_dumps(record).encode("utf-8")


def emit_json(event: str, level: str = "info", fd: int = 2, **fields: Any) -> None:
    """Write one record without structlog (used before logging is configured and by the CLI)."""
    record = {
        "timestamp": _dt.datetime.now(_dt.timezone.utc).isoformat(),
        "level": level,
        "event": event,
        "pid": os.getpid(),
        **fields,
    }
    write_line(_json_dumps(record).encode("utf-8"), fd)


if __name__ == "__main__":  # pragma: no cover - manual check
    configure(sys.argv[1] if len(sys.argv) > 1 else "json")
    get_logger().info("hello", job_id=1)
