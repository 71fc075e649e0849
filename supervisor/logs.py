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

Hot records (``job_started``, ``job_succeeded``: two per job) go through :func:`emit_many` /
:func:`emit` instead of a structlog logger: the same bytes as the configured structlog pipeline
would produce for ``get_logger().<level>(event, **fields)``, at a fraction of the cost, and a
whole batch in one ``write()`` for the ``json`` sink (see "fast path" below).
"""

from __future__ import annotations

import contextvars
import datetime as _dt
import errno
import json
import os
import select
import socket
import sys
import threading
import time
from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple

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


# Writers in this process take turns: a batch that the kernel takes in several pieces (a pipe
# that is full, a non-blocking fd) is never split by another thread's line. Reentrant, so that
# a signal handler that logs cannot deadlock; re-created in a forked child.
_write_lock = threading.RLock()


def write_raw(data: bytes, fd: int = 2) -> None:
    """Write one line (or a batch of lines) with as few write() calls as the kernel allows
    (normally one): partial writes are continued, EINTR retried, EAGAIN waited out; a closed
    fd drops the data."""
    if not data.endswith(b"\n"):
        data += b"\n"
    with _write_lock:
        try:
            written = os.write(fd, data)
        except (InterruptedError, BlockingIOError):
            written = 0
        except OSError:
            return  # stderr closed: nothing sensible left to do with a log line
        if written == len(data):  # what nearly always happens
            return
        view = memoryview(data)[written:]
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


# What json.dumps(obj, default=str, ensure_ascii=False, separators=(",", ":")) builds on every
# call, built once (encode() keeps no state between calls: safe from several threads).
_ENCODER = json.JSONEncoder(default=str, ensure_ascii=False, separators=(",", ":"))


def _json_dumps(obj: Any, **kwargs: Any) -> str:
    return _ENCODER.encode(obj)


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
    processors = [*shared, renderer]
    min_level = LEVELS.get(level, 20)
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(min_level),
        logger_factory=factory,
        cache_logger_on_first_use=False,
    )
    global _fast, _pid
    _pid = os.getpid()
    _heads.clear()
    _job_heads.clear()
    _fast = _FastPath(_sink, processors, factory(), min_level)


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


# --- fast path for hot records --------------------------------------------------------------------
# get_logger().info(...) spends most of its time in structlog's machinery (lazy proxy, bind, nine
# processors, json.dumps building an encoder; bench/logs_fast.py measures it). The supervisor
# logs two records per job, so the
# hot ones are rendered here instead: the same dict in the same key order, the same timestamp
# format, the same masking, truncation and serializer, the same sink. A record that needs any of
# the pipeline's transformations (a secret to mask, a field to cut, an exception to format, a
# reserved key, bound contextvars) is run through the configured processor chain itself, so the
# output is the chain's output in every case; the fast rendering only covers the records for
# which the chain would change nothing but add timestamp, level, event and pid in front.

# Method name -> (the name structlog's filtering logger passes to the processors, its level).
_METHODS: dict[str, tuple[str, int]] = {
    "debug": ("debug", 10), "info": ("info", 20), "msg": ("info", 20), "warning": ("warning", 30),
    "warn": ("warning", 30), "error": ("error", 40), "exception": ("error", 40),
    "critical": ("critical", 50), "fatal": ("critical", 50),
}
# Keys whose presence changes what the chain does with a record (overwritten, kept in front, formatted).
_RESERVED = frozenset({"timestamp", "level", "event", "pid", "exc_info"})
_CUT = 16 * 1024  # _truncate's limit


class _NeedsChain(Exception):
    """The fast rendering met a value the chain would change (an exception object)."""


def _fast_default(value: Any) -> Any:
    if isinstance(value, BaseException):  # _mask_secrets renders these as "Type: message"
        raise _NeedsChain
    return str(value)  # what _json_dumps does with anything else


_FAST_ENCODER = json.JSONEncoder(default=_fast_default, ensure_ascii=False, separators=(",", ":"))
try:  # json.dumps() builds this C encoder for every call; it keeps no state between calls
    # (markers=None: no check for circular references, which _mask_secrets' recursion hits first).
    from json.encoder import c_encode_basestring as _c_string
    from json.encoder import c_make_encoder as _c_make_encoder

    _c_encode = _c_make_encoder(None, _fast_default, _c_string, None, ":", ",", False, False, True) \
        if _c_make_encoder is not None and _c_string is not None else None
except ImportError:  # pragma: no cover - a Python without the _json accelerator
    _c_encode = None


def _fast_encode(fields: dict[str, Any]) -> str:
    if _c_encode is not None:
        return "".join(_c_encode(fields, 0))
    return _FAST_ENCODER.encode(fields)  # pragma: no cover


class _FastPath:
    """What configure() set up, as emit_many() needs it."""

    __slots__ = ("format", "fd", "processors", "chain", "logger", "min_level", "syslog")

    def __init__(self, sink: _Sink, processors: list[Any], logger: Any, min_level: int):
        self.format = sink.format
        self.fd = sink.fd
        self.syslog = sink.syslog
        self.processors = processors  # the very list given to structlog.configure()
        self.chain = list(processors)  # what it held (structlog.testing.capture_logs edits it in place)
        self.logger = logger  # what the chain's processors are called with
        self.min_level = min_level


_fast: _FastPath | None = None
_pid = os.getpid()  # _add_pid's value; refreshed by configure() and in a forked child


def _after_fork_in_child() -> None:
    global _pid, _write_lock
    _pid = os.getpid()
    _heads.clear()
    _job_heads.clear()
    _write_lock = threading.RLock()  # another thread may have held it at fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)

# TimeStamper(fmt="iso", utc=True): datetime.now(timezone.utc).isoformat().replace("+00:00", "Z"),
# i.e. "2026-01-02T03:04:05.123456Z", and "2026-01-02T03:04:05Z" when the microseconds are 0.
# Both read the system clock and floor it to the microsecond; the date and time part is
# formatted once per second.
_time_ns = time.time_ns
_second: tuple[int, str] = (-1, "")  # (unix second, its "YYYY-MM-DDTHH:MM:SS"): one object, swapped whole


def _timestamp() -> str:
    global _second
    micros = _time_ns() // 1000
    cached = _second
    if cached[0] != micros // 1_000_000:
        seconds = micros // 1_000_000
        stamp = _dt.datetime.fromtimestamp(seconds, _dt.timezone.utc).isoformat()
        cached = _second = (seconds, stamp[:-6] if stamp.endswith("+00:00") else stamp)
    micros %= 1_000_000
    return cached[1] + "." + str(micros + 1_000_000)[1:] + "Z" if micros else cached[1] + "Z"


# Remembered passwords that JSON writes as they are (no '"', '\' or control characters): a value
# holding one shows it verbatim in the rendered line, so searching the line finds it.
_secrets_checked: tuple[Any, bool] = (None, True)  # (units._SECRET_PATTERN, all of them verbatim)


def _line_may_hold_secret(line: str) -> bool:
    """Whether _mask_secrets could change any string of the record rendered as *line*. Never
    False when it could (a value shows verbatim in the line, see above); True now and then
    when it could not (a key, a non-string value): the chain then masks, as always."""
    global _secrets_checked
    if "://" in line or "assword" in line or "ASSWORD" in line:
        return True
    pattern = _units._SECRET_PATTERN
    if pattern is None:
        return False
    checked = _secrets_checked
    if checked[0] is not pattern:
        verbatim = all('"' not in secret and "\\" not in secret and all(ord(ch) >= 0x20 for ch in secret)
                       for secret in list(_units._SECRETS))
        checked = _secrets_checked = (pattern, verbatim)
    return not checked[1] or pattern.search(line) is not None


# (level name, event) -> '","level":"info","event":"job_started","pid":1234': what follows the
# timestamp in every such line. Emptied by configure() and in a forked child (the pid).
_heads: dict[tuple[str, str], str] = {}


def _fast_line(timestamp: str, name: str, event: Any, fields: Mapping[str, Any]) -> str | None:
    """The record as the chain would render it to JSON, or None when the chain must do it."""
    if type(event) is not str or not _RESERVED.isdisjoint(fields):
        return None
    head = _heads.get((name, event))
    if head is None:
        if len(_heads) >= 512:  # events are a fixed vocabulary; never grow without bound anyway
            _heads.clear()
        head = _heads[name, event] = f'","level":{_json_dumps(name)},"event":{_json_dumps(event)},"pid":{_pid}'
    if not fields:
        line = '{"timestamp":"' + timestamp + head + "}"
    else:
        try:
            body = _fast_encode(fields if type(fields) is dict else dict(fields))
        except _NeedsChain:
            return None
        line = '{"timestamp":"' + timestamp + head + "," + body[1:]
    if len(line) > _CUT or _line_may_hold_secret(line):  # a long value may need cutting
        return None
    return line


class JobFields(NamedTuple):
    """The context of a per-job record (job_started, job_succeeded) as emit_many takes it on
    the supervisor's hot path: the same record as the dict of these keys (duration_ms left
    out when None), rendered from a head cached per (level, event, job type, queue) instead of
    encoding a dict for every line."""

    job_id: int
    job_type: str
    queue: str
    attempt: int
    child_pid: int
    duration_ms: float | None = None

    def as_dict(self) -> dict[str, Any]:
        fields = {"job_id": self.job_id, "job_type": self.job_type, "queue": self.queue, "attempt": self.attempt}
        if self.duration_ms is not None:
            fields["duration_ms"] = self.duration_ms
        fields["child_pid"] = self.child_pid
        return fields


# (level name, event, job type, queue) -> (head up to "job_id":, from job_type to "attempt":),
# or None when such records must take the chain (a long or secret-looking type or queue).
_job_heads: dict[tuple[str, str, str, str], tuple[str, str] | None] = {}


def _job_line(timestamp: str, name: str, event: str, job: JobFields) -> str | None:
    """_fast_line for a JobFields record, or None when the chain must render it."""
    key = (name, event, job.job_type, job.queue)
    parts = _job_heads.get(key, False)
    if parts is False:
        if len(_job_heads) >= 4096:
            _job_heads.clear()
        parts = None
        if type(job.job_type) is str and type(job.queue) is str and type(event) is str:
            head = f'","level":{_json_dumps(name)},"event":{_json_dumps(event)},"pid":{_pid},"job_id":'
            middle = f',"job_type":{_json_dumps(job.job_type)},"queue":{_json_dumps(job.queue)},"attempt":'
            # Only strings are masked, and only these are strings besides the timestamp: a
            # type or queue that is cut or could hold a secret sends the record to the chain.
            sample = '{"timestamp":"' + head + "0" + middle + '0,"child_pid":0}'
            if len(sample) < _CUT // 2 and "://" not in sample and "assword" not in sample and "ASSWORD" not in sample:
                parts = (head, middle)
        _job_heads[key] = parts
    if parts is None:
        return None
    job_id, attempt, child_pid, duration = job.job_id, job.attempt, job.child_pid, job.duration_ms
    if type(job_id) is not int or type(attempt) is not int or type(child_pid) is not int:
        return None
    if duration is None:
        tail = ',"child_pid":' + str(child_pid) + "}"
    elif type(duration) is float and duration - duration == 0.0:  # finite: repr() is its JSON
        tail = ',"duration_ms":' + repr(duration) + ',"child_pid":' + str(child_pid) + "}"
    else:
        return None
    line = '{"timestamp":"' + timestamp + parts[0] + str(job_id) + parts[1] + str(attempt) + tail
    if _units._SECRET_PATTERN is not None and _line_may_hold_secret(line):
        return None
    return line


def _contextvars_bound() -> bool:
    """Whether merge_contextvars would add anything (structlog.contextvars.bind_contextvars)."""
    for var in contextvars.copy_context():  # usually one or two (decimal's): cheap
        if var.name.startswith("structlog_") and var.get() is not Ellipsis:
            return True
    return False


def _run_chain(fast: _FastPath, method: str, event: Any, fields: Mapping[str, Any]) -> Any:
    """What structlog's BoundLoggerBase does for get_logger().<method>(event, **fields): the
    chain's output, or None when a processor dropped the record."""
    if "event" in fields:
        raise TypeError("got multiple values for argument 'event'")  # as log.info(event, event=...) does
    record: Any = dict(fields)
    if event is not None:
        record["event"] = event
    try:
        for processor in fast.chain:
            record = processor(fast.logger, method, record)
    except structlog.DropEvent:  # pragma: no cover - no processor of ours drops records
        return None
    return record


def _in_charge(fast: _FastPath) -> bool:
    """Whether structlog is still configured as configure() left it (tests reconfigure it)."""
    config = getattr(getattr(structlog, "_config", None), "_CONFIG", None)
    if config is not None:
        processors = getattr(config, "default_processors", None)
    else:  # pragma: no cover - if structlog moves it
        processors = structlog.get_config()["processors"]
    return processors is fast.processors and processors == fast.chain


def emit_many(records: Iterable[tuple[str, str, Mapping[str, Any]]]) -> None:
    """Log ``(level, event, fields)`` records: exactly what ``get_logger().<level>(event, **fields)``
    would log for each, in order, for the sink configure() set up (records below the configured
    level are dropped), but several times cheaper, and for the ``json`` sink all lines in one
    ``write()`` (continued if the kernel takes only part of it).

    *level* is a method name of the structlog logger (``debug``, ``info``, ``warning``,
    ``error``, ``critical``, and the aliases ``warn``, ``fatal``, ``msg``, ``exception``); an
    unknown one raises ValueError. *fields* is a mapping with string keys; an ``event`` key
    raises TypeError, as it does with structlog. Records already rendered when one raises are
    still written.

    ``console`` and ``syslog`` render each record with the very renderer and sender structlog
    uses (ConsoleRenderer; SyslogSender, one message per record); console lines are written
    together like json lines. Before configure(), or after someone else reconfigured structlog,
    each record simply goes through structlog."""
    fast = _fast
    if fast is None or not _in_charge(fast):
        logger = structlog.get_logger()
        for level, event, fields in records:
            if level not in _METHODS:
                raise ValueError(f"unknown log level {level!r}")
            getattr(logger, level)(event, **(fields.as_dict() if type(fields) is JobFields else fields))
        return
    min_level = fast.min_level
    chain_only = fast.format == "console" or _contextvars_bound()
    sender = fast.syslog if fast.format == "syslog" else None
    lines: list[str] = []
    timestamp = ""  # one for the batch: its records are logged together, in one write
    try:
        for level, event, fields in records:
            try:
                name, number = _METHODS[level]
            except (KeyError, TypeError):
                raise ValueError(f"unknown log level {level!r}") from None
            if number < min_level:
                continue
            if type(fields) is JobFields:
                if not chain_only and level != "exception":
                    timestamp = timestamp or _timestamp()
                    line = _job_line(timestamp, name, event, fields)
                    if line is not None:
                        if sender is None:
                            lines.append(line)
                        else:
                            sender.send(line, name, event, timestamp, _pid)
                        continue
                fields = fields.as_dict()
            if level == "exception":  # structlog: kw.setdefault("exc_info", True), then error()
                fields = dict(fields)
                fields.setdefault("exc_info", True)
            if not chain_only:
                timestamp = timestamp or _timestamp()
                line = _fast_line(timestamp, name, event, fields)
                if line is not None:
                    if sender is None:
                        lines.append(line)
                    else:  # what SyslogSender.msg() would read back from the line
                        sender.send(line, name, event, timestamp, _pid)
                    continue
            rendered = _run_chain(fast, name, event, fields)
            timestamp = ""  # the chain stamped it later: the lines after it take a new stamp
            if rendered is None:
                continue
            if sender is None:
                lines.append(rendered)
            else:
                sender.msg(rendered)  # what structlog calls with the chain's output
    finally:
        if lines:
            write_raw(_join_lines(lines), fast.fd)


def _join_lines(lines: list[str]) -> bytes:
    """Each line as _FdWriter writes it: UTF-8 (errors replaced), a newline added unless present."""
    if len(lines) == 1:
        return lines[0].encode("utf-8", "replace")  # write_raw adds the newline
    return "".join(line if line.endswith("\n") else line + "\n" for line in lines).encode("utf-8", "replace")


def emit(level: str, event: str, /, **fields: Any) -> None:
    """One record: :func:`emit_many` for ``get_logger().<level>(event, **fields)``, with less
    overhead for the common case (``json`` or ``syslog``, nothing to mask or cut)."""
    fast = _fast
    method = _METHODS.get(level)
    if (fast is not None and method is not None and level != "exception" and fast.format != "console"
            and _in_charge(fast) and not _contextvars_bound()):
        if method[1] < fast.min_level:
            return
        timestamp = _timestamp()
        line = _fast_line(timestamp, method[0], event, fields)
        if line is not None:
            if fast.syslog is None:
                write_raw(line.encode("utf-8", "replace"), fast.fd)
            else:
                fast.syslog.send(line, method[0], event, timestamp, _pid)
            return
    emit_many(((level, event, fields),))


if __name__ == "__main__":  # pragma: no cover - manual check
    configure(sys.argv[1] if len(sys.argv) > 1 else "json")
    get_logger().info("hello", job_id=1)
