"""The ``jobsupervisor`` command line (SPEC §5), run as a real subprocess against a real Postgres."""

from __future__ import annotations

import json
import subprocess
from datetime import datetime, timedelta, timezone
from pathlib import Path

import psycopg
import pytest
import yaml

from conftest import cli_env, job_row, run_cli, with_dbname
from supervisor import __version__
from supervisor.config import load_config
from supervisor.migrate import available


def assert_user_error(result: subprocess.CompletedProcess, code: int, *needles: str) -> str:
    """Exit ``code``, exactly one non-empty line on stderr, no traceback; returns that line."""
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].strip(), result.stderr
    assert "Traceback" not in result.stderr and "Traceback" not in result.stdout
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


def ok(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 0, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    return result.stdout


@pytest.fixture
def cfg(make_config) -> str:
    return str(make_config())


def cli(cfg: str, *args: str, **kwargs) -> subprocess.CompletedProcess:
    return run_cli("-c", cfg, *args, **kwargs)


def add(db: psycopg.Connection, job_type: str = "noop", status: str = "queued", queue: str = "default",
        run_at: str = "now()", **extra) -> int:
    finished = "now()" if status in ("succeeded", "failed", "cancelled") else "NULL"
    locked = "'host:1/2'" if status == "running" else "NULL"
    return db.execute(
        f"INSERT INTO jobs (job_type, status, queue, run_at, finished_at, locked_by, locked_at, attempts, last_error)"
        f" VALUES (%s, %s, %s, {run_at}, {finished}, {locked}, CASE WHEN {locked} IS NULL THEN NULL ELSE now() END,"
        f" %s, %s) RETURNING id",
        (job_type, status, queue, extra.get("attempts", 0), extra.get("last_error"))).fetchone()[0]


# --- migrate ---------------------------------------------------------------------------------
def test_migrate_fresh_then_up_to_date(empty_dsn, tmp_path: Path):
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({"database": {"dsn": empty_dsn}}))
    out = ok(run_cli("-c", str(config), "migrate"))
    assert [line for line in out.splitlines() if line.startswith("applied")] == [
        f"applied {m.version:04d}_{m.name} to table jobs" for m in available()]
    out = ok(run_cli("-c", str(config), "migrate"))
    assert "up to date" in out and "applied" not in out
    with psycopg.connect(empty_dsn) as conn:
        assert conn.execute("SELECT to_regclass('jobs') IS NOT NULL AND to_regclass('jobs_runners') IS NOT NULL"
                            ).fetchone()[0]


# --- enqueue ---------------------------------------------------------------------------------
def test_enqueue_prints_the_id(cfg, db):
    out = ok(cli(cfg, "enqueue", "noop", '{"a":1}'))
    job_id = int(out.strip())
    row = job_row(db, job_id)
    assert (row["job_type"], row["payload"], row["status"], row["queue"], row["priority"]) == (
        "noop", {"a": 1}, "queued", "default", 0)
    assert row["run_at"] == row["created_at"]
    bare = int(ok(cli(cfg, "enqueue", "noop")).strip())
    assert job_row(db, bare)["payload"] == {}


def test_enqueue_options_are_reflected_in_the_row(cfg, db):
    job_id = int(ok(cli(cfg, "enqueue", "noop", '{"b":2}', "--queue", "q1", "--priority", "7",
                        "--max-attempts", "3", "--run-at", "2031-02-03T04:05:06+02:00")).strip())
    row = job_row(db, job_id)
    assert (row["queue"], row["priority"], row["max_attempts"]) == ("q1", 7, 3)
    assert row["run_at"] == datetime(2031, 2, 3, 2, 5, 6, tzinfo=timezone.utc)

    naive = int(ok(cli(cfg, "enqueue", "noop", "--run-at", "2031-02-03T04:05:06")).strip())
    assert job_row(db, naive)["run_at"] == datetime(2031, 2, 3, 4, 5, 6, tzinfo=timezone.utc)

    later = job_row(db, int(ok(cli(cfg, "enqueue", "noop", "--in", "5m")).strip()))
    assert later["run_at"] - later["created_at"] == timedelta(minutes=5)

    first = ok(cli(cfg, "enqueue", "noop", '{"n":1}', "--unique-key", "daily-report"))
    assert job_row(db, int(first))["unique_key"] == "daily-report"
    second = cli(cfg, "enqueue", "noop", '{"n":2}', "--unique-key", "daily-report")
    assert second.returncode == 0
    assert second.stdout == first
    note = second.stderr.splitlines()
    assert len(note) == 1 and "daily-report" in note[0] and first.strip() in note[0]
    assert db.execute("SELECT count(*) FROM jobs WHERE unique_key = 'daily-report'").fetchone()[0] == 1


def test_enqueue_takes_queue_and_priority_from_config(make_config, db):
    config = make_config({"jobs": {"noop": {"queue": "configured", "priority": 4}}})
    row = job_row(db, int(ok(cli(str(config), "enqueue", "noop")).strip()))
    assert (row["queue"], row["priority"]) == ("configured", 4)
    row = job_row(db, int(ok(cli(str(config), "enqueue", "noop", "--priority", "1")).strip()))
    assert (row["queue"], row["priority"]) == ("configured", 1)


ENQUEUE_USAGE_ERRORS = [
    (["noop", "{not json"], "PAYLOAD_JSON"),
    (["noop", "{'a': 1}"], "PAYLOAD_JSON"),
    (["noop", "--in", "5 parsecs"], "--in"),
    (["noop", "--run-at", "next tuesday"], "--run-at"),
    (["noop", "--run-at", "2031-01-01T00:00:00", "--in", "5m"], "--in"),
    (["noop", "--max-attempts", "0"], "--max-attempts"),
    (["noop", "--priority", "high"], "--priority"),
    (["noop", "--priority", "99999999999"], "priority"),
    (["noop", '{"s": "\\u0000"}'], "NUL"),
    (["noop", "--queue", ""], "queue"),
]


def test_enqueue_usage_errors(cfg, db):
    for args, needle in ENQUEUE_USAGE_ERRORS:
        assert_user_error(cli(cfg, "enqueue", *args), 2, needle)
    assert db.execute("SELECT count(*) FROM jobs").fetchone()[0] == 0


def test_enqueue_from_stdin_in_one_transaction(cfg, db):
    lines = [
        json.dumps({"job_type": "noop", "payload": {"i": 0}}),
        "",
        json.dumps({"job_type": "effect", "payload": {"i": 1}, "queue": "q2", "priority": 3}),
        json.dumps({"job_type": "noop", "payload": {"i": 2}, "in": "1h"}),
        json.dumps({"job_type": "noop", "payload": {"i": 3}, "unique_key": "u"}),
        json.dumps({"job_type": "noop", "payload": {"i": 4}, "unique_key": "u"}),
    ]
    result = cli(cfg, "enqueue", "-", input="\n".join(lines) + "\n")
    out = ok(result).splitlines()
    assert len(out) == 5
    ids = [int(line.split()[0]) for line in out]
    assert ids[3] == ids[4] and "existing" in out[4]
    assert [job_row(db, i)["payload"] for i in ids[:4]] == [{"i": 0}, {"i": 1}, {"i": 2}, {"i": 3}]
    row = job_row(db, ids[1])
    assert (row["job_type"], row["queue"], row["priority"]) == ("effect", "q2", 3)
    row = job_row(db, ids[2])
    assert row["run_at"] - row["created_at"] == timedelta(hours=1)
    # One transaction: every row has the same now().
    assert db.execute("SELECT count(*), count(DISTINCT created_at) FROM jobs").fetchone() == (4, 1)


BAD_LINES = [
    '{"job_type": "noop", "payload": ',                     # not JSON
    '["noop"]',                                              # not an object
    '{"payload": {}}',                                       # no job_type
    '{"job_type": "noop", "colour": "blue"}',                # unknown field
    '{"job_type": "noop", "in": "5 parsecs"}',               # bad duration
    '{"job_type": "noop", "priority": "high"}',              # bad priority
    '{"job_type": "noop", "run_at": "2031-01-01", "in": "5m"}',  # both times
    '{"job_type": "noop", "payload": {"s": "\\u0000"}}',     # NUL
]


def test_enqueue_from_stdin_bad_line_inserts_nothing(cfg, db):
    good = json.dumps({"job_type": "noop"})
    for line3 in BAD_LINES:
        result = cli(cfg, "enqueue", "-", input=f"{good}\n{good}\n{line3}\n{good}\n")
        assert_user_error(result, 2, "line 3")
        assert result.stdout == ""
    assert db.execute("SELECT count(*) FROM jobs").fetchone()[0] == 0


LONG_TRACEBACK = "Traceback (most recent call last):\n" + "".join(
    f'  File "/srv/app/module{i}.py", line {i}, in function_{i}\n    call_something_else({i})\n' for i in range(20)
) + "ValueError: boom\n"


# --- status, jobs, show ----------------------------------------------------------------------
@pytest.fixture
def populated(db):
    ids = {
        "q_old": add(db, "noop", "queued", run_at="now() - interval '2 hours'"),
        "q_new": add(db, "noop", "queued", queue="emails"),
        "future": add(db, "effect", "queued", run_at="now() + interval '1 day'"),
        "retry": add(db, "effect", "retry", queue="emails", run_at="now() - interval '1 hour'"),
        "running": add(db, "sleep", "running", attempts=1),
        "ok1": add(db, "noop", "succeeded", attempts=1),
        "ok2": add(db, "sleep", "succeeded", queue="emails", attempts=1),
        "failed": add(db, "effect", "failed", attempts=3, last_error=LONG_TRACEBACK),
        "cancelled": add(db, "noop", "cancelled"),
    }
    db.execute("""INSERT INTO jobs_runners (id, host, pid, children, busy, queues, job_types, version)
                  VALUES ('host:1', 'host', 1, 4, 1, NULL, '{noop,sleep}', '0.1.0')""")
    return ids


def test_status_text_and_json(cfg, populated):
    out = ok(cli(cfg, "status"))
    assert "queued 3" in out and "running 1" in out and "succeeded 2" in out
    assert "retry 1" in out and "failed 1" in out and "cancelled 1" in out
    assert f"noop#{populated['q_old']}" in out  # the oldest waiting job
    assert "runner host:1" in out
    assert "no live runner handles: effect" in out  # waiting types that no runner handles are pointed out

    data = json.loads(ok(cli(cfg, "status", "--json")))
    assert data["by_status"] == {"queued": 3, "running": 1, "succeeded": 2, "retry": 1, "failed": 1, "cancelled": 1}
    assert data["by_type"]["noop"]["queued"] == 2 and data["by_type"]["noop"]["succeeded"] == 1
    assert data["by_type"]["effect"] == {"queued": 1, "running": 0, "succeeded": 0, "retry": 1, "failed": 1,
                                         "cancelled": 0}
    assert data["by_queue"]["emails"]["queued"] == 1 and data["by_queue"]["emails"]["retry"] == 1
    assert data["by_queue"]["default"]["running"] == 1
    assert data["oldest_waiting"]["id"] == populated["q_old"]
    assert 7100 < data["oldest_waiting"]["waiting_seconds"] < 7300
    assert [(r["host"], r["pid"], r["children"], r["busy"]) for r in data["runners"]] == [("host", 1, 4, 1)]
    assert data["unhandled_types"] == ["effect"]


def test_status_of_empty_table(cfg):
    out = ok(cli(cfg, "status"))
    assert "queued 0" in out and "oldest waiting job: none" in out and "runners: none" in out
    data = json.loads(ok(cli(cfg, "status", "--json")))
    assert data["oldest_waiting"] is None and data["runners"] == [] and sum(data["by_status"].values()) == 0


def test_jobs_filters(cfg, db, populated):
    def listed(*args: str) -> list[int]:
        return [j["id"] for j in json.loads(ok(cli(cfg, "jobs", "--json", *args)))]

    everything = sorted(populated.values(), reverse=True)
    assert listed() == everything
    assert listed("--status", "queued") == sorted([populated[k] for k in ("q_old", "q_new", "future")], reverse=True)
    assert listed("--type", "effect") == sorted([populated[k] for k in ("future", "retry", "failed")], reverse=True)
    assert listed("--queue", "emails") == sorted([populated[k] for k in ("q_new", "retry", "ok2")], reverse=True)
    assert listed("--queue", "emails", "--type", "effect", "--status", "retry") == [populated["retry"]]
    assert listed("--limit", "2") == everything[:2]
    assert listed("--limit", "2", "--before", str(everything[1])) == everything[2:4]
    assert listed("--type", "nothing_of_this_type") == []

    db.execute("UPDATE jobs SET last_error = 'recovered: runner h:1 is gone (attempt 1)' || E'\\n' || 'more'"
               " WHERE id = %s", (populated["ok1"],))
    rows = {j["id"]: j for j in json.loads(ok(cli(cfg, "jobs", "--json")))}
    assert rows[populated["failed"]]["error_summary"] == "ValueError: boom"
    assert rows[populated["ok1"]]["error_summary"] == "recovered: runner h:1 is gone (attempt 1)"
    assert rows[populated["q_old"]]["error_summary"] is None
    text = ok(cli(cfg, "jobs", "--status", "failed")).splitlines()
    assert [int(line.split()[0]) for line in text[1:]] == [populated["failed"]]
    assert "ValueError: boom" in text[1] and "effect" in text[1]
    assert_user_error(cli(cfg, "jobs", "--status", "sleeping"), 2, "--status")
    assert_user_error(cli(cfg, "jobs", "--limit", "-1"), 2, "--limit")


def test_show(cfg, db, populated):
    failed = populated["failed"]
    out = ok(cli(cfg, "show", str(failed)))
    assert f"id: {failed}" in out and "effect" in out and "failed" in out and "ValueError: boom" in out
    job_id = int(ok(cli(cfg, "enqueue", "noop", '{"who": "w\\u00f6rld", "n": [1, 2]}')).strip())
    data = json.loads(ok(cli(cfg, "show", str(job_id), "--json")))
    assert data["id"] == job_id and data["payload"] == {"who": "w\u00f6rld", "n": [1, 2]}
    assert data["status"] == "queued" and data["job_type"] == "noop"

    assert_user_error(cli(cfg, "show", "999999"), 1, "999999")
    assert_user_error(cli(cfg, "show", "abc"), 2, "abc")


# --- retry, cancel, run-now, delete -----------------------------------------------------------
def status_of(db, job_id: int) -> str | None:
    row = db.execute("SELECT status FROM jobs WHERE id = %s", (job_id,)).fetchone()
    return row[0] if row else None


def test_retry(cfg, db, populated):
    p = populated
    out = ok(cli(cfg, "retry", str(p["failed"]), str(p["cancelled"])))
    assert f"job {p['failed']}" in out and f"job {p['cancelled']}" in out
    for key in ("failed", "cancelled"):
        row = job_row(db, p[key])
        assert row["status"] == "queued" and row["finished_at"] is None
        assert db.execute("SELECT %s::timestamptz <= now()", (row["run_at"],)).fetchone()[0]
    for key in ("q_old", "running", "ok1", "retry"):
        assert_user_error(cli(cfg, "retry", str(p[key])), 1, str(p[key]))
    assert status_of(db, p["ok1"]) == "succeeded" and status_of(db, p["running"]) == "running"


def test_cancel(cfg, db, populated):
    p = populated
    ok(cli(cfg, "cancel", str(p["q_old"]), str(p["retry"]), str(p["future"])))
    assert [status_of(db, p[k]) for k in ("q_old", "retry", "future")] == ["cancelled"] * 3
    assert job_row(db, p["q_old"])["finished_at"] is not None
    for key in ("running", "ok1", "failed", "cancelled"):
        before = status_of(db, p[key])
        assert_user_error(cli(cfg, "cancel", str(p[key])), 1, str(p[key]))
        assert status_of(db, p[key]) == before


def test_run_now(cfg, db, populated):
    p = populated
    ok(cli(cfg, "run-now", str(p["future"])))
    row = job_row(db, p["future"])
    assert row["status"] == "queued"
    assert db.execute("SELECT %s::timestamptz <= now()", (row["run_at"],)).fetchone()[0]
    for key in ("running", "ok1", "failed"):
        assert_user_error(cli(cfg, "run-now", str(p[key])), 1, str(p[key]))


def test_delete(cfg, db, populated):
    p = populated
    ok(cli(cfg, "delete", str(p["ok1"]), str(p["failed"]), str(p["q_new"])))
    assert [status_of(db, p[k]) for k in ("ok1", "failed", "q_new")] == [None] * 3
    assert_user_error(cli(cfg, "delete", str(p["running"])), 1, str(p["running"]))
    assert status_of(db, p["running"]) == "running"
    assert_user_error(cli(cfg, "delete", "999999"), 1, "999999")


def test_actions_change_what_they_can_and_name_every_refusal(cfg, db, populated):
    p = populated
    result = cli(cfg, "cancel", str(p["q_new"]), str(p["ok1"]), "999999", str(p["running"]))
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert f"job {p['q_new']}" in result.stdout
    refusals = result.stderr.splitlines()
    assert len(refusals) == 3
    for job_id, line in zip((p["ok1"], 999999, p["running"]), refusals):
        assert str(job_id) in line
    assert status_of(db, p["q_new"]) == "cancelled"
    assert_user_error(cli(cfg, "retry"), 2)
    assert_user_error(cli(cfg, "cancel", "x"), 2, "x")


# --- where the config and the DSN come from ---------------------------------------------------
def test_config_option_before_and_after_the_subcommand(cfg):
    before = run_cli("-c", cfg, "status", "--json")
    after = run_cli("status", "--json", "-c", cfg)
    long_form = run_cli("status", "--config", cfg, "--json")
    assert json.loads(ok(before)) == json.loads(ok(after)) == json.loads(ok(long_form))
    ok(run_cli("enqueue", "noop", "-c", cfg))


def test_config_from_environment(cfg, db, tmp_path: Path):
    env = cli_env(JOBSUPERVISOR_CONFIG=cfg)
    job_id = int(ok(run_cli("enqueue", "noop", env=env)).strip())
    assert job_row(db, job_id)["job_type"] == "noop"
    # -c wins over $JOBSUPERVISOR_CONFIG.
    broken = tmp_path / "broken.yaml"
    broken.write_text("nonsense_key: 1\n")
    assert_user_error(run_cli("status", env=cli_env(JOBSUPERVISOR_CONFIG=str(broken))), 2, "nonsense_key")
    ok(run_cli("-c", cfg, "status", env=cli_env(JOBSUPERVISOR_CONFIG=str(broken))))


def test_dsn_from_environment_when_config_has_none(dsn, db, tmp_path: Path):
    config = tmp_path / "nodsn.yaml"
    config.write_text(yaml.safe_dump({"database": {"table": "jobs"}, "imports": ["jobhandlers"]}))
    env = cli_env(JOBSUPERVISOR_DSN=dsn)
    job_id = int(ok(run_cli("-c", str(config), "enqueue", "noop", env=env)).strip())
    assert job_row(db, job_id)["job_type"] == "noop"
    assert json.loads(ok(run_cli("status", "--json", env=env)))["by_status"]["queued"] == 1  # no config at all
    # A dsn in the config wins over the environment.
    config.write_text(yaml.safe_dump({"database": {"dsn": dsn}}))
    ok(run_cli("-c", str(config), "status", env=cli_env(JOBSUPERVISOR_DSN="postgresql://u:sekrit@127.0.0.1:1/x")))


# --- errors ----------------------------------------------------------------------------------
@pytest.mark.parametrize("text, needle, command", [
    ("database:\n  dsn: postgresql://x@127.0.0.1/x\nchildren:\n  maxx: 3\n", "children.maxx", ["status"]),
    ("poll_interval: 5 parsecs\n", "poll_interval", ["migrate"]),
    ("children: [1, 2\n", "bad.yaml", ["enqueue", "noop"]),
    ("children:\n\tmax: 3\n", "bad.yaml", ["jobs"]),
    ("lock_timeout: -5s\n", "lock_timeout", ["cancel", "1"]),
    ("jobs:\n  noop:\n    timeout: forever\n", "jobs.noop.timeout", ["status"]),
    ("- just\n- a list\n", "bad.yaml", ["migrate"]),
])
def test_config_errors(tmp_path: Path, text, needle, command):
    config = tmp_path / "bad.yaml"
    config.write_text(text)
    assert_user_error(run_cli("-c", str(config), *command), 2, needle)


def test_missing_config_file(tmp_path: Path):
    missing = str(tmp_path / "nope.yaml")
    assert_user_error(run_cli("-c", missing, "status"), 2, "nope.yaml")
    assert_user_error(run_cli("status", env=cli_env(JOBSUPERVISOR_CONFIG=missing)), 2, "nope.yaml")


@pytest.mark.parametrize("command", [["status"], ["migrate"], ["enqueue", "noop", "{}"], ["show", "1"],
                                     ["jobs"], ["retry", "1"]])
def test_unreachable_database_hides_the_password(tmp_path: Path, command):
    """Nothing listens there: a runtime failure (exit 1; the server may be restarting)."""
    bad = "postgresql://u:sekrit@127.0.0.1:1/x"
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({"database": {"dsn": bad}}))
    for result in (run_cli("-c", str(config), *command),
                   run_cli(*command, env=cli_env(JOBSUPERVISOR_DSN=bad))):
        line = assert_user_error(result, 1, "127.0.0.1")
        assert "sekrit" not in result.stderr and "sekrit" not in result.stdout
        assert "connect" in line


def test_a_wrong_dsn_is_a_configuration_error(dsn, tmp_path: Path):
    """The server answers but refuses the DSN (no such database), or libpq cannot parse it:
    exit 2, as for any other configuration mistake."""
    for bad, needle in ((with_dbname(dsn, "no_such_database_here"), "no_such_database_here"),
                        ("postgresql://u:pw@127.0.0.1:notaport/x", "port")):
        config = tmp_path / "c.yaml"
        config.write_text(yaml.safe_dump({"database": {"dsn": bad}}))
        line = assert_user_error(run_cli("-c", str(config), "status"), 2, "cannot connect to database")
        assert needle in line, line


def test_missing_schema_says_to_migrate(empty_dsn, tmp_path: Path):
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({"database": {"dsn": empty_dsn}}))
    for command in (["status"], ["jobs"], ["show", "1"], ["enqueue", "noop"], ["cancel", "1"], ["status", "--json"]):
        assert_user_error(run_cli("-c", str(config), *command), 2, "migrate")


def test_usage_errors(cfg):
    assert_user_error(run_cli("-c", cfg, "frobnicate"), 2)
    assert_user_error(run_cli("-c", cfg, "status", "--bogus"), 2, "--bogus")
    assert_user_error(run_cli("-c", cfg, "enqueue"), 2)


# --- config --defaults, --version ------------------------------------------------------------
def test_config_defaults_is_loadable_yaml(tmp_path: Path):
    out = ok(run_cli("config", "--defaults"))
    data = yaml.safe_load(out)
    assert isinstance(data, dict)
    assert data["database"]["table"] == "jobs"
    assert {"database", "children", "gate", "jobs", "poll_interval", "lock_timeout", "retention", "logging",
            "web"} <= set(data)
    path = tmp_path / "defaults.yaml"
    path.write_text(out)
    config = load_config(str(path), env={})
    assert config.database.table == "jobs" and config.children.max == 16


def test_version():
    result = run_cli("--version")
    assert ok(result).strip() == f"jobsupervisor {__version__}"
