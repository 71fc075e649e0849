"""The supervisor <-> child line protocol's pure parts: run messages and line splitting."""

from __future__ import annotations

import json

import pytest

from supervisor.children import protocol


def generic_run(job: dict, payload_json: str) -> bytes:
    """encode_run's general path: json.dumps of the message with the payload spliced in."""
    head = json.dumps({"op": "run", "job": job}, separators=(",", ":"), default=str)
    return (head[:-2] + ',"payload":' + payload_json + "}}\n").encode("utf-8")


def spec(**changes) -> dict:
    job = {"id": 17, "job_type": "email.send", "queue": "default", "priority": 0, "run_at": 1764650000.123456,
           "attempts": 1, "max_attempts": None, "lock": "runner-1/4242"}
    job.update(changes)
    return job


@pytest.mark.parametrize("job", [
    spec(),
    spec(max_attempts=5, priority=-3, attempts=0),
    spec(run_at=None),
    spec(run_at=0.1),
    spec(run_at=1e-07),
    spec(run_at=float("inf")),  # 'infinity'::timestamptz: the general path writes Infinity
    spec(run_at=17),  # not a float: the general path
    spec(job_type='ünïcode "quoted"\n\u2028', queue="q\\x\x00", lock="r/1"),
    spec(id=10**30),
    {"id": 1, "job_type": "t"},  # other keys: the general path
    spec(extra=True),
])
def test_run_messages_are_what_json_dumps_writes(job):
    for payload in ('{}', '{"to": "ü@example.org", "n": [1, 2.5, null]}', '[]', '"text"'):
        assert protocol.encode_run(job, payload) == generic_run(job, payload)
        decoded = json.loads(protocol.encode_run(job, payload))
        assert decoded["op"] == "run" and decoded["job"]["payload"] == json.loads(payload)


def test_lines_are_split_however_the_bytes_arrive():
    lines = [b'{"op":"done","id":1}', b"", b"x" * 70_000, "ü €".encode(), b'{"op":"done","id":2}']
    stream = b"".join(line + b"\n" for line in lines) + b"partial"
    for size in (1, 2, 3, 7, 100, 65536, len(stream)):
        buffer = protocol.LineBuffer()
        got = []
        for start in range(0, len(stream), size):
            got += buffer.feed(stream[start:start + size])
        assert got == lines, size
        assert buffer.rest() == b"partial"


def test_a_line_beyond_the_limit_is_cut_into_pieces():
    buffer = protocol.LineBuffer(limit=10)
    assert buffer.feed(b"0123456789abc") == [b"0123456789abc"]
    assert buffer.feed(b"short\nrest") == [b"short"]
    assert buffer.rest() == b"rest"


@pytest.mark.parametrize(("job_id", "duration", "rss", "at"), [
    (1, 0.012, None, None), (2**40, 1234.5, 10_000_000, 81234.123456789), (3, 0.0, 0, 0.5),
    (4, float("nan"), None, 1.0), (5, 7, None, 2.5), (6, 0.5, None, float("inf")), (7, 0.5, None, 3),
])
def test_done_messages_are_what_encode_writes(job_id, duration, rss, at):
    message = {"op": "done", "id": job_id, "duration_ms": duration, "outcome": "ok"}
    if rss is not None:
        message["rss"] = rss
    if at is not None:
        message["at"] = at
    assert protocol.encode(message) == (json.dumps(message, separators=(",", ":")) + "\n").encode()


@pytest.mark.parametrize("line", [
    b'{"op":"done","id":17,"duration_ms":0.012,"outcome":"ok"}',
    b'{"op":"done","id":17,"duration_ms":0.012,"outcome":"ok","at":81234.123456789}',
    b'{"op":"done","id":17,"duration_ms":0.012,"outcome":"ok","at":1e-05}',
    b'{"op":"done","id":17,"duration_ms":0.012,"outcome":"ok","at":12}',
    b'{"op":"done","id":17,"duration_ms":0.012,"outcome":"ok","at":1e999}',
    b'{"op":"done","id":17,"duration_ms":0.012,"outcome":"ok","at":-1.5}',
    b'{"op":"done","id":17,"duration_ms":0.012,"outcome":"ok","at":null}',
    b'{"op":"done","id":17,"duration_ms":0.012,"outcome":"ok","at":1.5,"x":2}',
    b'{"op":"done","id":17,"duration_ms":0.5,"outcome":"ok","rss":100,"at":3.25}',
    b'{"op":"done","id":17,"duration_ms":1e-05,"outcome":"ok"}',
    b'{"op":"done","id":17,"duration_ms":12,"outcome":"ok"}',
    b'{"op":"done","id":17,"duration_ms":0.5,"outcome":"ok","rss":100}',
    b'{"op":"done","id":17,"duration_ms":NaN,"outcome":"ok"}',
    b'{"op":"done","id":17,"duration_ms":-1.0,"outcome":"ok"}',
    b'{"op":"done","id":17,"duration_ms":null,"outcome":"ok"}',
    b'{"op":"done","id":"17","duration_ms":0.5,"outcome":"ok"}',
    b'{"op":"done","id":17,"outcome":"failed","duration_ms":0.5,"error":"x"}',
    b'{"op":"ready","pid":1,"types":{}}',
])
def test_decoding_reads_what_json_reads(line):
    assert protocol.decode(line) == json.loads(line)


def test_a_done_line_that_is_not_json_is_an_error_as_before():
    for line in (b'{"op":"done","id":17,"duration_ms":1_0,"outcome":"ok"}',
                 b'{"op":"done","id":17,"duration_ms":0.5,"outcome":"ok","at":1_0}',
                 b'{"op":"done","id":17,"duration_ms":0.5,"outcome":"ok","at":1.5x}',
                 b'{"op":"done","id":17,"duration_ms":0.5x,"outcome":"ok"}'):
        with pytest.raises(ValueError):
            protocol.decode(line)
