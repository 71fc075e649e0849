"""Hostile input: whatever users, producers in other languages and handlers throw at the system,
the rows stay whole, the logs stay JSON, errors are one clear line, and nothing else breaks.

Payloads of 10 MB, deep nesting and odd Unicode go through enqueue, the table, the supervisor's
socket and the child, and the handler proves they arrived intact. Job types and queue names
carry quotes and SQL. An exception of megabytes (with a NUL and a lone surrogate in it) becomes
a truncated last_error. ``enqueue -`` refuses malformed lines all or nothing, naming the line.
Every config key gets every wrong type. A handler prints megabytes of garbage.
"""

from __future__ import annotations

import hashlib
import os
import json
import subprocess
import time

import pytest
import yaml

from conftest import JOBSUPERVISOR, cli_env, job_row, run_cli, statuses, wait_for
from faults.handlers import HOSTILE_QUEUE, HOSTILE_TYPE
from faults.invariants import assert_invariants
from faults.scenario import config_for, serve_one, strict_json, wait_all_ended, wait_status

from supervisor import enqueue, enqueue_many
from supervisor.logs import MAX_LINE

pytestmark = pytest.mark.timeout(90)

MiB = 1024 * 1024
ODD = {
    "rtl": "\u202eevil\u202c gnp.exe",
    "zwj": "👩\u200d👩\u200d👧\u200d👦",
    "combining": "Z\u0351\u0358a\u0337\u033el\u0338g\u0360o",
    "separators": "line\u2028para\u2029nel\u0085end",
    "bom_and_nonchars": "\ufeff\ufffe\uffff\U0010ffff",
    "astral": "𝕳𝖊𝖑𝖑𝖔 🧨 \U0001f4a9",
    "controls": "\x01\x07\x08\x1b[31mred\x1b[0m\t\r\n",
    "quotes": "'\"`\\ ${x} {{x}} %s %(x)s",
    "cjk": "漢字かなカナ한국어",
    "right_to_left": "مرحبا שלום",
}


def lines_of(sup) -> list[bytes]:
    return sup.log_path.read_bytes().splitlines()


def assert_log_is_strict_json(sup) -> int:
    """Every line of the supervisor's log is one strict JSON object with an event, and short."""
    count = 0
    for line in lines_of(sup):
        record = strict_json(line)
        assert isinstance(record, dict) and record.get("event") and record.get("timestamp"), line[:300]
        assert len(line) <= MAX_LINE + 1024, (len(line), line[:200])
        count += 1
    return count


# --- payloads ---------------------------------------------------------------------------------------
def test_ten_megabyte_payloads_arrive_intact_from_python_and_from_stdin(db, make_config, start_supervisor):
    blob = ("0123456789abcdef" * (10 * MiB // 16))[:10 * MiB - 7] + "é€𝄞"
    sha = hashlib.sha256(blob.encode()).hexdigest()
    from_python = enqueue(db, "echo_check", {"blob": blob, "sha256": sha})
    config = config_for(make_config)
    line = json.dumps({"job_type": "echo_check", "payload": {"blob": blob[::-1], "sha256":
                       hashlib.sha256(blob[::-1].encode()).hexdigest()}})
    out = run_cli("-c", str(config), "enqueue", "-", input=line + "\n")
    assert out.returncode == 0, out.stderr
    from_stdin = int(out.stdout.split()[0])
    sup = start_supervisor(config)
    for job_id in (from_python, from_stdin):
        row = wait_status(db, job_id, "succeeded", "failed", timeout=40)
        assert row["status"] == "succeeded", row["last_error"]
    assert_invariants(db, [from_python, from_stdin])
    assert_log_is_strict_json(sup)  # and the payload was never logged
    shown = run_cli("-c", str(config), "show", str(from_python), "--json")
    assert shown.returncode == 0 and json.loads(shown.stdout)["payload"]["sha256"] == sha


def test_deep_nesting_from_python_cli_and_sql(db, make_config, start_supervisor):
    """Nesting Python can serialise runs; deeper is refused with a clear error at enqueue; and a
    producer writing SQL directly (jsonb accepts far deeper nesting than Python's json) must not
    crash-loop children: the job fails with an error that says why."""
    config = config_for(make_config)
    fine = enqueue(db, "echo_check", {"nested": json.loads("[" * 400 + "]" * 400), "depth": 399})
    too_deep: list = []
    node = too_deep
    for _ in range(100_000):
        node.append([])
        node = node[0]
    with pytest.raises(ValueError, match="nested too deeply"):
        enqueue(db, "echo_check", {"nested": too_deep})
    deep_text = "[" * 5000 + "]" * 5000
    out = run_cli("-c", str(config), "enqueue", "echo_check", deep_text)
    assert out.returncode == 2 and "nested too deeply" in out.stderr and "Traceback" not in out.stderr
    out = run_cli("-c", str(config), "enqueue", "-", input=json.dumps({"job_type": "echo_check"})[:-1]
                  + f', "payload": {deep_text}}}\n')
    assert out.returncode == 2 and "line 1" in out.stderr and "Traceback" not in out.stderr, out.stderr
    from_sql = db.execute("INSERT INTO jobs (job_type, payload, max_attempts) VALUES ('echo_check', %s::jsonb, 2)"
                          " RETURNING id", (json.dumps({"nested": "PLACEHOLDER"}).replace('"PLACEHOLDER"', deep_text),)
                          ).fetchone()[0]
    sup = start_supervisor(config)
    wait_status(db, fine, "succeeded")

    def outcome():  # not job_row: psycopg cannot load that payload into Python either
        return db.execute("SELECT status, attempts, last_error FROM jobs WHERE id = %s", (from_sql,)).fetchone()
    status, attempts, error = wait_for(lambda: (r := outcome())[0] in ("failed", "succeeded") and r, 30,
                                       message=f"the deep job ended: {outcome()}\n{sup.tail()}")
    assert (status, attempts) == ("failed", 2), error
    assert "nested too deeply" in error, error
    assert not sup.find("job_worker_died"), "a payload must not kill the child that receives it"
    assert_invariants(db, [fine, from_sql])
    assert_log_is_strict_json(sup)


def poison_rows(db) -> list[int]:
    """Rows any producer can write with SQL, that Python's json cannot load: nesting beyond its
    recursion limit, an integer beyond its 4300 digits."""
    return [db.execute("INSERT INTO jobs (job_type, payload, max_attempts) VALUES ('echo_check', %s::jsonb, 2)"
                       " RETURNING id", (text,)).fetchone()[0]
            for text in ('{"nested": ' + "[" * 5000 + "]" * 5000 + "}", '{"n": ' + "9" * 5000 + "}")]


def test_a_payload_python_cannot_load_fails_its_job_without_killing_children(db, make_config, start_supervisor):
    sup = start_supervisor(config_for(make_config))
    ids = poison_rows(db)
    for job_id in ids:
        wait_for(lambda: db.execute("SELECT status FROM jobs WHERE id = %s", (job_id,)).fetchone()[0] == "failed",
                 20, message=f"job {job_id} failed")
    errors = [e for (e,) in db.execute("SELECT last_error FROM jobs WHERE id = ANY(%s::bigint[]) ORDER BY id", (ids,))]
    assert "the payload cannot be loaded in Python: nested too deeply" in errors[0]
    assert "the payload cannot be loaded in Python: Exceeds the limit (4300 digits)" in errors[1]
    assert not sup.find("job_worker_died")
    assert_invariants(db, ids)
    assert_log_is_strict_json(sup)


def test_a_payload_python_cannot_load_breaks_no_page_and_no_command(db, dsn, make_config):
    """One such row must not take the dashboard's job list down for everyone, nor make
    ``show`` print a traceback."""
    from supervisor.config import load_config
    from supervisor.web import create_app

    config = config_for(make_config)
    ids = poison_rows(db)
    ordinary = enqueue(db, "echo_check", {"value": 1, "ascii": "1"})
    client = create_app(load_config(str(config)), dsn).test_client()
    broken = [url for url in ["/", "/jobs", "/api/jobs", "/jobs?q=9999", f"/jobs/{ordinary}",
                              *(f"/jobs/{i}" for i in ids), *(f"/api/jobs/{i}" for i in ids)]
              if client.get(url).status_code != 200]
    failing = []
    for job_id in ids:
        for args in (["show", str(job_id)], ["show", str(job_id), "--json"]):
            out = run_cli("-c", str(config), *args)
            if out.returncode != 0 or "Traceback" in out.stderr:
                failing.append((args, out.returncode, out.stderr.strip().splitlines()[-1:]))
    assert not broken and not failing, f"pages answering an error: {broken}; commands failing: {failing}"


def test_odd_unicode_in_payloads_types_and_queues_round_trips(db, make_config, start_supervisor):
    values = dict(ODD, keys={k + "\u200b" + v[:3]: v for k, v in ODD.items()})
    ids = [enqueue(db, "echo_check", {"value": value, "ascii": json.dumps(value, ensure_ascii=True)})
           for value in [values, *ODD.values()]]
    odd_queue = "队列\u202e'\"🧨"
    ids.append(enqueue(db, "echo_check", {"value": 1, "ascii": "1"}, queue=odd_queue))
    config = config_for(make_config)
    sup = start_supervisor(config)
    wait_all_ended(db, ids, 30, sup)
    report = assert_invariants(db, ids)
    assert report.by_status == {"succeeded": len(ids)}
    assert job_row(db, ids[-1])["queue"] == odd_queue
    assert_log_is_strict_json(sup)
    listed = run_cli("-c", str(config), "jobs", "--queue", odd_queue, "--json")
    assert listed.returncode == 0 and [r["id"] for r in json.loads(listed.stdout)] == [ids[-1]]


@pytest.mark.parametrize("field, value", [
    ("payload", {"s": "\ud800"}),
    ("payload", {"\udcff": 1}),
    ("job_type", "type\udcfe"),
    ("queue", "queue\udc80"),
    ("unique_key", "key\ud83d"),
])
def test_lone_surrogates_are_refused_before_the_database(db, field, value):
    """Undecodable bytes (surrogateescape) or a lone "\\ud800" escape cannot be stored as UTF-8:
    refused with a ValueError naming the field, and the caller's transaction is still usable."""
    job = {"job_type": "echo_check", "payload": {}, field: value}
    with db.transaction():
        with pytest.raises(ValueError, match="not valid Unicode"):
            enqueue(db, **job)
        with pytest.raises(ValueError, match="job #2: .*not valid Unicode"):
            enqueue_many(db, [{"job_type": "echo_check"}, job])
        assert enqueue(db, "echo_check") > 0  # the transaction was not aborted
    assert statuses(db) == {"queued": 1}


def test_ids_from_enqueue_many_go_back_to_sql_whatever_their_order_and_size(db):
    """Regression: psycopg sized a list of JobId from one element, so ``WHERE id = ANY(%s)``
    with ids from enqueue_many failed ("value out of range for type smallint") once they
    passed 32767 in the wrong order."""
    db.execute("SELECT setval(pg_get_serial_sequence('jobs', 'id'), 64000)")
    ids = enqueue_many(db, [{"job_type": "quick"}])
    ids += enqueue_many(db, [{"job_type": "quick"}])
    db.execute("SELECT setval(pg_get_serial_sequence('jobs', 'id'), 3000000000)")
    ids += enqueue_many(db, [{"job_type": "quick"}])
    for order in (ids, ids[::-1], [ids[1], ids[0]]):
        assert db.execute("SELECT count(*) FROM jobs WHERE id = ANY(%s)", (order,)).fetchone()[0] == len(order)
        assert db.execute("SELECT count(*) FROM jobs WHERE id = ANY(%b)", (order,)).fetchone()[0] == len(order)
    assert db.execute("SELECT id FROM jobs WHERE id = %s", (ids[-1],)).fetchone()[0] == ids[-1]


# --- names with quotes and SQL -------------------------------------------------------------------
def test_job_types_and_queues_with_quotes_and_sql_run_and_break_nothing(db, make_config, start_supervisor):
    config = config_for(make_config, {"queues": [HOSTILE_QUEUE, "default"],
                                      "jobs": {HOSTILE_TYPE: {"max_attempts": 2, "max_concurrency": 1}}})
    ids = [enqueue(db, HOSTILE_TYPE, {"n": n}) for n in range(5)]
    assert job_row(db, ids[0])["queue"] == HOSTILE_QUEUE  # the handler's registered queue
    also = db.execute("INSERT INTO jobs (job_type, queue) VALUES (%s, %s) RETURNING id",
                      (HOSTILE_TYPE, HOSTILE_QUEUE)).fetchone()[0]
    sup = start_supervisor(config)
    wait_all_ended(db, ids + [also], 30, sup)
    report = assert_invariants(db, ids + [also])
    assert report.by_status == {"succeeded": 6}
    assert db.execute("SELECT count(*) FROM jobs").fetchone()[0] == 6  # nothing dropped, nothing injected
    listed = run_cli("-c", str(config), "jobs", "--type", HOSTILE_TYPE, "--queue", HOSTILE_QUEUE, "--json")
    assert listed.returncode == 0, listed.stderr
    assert sorted(r["id"] for r in json.loads(listed.stdout)) == sorted(ids + [also])
    status = json.loads(run_cli("-c", str(config), "status", "--json").stdout)
    assert status["by_type"][HOSTILE_TYPE]["succeeded"] == 6 and status["by_queue"][HOSTILE_QUEUE]["succeeded"] == 6
    out = run_cli("-c", str(config), "enqueue", HOSTILE_TYPE, "{}", "--queue", HOSTILE_QUEUE)
    assert out.returncode == 0, out.stderr
    assert_log_is_strict_json(sup)


# --- a last_error of megabytes ----------------------------------------------------------------------
def test_megabytes_of_exception_message_become_a_truncated_last_error_and_the_row_stays_whole(
        db, make_config, start_supervisor):
    sup = start_supervisor(config_for(make_config))
    huge = enqueue(db, "huge_error", {"size": 4 * MiB})
    unprintable = enqueue(db, "huge_error", {"unprintable": True})
    for job_id in (huge, unprintable):
        wait_status(db, job_id, "failed", timeout=30)
    row = job_row(db, huge)
    error = row["last_error"]
    assert row["attempts"] == 2
    assert 1000 < len(error) <= 70_000, len(error)
    assert error.startswith("Traceback") and "HEAD-MARKER" in error and error.rstrip().endswith("TAIL-MARKER")
    assert "characters cut" in error
    assert "\x00" not in error and "nul:\\x00" in error and "surrogate:\\udcff" in error
    error.encode("utf-8")  # valid text all the way
    row = job_row(db, unprintable)
    assert row["attempts"] == 2 and "_Unprintable" in row["last_error"]
    # The rows are readable by every tool.
    for tool in (["show", str(huge)], ["show", str(huge), "--json"], ["jobs", "--status", "failed"]):
        out = run_cli("-c", str(sup.config), *tool)
        assert out.returncode == 0, out.stderr
    assert not sup.find("job_worker_died"), "a failure must not kill the child recording it"
    assert_invariants(db, [huge, unprintable])
    assert_log_is_strict_json(sup)


# --- enqueue - : malformed lines -------------------------------------------------------------------
GOOD = '{"job_type": "echo_check", "payload": {"value": 1, "ascii": "1"}}\n'
MALFORMED = [
    pytest.param(b'{"job_type": "echo_check"', "not valid JSON", id="truncated"),
    pytest.param(b'{"job_type": "echo_check"} {"job_type": "echo_check"}', "not valid JSON", id="two-objects"),
    pytest.param(b'["echo_check"]', 'expected an object with a "job_type"', id="array"),
    pytest.param(b'"echo_check"', 'expected an object with a "job_type"', id="string"),
    pytest.param(b'{"job_type": 5}', 'expected an object with a "job_type"', id="type-not-string"),
    pytest.param(b'{"job_type": "echo_check", "paylaod": {}}', "unknown field(s) paylaod", id="typo"),
    pytest.param(b'{"job_type": "echo_check", "payload": {"x": NaN}}', "not JSON-serialisable", id="nan"),
    pytest.param(b'{"job_type": "echo_check", "payload": 1e999}', "not JSON-serialisable", id="infinity"),
    pytest.param(b'{"job_type": "echo_check", "payload": "\\u0000"}', "NUL", id="nul"),
    pytest.param(b'{"job_type": "echo_check", "payload": "\\ud800"}', "not valid Unicode", id="lone-surrogate"),
    pytest.param(b'{"job_type": "echo\xff\xfe"}', "not valid UTF-8", id="invalid-utf8"),
    pytest.param(b'{"job_type": "echo_check", "payload": ' + b"[" * 3000 + b"]" * 3000 + b"}",
                 "nested too deeply", id="deep"),
    pytest.param(b'{"job_type": "echo_check", "priority": 2147483648}', "priority must be an integer", id="priority"),
    pytest.param(b'{"job_type": "echo_check", "priority": "high"}', "priority must be an integer", id="priority-text"),
    pytest.param(b'{"job_type": "echo_check", "max_attempts": true}', "max_attempts must be an integer", id="bool"),
    pytest.param(b'{"job_type": "echo_check", "in": "soon"}', "delay", id="delay"),
    pytest.param(b'{"job_type": "echo_check", "run_at": "yesterday"}', "run_at", id="run-at"),
    pytest.param(b'{"job_type": "echo_check", "in": "1s", "run_at": "2030-01-01T00:00:00Z"}', "not both",
                 id="both-times"),
    pytest.param(b'{"job_type": "echo_check", "queue": ""}', "queue must be a non-empty string", id="empty-queue"),
    pytest.param(b'{"job_type": "echo_check", "unique_key": ["a"]}', "unique_key must be", id="key-list"),
    pytest.param(b"\x00\x00\x00", "not valid JSON", id="binary"),
]


@pytest.mark.parametrize("bad, needle", MALFORMED)
def test_enqueue_stdin_refuses_a_malformed_line_all_or_nothing_naming_it(make_config, db, bad, needle):
    config = config_for(make_config)
    data = (GOOD * 3).encode() + bad + b"\n" + GOOD.encode()
    out = subprocess.run([*JOBSUPERVISOR, "-c", str(config), "enqueue", "-"], input=data, capture_output=True,
                         env=cli_env(), timeout=60)
    stderr = out.stderr.decode("utf-8", "replace")
    assert out.returncode == 2, (out.returncode, stderr)
    assert stderr.startswith("jobsupervisor: stdin line 4: ") and needle in stderr, stderr
    assert stderr.count("\n") == 1 and "Traceback" not in stderr
    assert "nothing enqueued" in stderr
    assert db.execute("SELECT count(*) FROM jobs").fetchone()[0] == 0


def test_enqueue_stdin_takes_a_bom_crlf_blank_lines_and_odd_unicode(make_config, db):
    config = config_for(make_config)
    data = ("\ufeff" + GOOD.replace("\n", "\r\n") + "\r\n   \n" + json.dumps(
        {"job_type": "echo_check", "payload": {"value": ODD, "ascii": json.dumps(ODD)}}) + "\n").encode()
    out = subprocess.run([*JOBSUPERVISOR, "-c", str(config), "enqueue", "-"], input=data, capture_output=True,
                         env=cli_env(), timeout=60)
    assert out.returncode == 0, out.stderr
    assert db.execute("SELECT count(*) FROM jobs").fetchone()[0] == 2
    assert db.execute("SELECT payload->'value' FROM jobs ORDER BY id DESC LIMIT 1").fetchone()[0] == ODD


# --- config files with every wrong type -----------------------------------------------------------
WRONG_VALUES = [True, 0, -1, 2**70, 1.5, "", "x" * 10_000, "nonsense", [], ["a", ["b"]], {}, {"a": {"b": 1}},
                None, "${NO_SUCH_VARIABLE_HERE}", "\u202e\x07"]


def _set_key(key: str, value) -> dict:
    """{'children': {'max': value}} for 'children.max'; jobs.*/schedules[] get one item."""
    data: dict = {}
    node = data
    parts = key.split(".")
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        if part == "*":
            continue
        if part.endswith("[]"):
            item = {"name": "s", "cron": "* * * * *", "job": "quick"}
            node[part[:-2]] = [item]
            node = item
            continue
        if last:
            node[part] = value
        elif i + 1 < len(parts) and parts[i + 1] == "*":
            node[part] = {"quick": {}}
            node = node[part]["quick"]
        else:
            node = node.setdefault(part, {})
    return data


def test_every_config_key_with_every_wrong_type_is_one_clear_error(tmp_path):
    """Each declared key × each value of a wrong type: either accepted (the value is valid for
    it) or a ConfigError naming the file and the key; never any other exception."""
    from supervisor.config import SETTINGS, load_config
    from supervisor.errors import ConfigError

    refused = accepted = 0
    path = tmp_path / "config.yaml"
    for setting in SETTINGS:
        shown_key = setting.key.replace(".*", ".quick").replace("[]", "[0]")
        for value in WRONG_VALUES:
            path.write_text(yaml.safe_dump(_set_key(setting.key, value)))
            try:
                load_config(str(path), env={})
                accepted += 1
            except ConfigError as error:
                message = str(error)
                assert "\n" not in message and message.startswith(str(path)), (setting.key, value, message)
                top = shown_key.split(".")[0].split("[")[0]
                assert top in message, (setting.key, value, message)
                refused += 1
            except Exception as error:  # noqa: BLE001 - the point of the test
                pytest.fail(f"{setting.key} = {value!r}: {type(error).__name__}: {error}")
    assert refused > 5 * len(SETTINGS), (refused, accepted)


@pytest.mark.parametrize("text", [
    "children: {max: [1, 2]}",
    "poll_interval: {a: 1}",
    "jobs: {quick: {timeout: [1]}}",
    "schedules: [{name: x, cron: [1], job: quick}]",
    "web: {auth: {basic: {user: [a], password: b}}}",
    "queues: {a: {concurrency: {x: 1}}}",
    "imports: [[a]]",
    "database: {dsn: {host: x}}",
    "- just\n- a list",
    "a: !!python/object/apply:os.system ['echo pwned']",
    "children: &a {max: *a}",
])
def test_config_mistakes_via_the_command_are_one_line_exit_2(tmp_path, text):
    path = tmp_path / "config.yaml"
    path.write_text(text)
    out = run_cli("-c", str(path), "status")
    assert out.returncode == 2, (out.returncode, out.stderr)
    assert out.stderr.startswith("jobsupervisor: ") and out.stderr.count("\n") == 1, out.stderr
    assert "Traceback" not in out.stderr and "pwned" not in out.stdout


# --- a handler printing megabytes -------------------------------------------------------------------
def test_handler_printing_megabytes_keeps_logs_json_and_the_loop_responsive(db, make_config, start_supervisor):
    sup = start_supervisor(config_for(make_config, {"children": {"min": 2, "max": 2}}))
    serve_one(db, sup)
    loud = enqueue(db, "loud", {"mb": 16})
    wait_for(lambda: sup.find("child_output"), 20, message="the handler is printing")
    # While it prints, the loop still claims, hands out and heartbeats.
    started = time.monotonic()
    quick = enqueue(db, "quick")
    wait_status(db, quick, "succeeded", timeout=10)
    assert time.monotonic() - started < 3.0, "the supervisor's loop starved while a child printed"
    age = db.execute("SELECT extract(epoch FROM now() - heartbeat_at) FROM jobs_runners").fetchone()[0]
    assert age < 3.0, f"heartbeat {age:.1f}s old while a child printed"
    wait_status(db, loud, "succeeded", timeout=60)
    sup.wait_event("job_succeeded", job_id=loud, timeout=30)
    assert_invariants(db, [loud, quick])
    count = assert_log_is_strict_json(sup)
    outputs = sup.find("child_output")
    assert count > 16_000 and len(outputs) > 16_000
    assert any("invalid utf-8" in e.get("line", "") for e in outputs)
    assert not [e for e in sup.events() if e.get("event") == "job_succeeded" and e.get("job_id") == -1], \
        "a handler's printed JSON was taken for the supervisor's own record"


def test_logs_on_a_full_disk_lose_no_job_and_a_drain_still_exits_0(db, make_config):
    """The supervisor's stderr and stdout on /dev/full (every write fails with ENOSPC, as when
    the log volume fills up): it and its children go on running jobs — successes, failures
    with retries, children printing — and SIGINT still drains and exits 0."""
    import signal

    config = make_config({"children": {"min": 2, "max": 2}})
    with open("/dev/full", "wb") as full:
        proc = subprocess.Popen([*JOBSUPERVISOR, "-c", str(config)], stdout=full, stderr=full, env=cli_env(),
                                start_new_session=True)
    try:
        ids = enqueue_many(db, [{"job_type": "noop"} for _ in range(300)]
                           + [{"job_type": "chatty", "payload": {"lines": 50, "every": 0}} for _ in range(3)]
                           + [{"job_type": "fail", "payload": {"tag": "full"}}])
        wait_for(lambda: statuses(db) == {"succeeded": len(ids) - 1, "failed": 1}, 60,
                 message=f"every job ended ({statuses(db)})")
        failed = job_row(db, ids[-1])
        assert failed["attempts"] == 3 and "ValueError: boom full" in failed["last_error"]
        assert proc.poll() is None
        proc.send_signal(signal.SIGINT)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
