"""The fast path for hot log records (logs.emit_many / logs.emit) writes exactly what the
configured structlog pipeline writes for ``get_logger().<level>(event, **fields)``: for every
sink, with secrets, truncation, odd values, reserved keys, contextvars, level filtering, and
the clock frozen so that both render the same timestamp. No database needed."""

from __future__ import annotations

import datetime as dt
import decimal
import fcntl
import os
import re
import socket
import sys
import threading
import time
import types
import uuid
from pathlib import Path
from typing import Any, Callable

import pytest
import structlog

from supervisor import logs, units

UTC = dt.timezone.utc
TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{6})?Z$")
SECRET_DSN = "postgresql://app:hunter2222@db.example:5432/jobs"


@pytest.fixture(autouse=True)
def _restore_logging(monkeypatch):
    """configure() changes process-wide state: put it back, and start with no remembered secrets."""
    saved = structlog.get_config()
    monkeypatch.setattr(units, "_SECRETS", set())
    monkeypatch.setattr(units, "_SECRET_PATTERN", None)
    monkeypatch.delenv("FORCE_COLOR", raising=False)
    monkeypatch.setenv("NO_COLOR", "1")
    sink, fast = logs._sink, logs._fast
    yield
    structlog.contextvars.clear_contextvars()
    if logs._sink.syslog is not None and logs._sink.syslog is not sink.syslog:
        logs._sink.syslog.close()
    structlog.configure(**saved)
    logs._sink, logs._fast = sink, fast


def freeze(monkeypatch, ns: int) -> None:
    """Both clocks at *ns* nanoseconds since the epoch: structlog's TimeStamper
    (datetime.datetime.now) and the fast path's (logs._time_ns)."""
    moment = dt.datetime(1970, 1, 1, tzinfo=UTC) + dt.timedelta(microseconds=ns // 1000)

    class FrozenDatetime(dt.datetime):
        @classmethod
        def now(cls, tz=None):
            return moment.astimezone(tz) if tz is not None else moment.replace(tzinfo=None)

    frozen = types.SimpleNamespace(datetime=FrozenDatetime, timezone=dt.timezone)
    monkeypatch.setattr(structlog.processors, "datetime", frozen)
    monkeypatch.setattr(logs, "_time_ns", lambda: ns)


NS_WITH_MICROS = 1_764_000_123_456_789_123  # 2025-11-24T16:02:03.456789Z
NS_WHOLE_SECOND = 1_764_000_124_000_000_456  # microseconds 0: "...:04Z", no fraction


class Pipe:
    def __init__(self) -> None:
        self.r, self.w = os.pipe()
        fcntl.fcntl(self.r, fcntl.F_SETFL, fcntl.fcntl(self.r, fcntl.F_GETFL) | os.O_NONBLOCK)

    def read(self) -> bytes:
        out = b""
        while True:
            try:
                chunk = os.read(self.r, 1 << 20)
            except BlockingIOError:
                return out
            if not chunk:
                return out
            out += chunk

    def close(self) -> None:
        for fd in (self.r, self.w):
            try:
                os.close(fd)
            except OSError:
                pass


@pytest.fixture
def pipe():
    p = Pipe()
    yield p
    p.close()


def via_structlog(records) -> None:
    log = logs.get_logger()
    for level, event, fields in records:
        getattr(log, level)(event, **fields)


def both(pipe: Pipe, records, emitter: Callable[[Any], None] = logs.emit_many) -> tuple[bytes, bytes]:
    via_structlog(records)
    expected = pipe.read()
    emitter(records)
    return expected, pipe.read()


class Weird:
    def __str__(self) -> str:
        return "weird object"


def sample_records() -> list[tuple[str, str, dict[str, Any]]]:
    started = dict(job_id=123, job_type="email.send", queue="default", attempt=1, child_pid=4242)
    return [
        ("info", "job_started", started),
        ("info", "job_succeeded", dict(started, duration_ms=12.5, runner="python")),
        ("info", "tick", {}),
        ("warning", "db_error", {"dsn": SECRET_DSN, "detail": "password=s3cr3tpw host=x", "n": 1}),
        ("warning", "connect to postgres://u:inevent99@h/d failed", {"attempt": 2}),
        ("info", "nested", {"cfg": {"dsn": "postgres://u:nestedpw@h/d", "ok": [1, "x://a:listpw@b", ("t", 2)]}}),
        ("error", "big", {"blob": "x" * 20 * 1024, "after": 1}),
        ("error", "big_secret", {"blob": "a" * (16 * 1024 - 12) + SECRET_DSN + "b" * 100}),
        ("info", "text", {"s": 'héllo\n"quoted"\t\\ \u2028 \x00 \x1f', "emoji": "😀", "surrogate": "a\udc80b"}),
        ("error", "failed", {"error": ValueError("bad postgres://u:excpw123@h/d"), "job_id": 7}),
        ("info", "values", {"none": None, "yes": True, "no": False, "nan": float("nan"), "inf": float("-inf"),
                            "big": 10**30, "f": 0.1, "dec": decimal.Decimal("1.50"),
                            "when": dt.datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC),
                            "id": uuid.UUID(int=5), "path": Path("/tmp/x"), "raw": b"bytes", "weird": Weird(),
                            "tuple": (1, 2), "list": [], "dict": {}, "intkey": {1: "a"}}),
        ("info", "reserved", {"pid": 99, "job_id": 1}),
        ("info", "reserved2", {"level": "bogus", "timestamp": "bogus", "x": 1}),
        ("info", "exception_key", {"exception": "given", "stack": "s"}),
        ("warn", "alias_warn", {"a": 1}),
        ("fatal", "alias_fatal", {"a": 1}),
        ("msg", "alias_msg", {"a": 1}),
        ("critical", "critical", {"a": 1}),
        ("error", "error", {"a": 1}),
        ("debug", "debug", {"a": 1}),
    ]


def test_timestamp_format_matches_structlogs_timestamper(monkeypatch):
    stamper = structlog.processors.TimeStamper(fmt="iso", utc=True, key="timestamp")
    for ns in (NS_WITH_MICROS, NS_WHOLE_SECOND, 1_000_000_000_000_001_000, 0, 946_684_799_999_999_999):
        freeze(monkeypatch, ns)
        expected = stamper(None, "info", {})["timestamp"]
        assert logs._timestamp() == expected
        assert TIMESTAMP.match(expected)
    monkeypatch.undo()
    # The real clocks: the fast path's stamp lies between two of structlog's, same format.
    for _ in range(200):
        before = stamper(None, "info", {})["timestamp"]
        ours = logs._timestamp()
        after = stamper(None, "info", {})["timestamp"]
        assert TIMESTAMP.match(ours), ours
        parse = lambda s: dt.datetime.fromisoformat(s.replace("Z", "+00:00"))  # noqa: E731
        assert parse(before) <= parse(ours) <= parse(after)


@pytest.mark.parametrize("ns", [NS_WITH_MICROS, NS_WHOLE_SECOND])
def test_json_records_are_byte_identical_to_structlogs(pipe, monkeypatch, ns):
    freeze(monkeypatch, ns)
    logs.configure("json", "debug", fd=pipe.w)
    records = sample_records()
    for record in records:  # one at a time: a mismatch names its record
        expected, got = both(pipe, [record])
        assert got == expected, record[1]
    expected, got = both(pipe, records)  # and all together
    assert got == expected
    lines = got.decode().split("\n")[:-1]  # (not splitlines(): a record holds U+2028)
    assert len(lines) == len(records)
    assert "hunter2222" not in got.decode() and "s3cr3tpw" not in got.decode()
    assert "inevent99" not in got.decode() and "nestedpw" not in got.decode() and "listpw" not in got.decode()
    assert "excpw123" not in got.decode()
    import json
    first = json.loads(lines[0])
    assert list(first)[:4] == ["timestamp", "level", "event", "pid"] and first["pid"] == os.getpid()
    assert TIMESTAMP.match(first["timestamp"])
    big = json.loads(lines[6])
    assert big["blob"] == "x" * 16 * 1024 + "… [4096 more characters]" and big["after"] == 1
    cut_secret = json.loads(lines[7])["blob"]
    assert "hunter2222" not in cut_secret and "hunter" not in cut_secret
    assert json.loads(lines[9])["error"] == "ValueError: bad postgres://u:***@h/d"
    assert json.loads(lines[11])["pid"] == 99


def test_emit_single_record_is_identical_too(pipe, monkeypatch):
    freeze(monkeypatch, NS_WITH_MICROS)
    logs.configure("json", "debug", fd=pipe.w)
    for level, event, fields in sample_records():
        getattr(logs.get_logger(), level)(event, **fields)
        expected = pipe.read()
        logs.emit(level, event, **fields)
        assert pipe.read() == expected, event


def test_plain_records_take_the_fast_path_and_secrets_the_chain(pipe, monkeypatch):
    logs.configure("json", "info", fd=pipe.w)
    chained = []
    real = logs._run_chain
    monkeypatch.setattr(logs, "_run_chain", lambda *args: chained.append(args[2]) or real(*args))
    logs.emit_many([("info", "job_started", {"job_id": 1, "job_type": "a.b"}),
                    ("info", "job_succeeded", {"job_id": 1})])
    logs.emit("info", "job_started", job_id=2)
    assert chained == []
    logs.emit_many([("info", "db", {"dsn": SECRET_DSN}), ("info", "big", {"s": "x" * 17000}),
                    ("error", "e", {"error": KeyError("k")}), ("info", "p", {"pid": 1})])
    assert chained == ["db", "big", "e", "p"]
    assert pipe.read().count(b"\n") == 7


def test_remembered_passwords_are_masked_everywhere(pipe, monkeypatch):
    freeze(monkeypatch, NS_WITH_MICROS)
    logs.configure("json", "debug", fd=pipe.w)
    units.remember_secrets("postgresql://app:Sup3rSecret@db/x")
    chained = []
    real = logs._run_chain
    monkeypatch.setattr(logs, "_run_chain", lambda *args: chained.append(args[2]) or real(*args))
    records = [("info", "job_started", {"job_id": 1}), ("warning", "auth", {"error": "bad: Sup3rSecret!"}),
               ("info", "nested", {"e": {"k": ["Sup3rSecret"]}}), ("info", "Sup3rSecret", {})]
    expected, got = both(pipe, records)
    assert got == expected and b"Sup3rSecret" not in got
    assert chained == ["auth", "nested", "Sup3rSecret"]  # found in the rendered line, masked by the chain
    units.remember_secrets('host=db password=\'qu"ote\\\\pw\'')  # JSON escapes it: searched per value
    units.remember_secrets("postgresql://u:info@db/x")  # a password that is also a level name
    assert {"Sup3rSecret", 'qu"ote\\pw', "info"} <= units._SECRETS
    records = [
        ("info", "job_started", {"job_id": 1}),
        ("warning", "auth", {"error": "password authentication failed: Sup3rSecret"}),
        ("warning", "auth", {"error": 'token qu"ote\\pw rejected', "n": [1, 'qu"ote\\pw']}),
        ("error", "plain", {"job_id": 2}),
    ]
    expected, got = both(pipe, records)
    assert got == expected
    text = got.decode()
    assert "Sup3rSecret" not in text and 'qu\\"ote' not in text
    assert '"level":"***"' in text  # what the pipeline has always done with such a password


def test_structlog_contextvars_are_merged_like_structlog(pipe, monkeypatch):
    freeze(monkeypatch, NS_WITH_MICROS)
    logs.configure("json", "info", fd=pipe.w)
    structlog.contextvars.bind_contextvars(request_id="r-1", job_id=999, pid=5, secret=SECRET_DSN)
    records = [("info", "job_started", {"job_id": 1, "queue": "q"}), ("info", "tick", {})]
    expected, got = both(pipe, records)
    assert got == expected and b"r-1" in got and b'"pid":5' in got and b"hunter2222" not in got
    structlog.contextvars.unbind_contextvars("request_id", "job_id", "pid", "secret")  # set to Ellipsis: ignored
    expected, got = both(pipe, records)
    assert got == expected and b"r-1" not in got


def test_exception_level_formats_the_current_exception(pipe, monkeypatch):
    freeze(monkeypatch, NS_WITH_MICROS)
    logs.configure("json", "info", fd=pipe.w)
    try:
        raise RuntimeError("boom postgresql://u:tbpass99@h/d")
    except RuntimeError:
        expected, got = both(pipe, [("exception", "job_crashed", {"job_id": 3})])
    assert got == expected and b"Traceback" in got and b"tbpass99" not in got and b'"level":"error"' in got


@pytest.mark.parametrize("level", ["debug", "info", "warning", "error", "critical"])
def test_level_filtering(pipe, monkeypatch, level):
    freeze(monkeypatch, NS_WITH_MICROS)
    logs.configure("json", level, fd=pipe.w)
    records = [(name, f"e_{name}", {"n": 1}) for name in
               ("debug", "info", "msg", "warning", "warn", "error", "critical", "fatal")]
    expected, got = both(pipe, records)
    assert got == expected
    events = [line.split(b'"event":"')[1].split(b'"')[0].decode() for line in got.splitlines()]
    rank = {"debug": 10, "info": 20, "msg": 20, "warning": 30, "warn": 30, "error": 40, "critical": 50, "fatal": 50}
    assert events == [event for name, event, _ in records if rank[name] >= logs.LEVELS[level]]
    for name, event, fields in records:
        logs.emit(name, event, **fields)
    assert pipe.read() == expected


def test_many_json_records_in_one_write(pipe, monkeypatch):
    logs.configure("json", "info", fd=pipe.w)
    calls = []
    real_write = os.write
    monkeypatch.setattr(os, "write", lambda fd, data: calls.append((fd, len(data))) or real_write(fd, data))
    records = [("info", "job_started" if i % 2 == 0 else "job_succeeded", {"job_id": i, "job_type": "t", "queue": "q"})
               for i in range(200)]
    records.insert(50, ("info", "db", {"dsn": SECRET_DSN}))  # a record through the chain keeps its place
    records.insert(120, ("debug", "dropped", {}))
    logs.emit_many(records)
    assert [fd for fd, _ in calls] == [pipe.w]
    lines = pipe.read().decode().splitlines()
    assert len(lines) == 201 and '"event":"db"' in lines[50] and '"job_id":50' in lines[51]
    assert '"job_id":199' in lines[-1]
    calls.clear()
    logs.emit_many([])
    logs.emit_many(r for r in [("debug", "x", {})])
    assert calls == []


def test_partial_writes_eintr_eagain_and_a_closed_fd(pipe, monkeypatch):
    logs.configure("json", "info", fd=pipe.w)
    real_write = os.write
    script = iter([InterruptedError, BlockingIOError, 100, InterruptedError, 7])

    def stingy(fd, data):
        step = next(script, None)
        if isinstance(step, type):
            raise step()
        return real_write(fd, bytes(data[:step] if step else data))

    monkeypatch.setattr(os, "write", stingy)
    records = [("info", "job_started", {"job_id": i}) for i in range(20)]
    logs.emit_many(records)
    monkeypatch.setattr(os, "write", real_write)
    got = pipe.read()
    via_structlog(records)
    expected = pipe.read()
    assert len(got.splitlines()) == 20
    strip = lambda b: re.sub(rb'"timestamp":"[^"]*"', b"", b)  # noqa: E731
    assert strip(got) == strip(expected)
    os.close(pipe.w)  # stderr gone: records are dropped, nothing raises
    logs.emit_many(records)
    logs.emit("info", "job_started", job_id=1)


def test_console_sink_renders_like_structlog(pipe, monkeypatch):
    freeze(monkeypatch, NS_WITH_MICROS)
    logs.configure("console", "debug", fd=pipe.w)
    records = sample_records()
    for record in records:
        expected, got = both(pipe, [record])
        assert got == expected, record[1]
    expected, got = both(pipe, records)
    assert got == expected
    assert b"\x1b[" not in got and b"job_started" in got and b"hunter2222" not in got
    assert not got.lstrip().startswith(b"{")  # human lines, not JSON
    try:
        raise KeyError("k")
    except KeyError:
        expected, got = both(pipe, [("exception", "crash", {"job_id": 1}), ("info", "after", {})])
    assert got == expected and b"Traceback" in got


class Receiver:
    """A syslog server on a unix datagram socket, read by a thread (the kernel queues only ~10
    datagrams on such a socket: a burst would block the sender)."""

    def __init__(self, path: str):
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(path)
        self.sock.settimeout(0.2)
        self.messages: list[bytes] = []
        self.running = True
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while self.running:
            try:
                self.messages.append(self.sock.recv(70000))
            except (TimeoutError, OSError):
                continue

    def take(self, count: int) -> list[bytes]:
        deadline = time.monotonic() + 5
        while len(self.messages) < count and time.monotonic() < deadline:
            time.sleep(0.005)
        taken, self.messages[:] = list(self.messages), []
        return taken

    def close(self) -> None:
        self.running = False
        self.thread.join()
        self.sock.close()
        os.unlink(self.path)


def test_syslog_sink_sends_what_structlog_sends(pipe, monkeypatch, tmp_path):
    freeze(monkeypatch, NS_WITH_MICROS)
    path = str(tmp_path / "log.sock")
    if len(path) > 100:
        path = f"/tmp/jsv-logs-fast-{os.getpid()}.sock"
    receiver = Receiver(path)
    try:
        logs.configure("syslog", "debug", syslog_address=path, fd=pipe.w)
        records = sample_records()
        via_structlog(records)
        expected = receiver.take(len(records))
        assert len(expected) == len(records)
        logs.emit_many(records)
        got = receiver.take(len(records))
        for want, have, record in zip(expected, got, records):
            assert have == want, record[1]
        assert got == expected
        for level, event, fields in records:
            logs.emit(level, event, **fields)
        assert receiver.take(len(records)) == expected
        assert got[0].startswith(b"<30>1 2025-11-24T16:02:03.456789Z ") and b" @cee:{" in got[0]
        assert all(b"hunter2222" not in m for m in got)
        assert pipe.read() == b""  # nothing fell back to stderr
    finally:
        receiver.close()
    # The receiver is gone: records fall back to stderr, as structlog's did.
    logs.emit_many([("info", "job_started", {"job_id": 1})])
    assert b'"event":"job_started"' in pipe.read()


def test_pid_is_the_childs_after_fork(pipe):
    logs.configure("json", "info", fd=pipe.w)
    logs.emit("info", "parent")
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            logs.emit("info", "child")
            logs.emit_many([("info", "child2", {})])
        finally:
            os._exit(0)
    os.waitpid(pid, 0)
    lines = pipe.read().decode().splitlines()
    assert f'"event":"parent","pid":{os.getpid()}' in lines[0]
    assert f'"event":"child","pid":{pid}' in lines[1] and f'"event":"child2","pid":{pid}' in lines[2]


def test_errors_are_those_of_structlog_and_earlier_records_still_go_out(pipe):
    logs.configure("json", "info", fd=pipe.w)
    with pytest.raises(ValueError, match="unknown log level"):
        logs.emit_many([("info", "first", {}), ("loud", "x", {})])
    with pytest.raises(TypeError):
        logs.emit_many([("info", "second", {}), ("info", "x", {"event": "twice"})])
    with pytest.raises(ValueError):
        logs.emit("loud", "x")
    events = [line.split('"event":"')[1].split('"')[0] for line in pipe.read().decode().splitlines()]
    assert events == ["first", "second"]


def test_structlog_reconfigured_by_someone_else_is_respected(pipe):
    logs.configure("json", "info", fd=pipe.w)
    with structlog.testing.capture_logs() as captured:
        logs.emit_many([("info", "job_started", {"job_id": 1})])
        logs.emit("warning", "job_lost", job_id=2)
    assert [(c["event"], c["log_level"]) for c in captured] == [("job_started", "info"), ("job_lost", "warning")]
    assert pipe.read() == b""
    logs.emit("info", "back")
    assert b'"event":"back"' in pipe.read()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-q"]))


def job_records() -> list[tuple[str, str, logs.JobFields]]:
    jobs = [
        logs.JobFields(123, "email.send", "default", 1, 4242),
        logs.JobFields(124, "email.send", "default", 3, 4242, 12.5),
        logs.JobFields(125, "email.send", "default", 1, 4242, 0.1),
        logs.JobFields(126, 'ünï\n"code"\u2028', "q\\x", 2, 7, 1e-05),
        logs.JobFields(127, "t", "postgres://u:queuepw@h/d", 1, 1),  # (a queue cannot be named so: still safe)
        logs.JobFields(128, "x" * 20_000, "q", 1, 1, 3.0),
        logs.JobFields(129, "t", "q", 1, 1, float("nan")),
        logs.JobFields(130, "t", "q", 1, 1, 7),  # not a float: rendered by the chain like the dict
        logs.JobFields(10**30, "t", "q", 1, 1),
    ]
    return [(level, event, job) for job in jobs
            for level, event in (("info", "job_started"), ("info", "job_succeeded"), ("debug", "job_started"))]


def both_job(pipe: Pipe, records) -> tuple[bytes, bytes]:
    via_structlog([(level, event, fields.as_dict()) for level, event, fields in records])
    expected = pipe.read()
    logs.emit_many(records)
    return expected, pipe.read()


@pytest.mark.parametrize("sink", ["json", "console"])
def test_job_fields_are_written_exactly_as_their_dict_would_be(pipe, monkeypatch, sink):
    freeze(monkeypatch, NS_WITH_MICROS)
    logs.configure(sink, "info", fd=pipe.w)
    records = job_records()
    for record in records:  # one at a time: a mismatch names its record
        expected, got = both_job(pipe, [record])
        assert got == expected, record
    expected, got = both_job(pipe, records)
    assert got == expected
    assert b"queuepw" not in got
    if sink == "json":
        import json
        first = json.loads(got.split(b"\n")[0])
        assert first == {"timestamp": first["timestamp"], "level": "info", "event": "job_started", "pid": os.getpid(),
                         "job_id": 123, "job_type": "email.send", "queue": "default", "attempt": 1, "child_pid": 4242}
        assert json.loads(got.split(b"\n")[3])["duration_ms"] == 12.5
    # A remembered password that shows up in a job's line (its type, a level name, a number
    # in the timestamp) is masked exactly as the chain masks it.
    for password in ("email.send", "info", "456789", "4242"):
        units.remember_secrets(f"postgresql://u:{password}@db/x")
        expected, got = both_job(pipe, records)
        assert got == expected, password


def test_job_fields_take_the_fast_path_unless_they_must_not(pipe, monkeypatch):
    logs.configure("json", "info", fd=pipe.w)
    chained = []
    real = logs._run_chain
    monkeypatch.setattr(logs, "_run_chain", lambda *args: chained.append(args[3]) or real(*args))
    logs.emit_many([("info", "job_started", logs.JobFields(1, "a.b", "default", 1, 2)),
                    ("info", "job_succeeded", logs.JobFields(1, "a.b", "default", 1, 2, 0.5))])
    assert chained == []
    logs.emit_many([("info", "job_started", logs.JobFields(2, "a.b", "postgres://x", 1, 2)),
                    ("info", "job_succeeded", logs.JobFields(3, "a.b", "default", 1, 2, float("inf")))])
    assert [fields["job_id"] for fields in chained] == [2]  # (an infinite duration: the dict's fast path)
    assert pipe.read().count(b"\n") == 4
