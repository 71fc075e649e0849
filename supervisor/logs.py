"""Structured logs (SPEC §7): one JSON object per line on stderr, written with a single
``write()`` so that lines are never interleaved or split.

Only the supervisor writes to the real stderr: children's stdout and stderr are pipes that
the supervisor reads and re-emits line by line (see ``children/pool.py``) through
:func:`write_line`, so one writer owns the stream and the configured sink sees every record.

Sinks (``logging.format``):

- ``json``: the record as one JSON object per line on stderr.
- ``console``: the same events for humans, coloured when stderr is a terminal (and
  ``NO_COLOR`` is not set).
- ``syslog``: RFC 5424 messages whose MSG is ``@cee:`` followed by the very same JSON object,
  to ``logging.syslog_address``: a socket path (default ``/dev/log``), ``udp://host:port`` or
  ``host:port`` (UDP, RFC 5426: one message per datagram), or ``tcp://host:port`` (RFC 6587
  octet counting: ``LEN SP MESSAGE``). A record that cannot be sent goes to stderr instead:
  logs are never dropped silently.

Secrets never reach a sink: every string field is passed through
:func:`supervisor.units.mask_secrets` (DSN passwords, and every password this process has
connected with), tracebacks and forwarded child lines included.
"""

from __future__ import annotations

import datetime as _dt
import errno
import json
import os
import select
import socket
import sys
import threading
import time
from typing import Any

import structlog

from . import units as _units
from .units import mask_secrets

LEVELS = {"debug": 10, "info": 20, "warning": 30, "error": 40, "critical": 50}
MAX_LINE = 64 * 1024  # one log line never exceeds this; longer fields are cut
SYSLOG_SEVERITY = {"debug": 7, "info": 6, "warning": 4, "warn": 4, "error": 3, "critical": 2, "exception": 3}
SYSLOG_FACILITY = 3  # daemon
SYSLOG_APP_NAME = "jobsupervisor"
MAX_DATAGRAM = 65000  # what one UDP or unix datagram carries at most (RFC 5426: truncation allowed)


class SyslogAddressError(ValueError):
    pass


def parse_syslog_address(address: str | None) -> tuple[str, Any]:
    """``(transport, target)`` for ``logging.syslog_address``: transport is ``unix``, ``udp``
    or ``tcp``; target a path or ``(host, port)``. ``None``/empty: the local ``/dev/log``."""
    text = (address or "").strip()
    if not text:
        return "unix", "/dev/log"
    lowered = text.lower()
    for scheme in ("unix://", "unix:"):
        if lowered.startswith(scheme):
            path = text[len(scheme):]
            if not path:
                raise SyslogAddressError(f"invalid syslog address {address!r}: no socket path")
            return "unix", path
    transport = "udp"
    if lowered.startswith(("tcp://", "udp://")):
        transport, text = lowered[:3], text[6:]
    elif text.startswith(("/", ".")) or "://" in text:
        if "://" in text:
            raise SyslogAddressError(f"invalid syslog address {address!r}: expected a socket path, "
                                     "host:port, udp://host:port or tcp://host:port")
        return "unix", text
    host, sep, port = text.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise SyslogAddressError(f"invalid syslog address {address!r}: expected a socket path, "
                                 "host:port, udp://host:port or tcp://host:port")
    return transport, (host or "127.0.0.1", int(port))


class _FdWriter:
    """A structlog logger that writes each rendered record with one os.write()."""

    def __init__(self, fd: int):
        self.fd = fd

    def msg(self, message: str) -> None:
        write_raw(message.encode("utf-8", "replace"), self.fd)

    log = debug = info = warning = warn = error = critical = exception = fatal = msg


class SyslogSender:
    """Sends RFC 5424 messages to a unix socket, a UDP or a TCP address.

    Streams (TCP, and a unix stream socket) are connected lazily and reconnected after a
    failure; while the receiver is away, records go to ``fallback_fd``, and connecting is
    tried again after 1 s, then less and less often (at most every 30 s), so that a receiver
    that does not answer costs the supervisor's loop at most ``timeout`` now and then.
    """

    RECONNECT_EVERY = 1.0
    RECONNECT_MAX = 30.0

    def __init__(self, address: str | None, fallback_fd: int = 2, timeout: float = 1.0):
        self.fallback_fd = fallback_fd
        try:
            self.transport, self.target = parse_syslog_address(address)
        except SyslogAddressError as error:  # the config checks it; never crash over a log sink
            self.transport, self.target = "none", None
            emit_json("syslog_unavailable", level="error", fd=fallback_fd, error=str(error),
                      hint="logging to stderr instead")
        self.timeout = timeout
        self.hostname = _syslog_token(socket.gethostname(), 255)
        self.sock: socket.socket | None = None
        self.stream = self.transport == "tcp"
        self.next_connect = 0.0
        self.backoff = self.RECONNECT_EVERY
        self.lock = threading.Lock()  # the dashboard logs from several threads: frames never interleave

    def _open(self) -> socket.socket | None:
        if self.sock is not None:
            return self.sock
        if self.transport == "none" or time.monotonic() < self.next_connect:
            return None
        self.next_connect = time.monotonic() + self.backoff
        try:
            if self.transport == "unix":
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
                try:
                    sock.connect(self.target)
                except OSError as error:
                    if error.errno != errno.EPROTOTYPE:
                        sock.close()
                        raise
                    sock.close()  # a stream socket (some syslog daemons): newline-framed
                    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                    sock.settimeout(self.timeout)
                    sock.connect(self.target)
                    self.stream = True
            elif self.transport == "udp":
                host, port = self.target
                family = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)[0][0]
                sock = socket.socket(family, socket.SOCK_DGRAM)
                sock.connect((host, port))
            else:
                sock = socket.create_connection(self.target, timeout=self.timeout)
            sock.settimeout(self.timeout)
        except OSError:
            self.backoff = min(self.backoff * 2, self.RECONNECT_MAX)
            return None
        self.backoff = self.RECONNECT_EVERY
        self.sock = sock
        return sock

    def close(self) -> None:
        if self.sock is not None:
            try:
                self.sock.close()
            except OSError:
                pass
            self.sock = None

    @staticmethod
    def _peer_closed(sock: socket.socket) -> bool:
        """Whether the receiver closed the stream (sending into it would lose the record)."""
        try:
            readable, _, _ = select.select([sock], [], [], 0)
            if not readable:
                return False
            return sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
        except (BlockingIOError, InterruptedError):
            return False
        except (OSError, ValueError):
            return True

    def frame(self, message: bytes) -> bytes:
        if self.transport == "tcp":
            return str(len(message)).encode() + b" " + message  # RFC 6587 octet counting
        if self.stream:
            return message + b"\n"
        return message[:MAX_DATAGRAM]

    def send(self, record_json: str, level: str, event: str, timestamp: str | None = None,
             pid: int | None = None) -> None:
        message = format_syslog(record_json, level, event, self.hostname, timestamp,
                                pid if isinstance(pid, int) else None).encode("utf-8", "replace")
        with self.lock:
            if self._send(message):
                return
        write_raw(record_json.encode("utf-8", "replace"), self.fallback_fd)  # never lose a record silently

    def _send(self, message: bytes) -> bool:
        for attempt in range(2):  # a stream the receiver closed is reopened once, at once
            sock = self._open()
            if sock is None:
                break
            try:
                if self.stream and self._peer_closed(sock):
                    raise ConnectionResetError("syslog receiver closed the connection")
                sock.sendall(self.frame(message))
                return True
            except OSError:
                self.close()
                retry_now = self.stream and attempt == 0
                self.next_connect = 0.0 if retry_now else time.monotonic() + self.RECONNECT_EVERY
        return False

    def msg(self, message: str) -> None:  # structlog logger interface: the rendered JSON
        try:
            record = json.loads(message)
        except ValueError:
            record = {}
        self.send(message, str(record.get("level", "info")), str(record.get("event", "-")), record.get("timestamp"),
                  record.get("pid"))

    log = debug = info = warning = warn = error = critical = exception = fatal = msg


def _syslog_token(text: str, limit: int) -> str:
    """An RFC 5424 header field: printable US-ASCII without spaces, ``-`` when empty."""
    token = "".join(ch for ch in text if 33 <= ord(ch) <= 126)[:limit]
    return token or "-"


def format_syslog(record_json: str, level: str, event: str, hostname: str, timestamp: str | None = None,
                  pid: int | None = None) -> str:
    """``<PRI>1 TIMESTAMP HOST APP PROCID MSGID - @cee:{json}`` (RFC 5424; MSGID is the event)."""
    severity = SYSLOG_SEVERITY.get(level, 6)
    stamp = timestamp if isinstance(timestamp, str) and timestamp else \
        _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="microseconds")
    stamp = _syslog_token(stamp.replace("+00:00", "Z"), 64)
    return (f"<{SYSLOG_FACILITY * 8 + severity}>1 {stamp} {hostname} {SYSLOG_APP_NAME} "
            f"{pid if pid is not None else os.getpid()} {_syslog_token(event, 32)} - @cee:{record_json}")


# --- the configured sink ------------------------------------------------------------------------
class _Sink:
    """Where this process's records go; also used for lines forwarded from children."""

    def __init__(self, fmt: str = "json", fd: int = 2, console: Any = None, syslog: SyslogSender | None = None):
        self.format = fmt
        self.fd = fd
        self.console = console
        self.syslog = syslog


_sink = _Sink()


def write_raw(data: bytes, fd: int = 2) -> None:
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
            select.select([], [fd], [], 1.0)
            continue
        except OSError:
            return  # stderr closed: nothing sensible left to do with a log line
        view = view[written:]


def write_line(data: bytes, fd: int = 2) -> None:
    """Emit one record line that is already rendered as JSON (a child's or the dashboard's,
    forwarded by the supervisor) through the configured sink: as is for ``json``, rendered
    for humans for ``console``, as ``@cee:`` for ``syslog``. Secrets are masked on the way."""
    sink = _sink
    text = data.decode("utf-8", "replace").rstrip("\n")
    if _may_hold_secret(text):
        text = mask_secrets(text)
        data = text.encode("utf-8")
    if sink.format == "json" or fd != sink.fd:
        write_raw(data, fd)
        return
    try:
        record = json.loads(text)
    except ValueError:
        record = None
    if not isinstance(record, dict):
        record = {"timestamp": _dt.datetime.now(_dt.timezone.utc).isoformat(), "level": "info",
                  "event": "child_output", "line": text}
        text = _json_dumps(record)
    if sink.format == "syslog" and sink.syslog is not None:
        sink.syslog.send(text, str(record.get("level", "info")), str(record.get("event", "-")),
                         record.get("timestamp"), record.get("pid"))
    elif sink.format == "console" and sink.console is not None:
        event = dict(record)
        event.setdefault("event", "")
        try:
            rendered = sink.console(None, str(event.get("level", "info")), event)
        except Exception:  # noqa: BLE001 - a strange record is shown raw rather than lost
            rendered = text
        write_raw(rendered.encode("utf-8", "replace"), sink.fd)
    else:
        write_raw(data, fd)


def _may_hold_secret(text: str) -> bool:
    return _units._SECRET_PATTERN is not None or "://" in text or "assword" in text or "ASSWORD" in text


def _mask(value: Any) -> Any:
    if isinstance(value, str):
        return mask_secrets(value) if _may_hold_secret(value) else value
    if isinstance(value, dict):
        return {k: _mask(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_mask(v) for v in value)
    if isinstance(value, BaseException):
        return _mask(f"{type(value).__name__}: {value}")
    return value


def _mask_secrets(logger: Any, method: str, event: dict[str, Any]) -> dict[str, Any]:
    for key, value in event.items():
        if isinstance(value, (str, dict, list, tuple, BaseException)):
            event[key] = _mask(value)
    return event


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


def use_colors(fd: int) -> bool:
    """Colour for the console format: on a terminal, unless NO_COLOR is set (FORCE_COLOR forces it)."""
    if os.environ.get("NO_COLOR"):
        return False
    if os.environ.get("FORCE_COLOR"):
        return True
    try:
        return os.isatty(fd)
    except OSError:
        return False


def configure(fmt: str = "json", level: str = "info", *, syslog_address: str | None = None, fd: int = 2) -> None:
    """Set up structlog for this process. Safe to call again (after a config reload)."""
    global _sink
    shared = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True, key="timestamp"),
        _add_pid,
        structlog.processors.format_exc_info,
        _mask_secrets,
        _truncate,
        _key_order,
    ]
    old = _sink
    if fmt == "console":
        renderer: Any = structlog.dev.ConsoleRenderer(colors=use_colors(fd))
        factory: Any = lambda *args: _FdWriter(fd)  # noqa: E731
        _sink = _Sink("console", fd, console=renderer)
    elif fmt == "syslog":
        renderer = structlog.processors.JSONRenderer(serializer=_json_dumps)
        writer = SyslogSender(syslog_address, fallback_fd=fd)
        factory = lambda *args: writer  # noqa: E731
        _sink = _Sink("syslog", fd, syslog=writer)
    else:
        renderer = structlog.processors.JSONRenderer(serializer=_json_dumps)
        factory = lambda *args: _FdWriter(fd)  # noqa: E731
        _sink = _Sink("json", fd)
    if old.syslog is not None and old.syslog is not _sink.syslog:
        old.syslog.close()
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
        # Only the child's own log records pass through as they are: strict JSON (no NaN,
        # which JSON parsers other than Python's refuse) with our keys. Any other JSON a handler
        # or a library prints is wrapped like any other line, so it cannot break the stream's
        # parsers or pass for one of our records.
        try:
            record = json.loads(stripped, parse_constant=_refuse_constant)
        except (ValueError, RecursionError):
            record = None
        if isinstance(record, dict) and _is_own_record(record, context.get("child_pid", context.get("web_pid"))):
            return stripped
    text = stripped.decode("utf-8", "replace")
    if len(text) > 16 * 1024:
        text = text[: 16 * 1024] + f"… [{len(text) - 16 * 1024} more characters]"
    record = {
        "timestamp": _dt.datetime.now(_dt.timezone.utc).isoformat(),
        "level": "info",
        "event": "child_output",
        **context,
        "line": _mask(text),
    }
    return _json_dumps(record).encode("utf-8")


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _is_own_record(record: dict[str, Any], pid: Any) -> bool:
    """A record rendered by jobsupervisor's logging in that process (see configure())."""
    return (isinstance(record.get("event"), str) and isinstance(record.get("timestamp"), str)
            and record.get("level") in LEVELS and (pid is None or record.get("pid") == pid))


def emit_json(event: str, level: str = "info", fd: int = 2, **fields: Any) -> None:
    """Write one record without structlog (used before logging is configured and by the CLI)."""
    record = {
        "timestamp": _dt.datetime.now(_dt.timezone.utc).isoformat(),
        "level": level,
        "event": event,
        "pid": os.getpid(),
        **{key: _mask(value) for key, value in fields.items()},
    }
    write_raw(_json_dumps(record).encode("utf-8"), fd)


if __name__ == "__main__":  # pragma: no cover - manual check
    configure(sys.argv[1] if len(sys.argv) > 1 else "json")
    get_logger().info("hello", job_id=1)
