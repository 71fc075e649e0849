"""Schema migrations against a real Postgres: the SPEC §2 schema, idempotence, custom and
coexisting tables, concurrent runs, the claim index and the NOTIFY trigger."""

from __future__ import annotations

import subprocess
import threading
from pathlib import Path

import psycopg
import yaml

from conftest import JOBSUPERVISOR, cli_env, run_cli
from supervisor.enqueue import enqueue
from supervisor.migrate import available, latest_version, migrate
from supervisor.queries import channel_name, queries_for

TIMESTAMPTZ = "timestamp with time zone"

# SPEC §2: every column of the jobs table with its type; nothing more, nothing less.
SPEC_JOB_COLUMNS = {
    "id": "bigint",
    "queue": "text",
    "job_type": "text",
    "payload": "jsonb",
    "status": "text",
    "priority": "integer",
    "run_at": TIMESTAMPTZ,
    "attempts": "integer",
    "max_attempts": "integer",
    "last_error": "text",
    "locked_by": "text",
    "locked_at": TIMESTAMPTZ,
    "unique_key": "text",
    "created_at": TIMESTAMPTZ,
    "updated_at": TIMESTAMPTZ,
    "finished_at": TIMESTAMPTZ,
}
NULLABLE_JOB_COLUMNS = {"max_attempts", "last_error", "locked_by", "locked_at", "unique_key", "finished_at"}

# SPEC §2: the runners table holds at least these (extra columns are the implementers' choice).
SPEC_RUNNER_COLUMNS = {
    "host": ("text", "text"),
    "pid": ("integer", "int4"),
    "started_at": (TIMESTAMPTZ, "timestamptz"),
    "heartbeat_at": (TIMESTAMPTZ, "timestamptz"),
    "children": ("integer", "int4"),
    "busy": ("integer", "int4"),
    "queues": ("ARRAY", "_text"),
    "version": ("text", "text"),
}


def columns(conn: psycopg.Connection, table: str) -> dict[str, dict]:
    rows = conn.execute(
        "SELECT column_name, data_type, udt_name, is_nullable, column_default, is_identity"
        " FROM information_schema.columns WHERE table_schema = 'public' AND table_name = %s"
        " ORDER BY ordinal_position", (table,)).fetchall()
    return {name: {"type": dtype, "udt": udt, "nullable": nullable == "YES", "default": default,
                   "identity": identity == "YES"}
            for name, dtype, udt, nullable, default, identity in rows}


def triggers(conn: psycopg.Connection, table: str) -> list[tuple]:
    return conn.execute(
        "SELECT trigger_name, event_manipulation, action_timing, action_orientation"
        " FROM information_schema.triggers WHERE event_object_table = %s ORDER BY trigger_name",
        (table,)).fetchall()


def indexes(conn: psycopg.Connection, table: str) -> dict[str, str]:
    return dict(conn.execute("SELECT indexname, indexdef FROM pg_indexes WHERE tablename = %s", (table,)).fetchall())


def schema_snapshot(conn: psycopg.Connection, table: str) -> dict:
    return {
        "jobs": columns(conn, table),
        "runners": columns(conn, f"{table}_runners"),
        "migrations": columns(conn, f"{table}_migrations"),
        "indexes": indexes(conn, table),
        "runner_indexes": indexes(conn, f"{table}_runners"),
        "triggers": triggers(conn, table),
        "constraints": sorted(conn.execute(
            "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint WHERE conrelid = %s::regclass",
            (table,)).fetchall()),
        "functions": sorted(conn.execute(
            "SELECT proname, md5(prosrc) FROM pg_proc WHERE proname LIKE %s", (f"{table}%",)).fetchall()),
    }


def hear(listener: psycopg.Connection, expected: int, quiet: float = 0.2) -> list:
    """The next ``expected`` notifications, then make sure nothing more arrives for ``quiet`` s."""
    heard = list(listener.notifies(timeout=5.0, stop_after=expected)) if expected else []
    heard += list(listener.notifies(timeout=quiet))
    return heard


def migrations_rows(conn: psycopg.Connection, table: str) -> list[tuple]:
    return conn.execute(f'SELECT version, name, applied_at FROM "{table}_migrations" ORDER BY version').fetchall()


def assert_spec_schema(conn: psycopg.Connection, table: str) -> None:
    cols = columns(conn, table)
    assert {name: c["type"] for name, c in cols.items()} == SPEC_JOB_COLUMNS
    assert {name for name, c in cols.items() if c["nullable"]} == NULLABLE_JOB_COLUMNS
    assert cols["id"]["identity"]
    assert conn.execute(
        "SELECT a.attname FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)"
        " WHERE i.indrelid = %s::regclass AND i.indisprimary", (table,)).fetchall() == [("id",)]
    assert cols["queue"]["default"] == "'default'::text"
    assert cols["payload"]["default"] == "'{}'::jsonb"
    assert cols["priority"]["default"] == "0"
    assert cols["attempts"]["default"] == "0"
    assert cols["run_at"]["default"] == "now()"
    assert cols["max_attempts"]["default"] is None

    runners = columns(conn, f"{table}_runners")
    for name, (dtype, udt) in SPEC_RUNNER_COLUMNS.items():
        assert name in runners, f"{table}_runners has no column {name}"
        assert (runners[name]["type"], runners[name]["udt"]) == (dtype, udt), name

    assert triggers(conn, table) == [(f"{table}_notify_insert", "INSERT", "AFTER", "STATEMENT")]

    claim = indexes(conn, table).get(f"{table}_claim_idx")
    assert claim is not None, f"no claim index on {table}"
    assert "(priority DESC, run_at, id)" in claim
    assert "'queued'" in claim and "'retry'" in claim and "WHERE" in claim

    assert [(v, n) for v, n, _ in migrations_rows(conn, table)] == [(m.version, m.name) for m in available()]


def test_migrate_from_scratch_creates_the_spec_schema(empty_dsn):
    with psycopg.connect(empty_dsn, autocommit=True) as conn:
        applied = migrate(conn, "jobs")
        assert [m.version for m in applied] == [m.version for m in available()]
        assert applied[-1].version == latest_version()
        assert_spec_schema(conn, "jobs")
        # The defaults make a plain INSERT a complete, waiting job.
        row = conn.execute("INSERT INTO jobs (job_type) VALUES ('x')"
                           " RETURNING status, queue, payload, priority, attempts, run_at <= now()").fetchone()
        assert row == ("queued", "default", {}, 0, 0, True)


def test_migrate_again_is_a_noop_and_keeps_data(empty_dsn):
    with psycopg.connect(empty_dsn, autocommit=True) as conn:
        migrate(conn, "jobs")
        job_id = enqueue(conn, "keep_me", {"n": 1}, unique_key="k")
        conn.execute("INSERT INTO jobs_runners (id, host, pid) VALUES ('r1', 'h', 1)")
        before = schema_snapshot(conn, "jobs")
        applied_before = migrations_rows(conn, "jobs")

        assert migrate(conn, "jobs") == []
        assert migrate(conn, "jobs") == []

        assert schema_snapshot(conn, "jobs") == before
        assert migrations_rows(conn, "jobs") == applied_before
        assert conn.execute("SELECT id, job_type, payload, unique_key FROM jobs").fetchall() == [
            (job_id, "keep_me", {"n": 1}, "k")]
        assert conn.execute("SELECT id FROM jobs_runners").fetchall() == [("r1",)]


def test_custom_table_via_cli_coexists_with_default_table(dsn, tmp_path: Path):
    """`database.table: other_jobs` gets its own table, runners, migrations, trigger and
    channel; jobs in one table are invisible and unclaimable from the other."""
    config = tmp_path / "other.yaml"
    config.write_text(yaml.safe_dump({"database": {"dsn": dsn, "table": "other_jobs"}}))
    result = run_cli("-c", str(config), "migrate")
    assert result.returncode == 0, result.stderr
    assert "other_jobs" in result.stdout

    with psycopg.connect(dsn, autocommit=True) as conn, psycopg.connect(dsn, autocommit=True) as listener:
        assert_spec_schema(conn, "jobs")
        assert_spec_schema(conn, "other_jobs")
        assert channel_name("jobs") != channel_name("other_jobs")
        listener.execute(f'LISTEN "{channel_name("jobs")}"')
        listener.execute(f'LISTEN "{channel_name("other_jobs")}"')

        other_id = enqueue(conn, "noop", {"where": "other"}, table="other_jobs")
        heard = [n.channel for n in hear(listener, 1)]
        assert heard == [channel_name("other_jobs")]
        assert conn.execute("SELECT count(*) FROM jobs").fetchone()[0] == 0
        status_line = run_cli("-c", str(config), "jobs", "--json")
        assert status_line.returncode == 0, status_line.stderr
        assert [j["id"] for j in yaml.safe_load(status_line.stdout)] == [other_id]

        claim = {"n": 10, "types": ["noop"], "queues": None, "locks": [f"r/{i}" for i in range(10)]}
        with conn.transaction():
            assert conn.execute(queries_for("jobs").jobs_claim, claim).fetchall() == []
        jobs_id = enqueue(conn, "noop", {"where": "jobs"}, table="jobs")
        heard = [n.channel for n in hear(listener, 1)]
        assert heard == [channel_name("jobs")]
        assert conn.execute("SELECT id FROM other_jobs").fetchall() == [(other_id,)]

        with conn.transaction():
            claimed = conn.execute(queries_for("other_jobs").jobs_claim, claim).fetchall()
        assert [row[0] for row in claimed] == [other_id]
        with conn.transaction():
            claimed = conn.execute(queries_for("jobs").jobs_claim, claim).fetchall()
        assert [row[0] for row in claimed] == [jobs_id]
        # Nothing else was heard: each insert notified its own channel only.
        assert hear(listener, 0) == []

    # A second migrate of each table is a no-op.
    again = run_cli("-c", str(config), "migrate")
    assert again.returncode == 0 and "up to date" in again.stdout


def test_concurrent_migrations_all_succeed(empty_dsn, tmp_path: Path):
    """Two CLI processes started at once, and four threads per table, all succeed."""
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({"database": {"dsn": empty_dsn}}))
    procs = [subprocess.Popen([*JOBSUPERVISOR, "-c", str(config), "migrate"], env=cli_env(),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outputs = [p.communicate(timeout=60) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    assert sum(out.count("applied ") for out, _ in outputs) == len(available())
    assert sum("up to date" in out for out, _ in outputs) == 1

    tables = ["t_alpha", "t_beta"]
    barrier = threading.Barrier(4 * len(tables))
    results: dict[tuple[str, int], object] = {}

    def run(table: str, n: int) -> None:
        try:
            with psycopg.connect(empty_dsn, autocommit=True) as conn:
                barrier.wait(timeout=30)
                results[(table, n)] = migrate(conn, table)
        except BaseException as error:  # noqa: BLE001 - reported below
            results[(table, n)] = error

    threads = [threading.Thread(target=run, args=(t, n)) for t in tables for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    errors = {k: v for k, v in results.items() if isinstance(v, BaseException)}
    assert not errors
    assert len(results) == 4 * len(tables)
    with psycopg.connect(empty_dsn, autocommit=True) as conn:
        for table in ["jobs", *tables]:
            assert_spec_schema(conn, table)
        for table in tables:
            assert sum(len(results[(table, n)]) for n in range(4)) == len(available())


def test_claim_uses_the_claim_index(db):
    db.execute("""INSERT INTO jobs (job_type, queue, status, attempts, finished_at, run_at)
                  SELECT (ARRAY['noop','effect','sleep'])[1 + i % 3], 'default', 'succeeded', 1, now(),
                         now() - make_interval(secs => i)
                  FROM generate_series(1, 20000) AS i""")
    db.execute("""INSERT INTO jobs (job_type, priority) SELECT 'noop', i FROM generate_series(1, 5) AS i""")
    db.execute("ANALYZE jobs")
    q = queries_for("jobs")
    for queues in (None, ["default"]):
        params = {"n": 4, "types": ["noop", "effect"], "queues": queues, "locks": [f"host:1/{i}" for i in range(4)]}
        plan = "\n".join(row[0] for row in db.execute("EXPLAIN " + q.jobs_claim, params).fetchall())
        assert "jobs_claim_idx" in plan, plan
        assert "Seq Scan on jobs" not in plan, plan
    # And the statement claims the highest priority first.
    with db.transaction():
        rows = db.execute(q.jobs_claim, params).fetchall()
    assert [row[4] for row in rows] == [5, 4, 3, 2]


def test_trigger_notifies_once_per_insert_statement_with_earliest_run_at(db, dsn):
    channel = channel_name("jobs")
    with psycopg.connect(dsn, autocommit=True) as listener:
        listener.execute(f'LISTEN "{channel}"')

        db.execute("""INSERT INTO jobs (job_type, payload, run_at)
                      SELECT 'bulk', jsonb_build_object('i', i), now() + make_interval(secs => 100 - i)
                      FROM generate_series(1, 100) AS i""")
        heard = hear(listener, 1)
        assert len(heard) == 1
        assert heard[0].channel == channel
        earliest = db.execute("SELECT extract(epoch FROM min(run_at))::text FROM jobs WHERE job_type = 'bulk'").fetchone()[0]
        assert heard[0].payload == earliest
        assert db.execute("SELECT count(*) FROM jobs").fetchone()[0] == 100

        # Plain SQL from any producer wakes listeners: no Python needed.
        db.execute("""INSERT INTO jobs (job_type, payload) VALUES ('x', '{}')""")
        heard = hear(listener, 1)
        assert len(heard) == 1
        plain = db.execute("SELECT extract(epoch FROM run_at)::text FROM jobs WHERE job_type = 'x'").fetchone()[0]
        assert heard[0].payload == plain

        # Inside a transaction the notification arrives at commit, once per statement.
        with psycopg.connect(dsn) as producer:
            producer.execute("INSERT INTO jobs (job_type) VALUES ('a'), ('b')")
            producer.execute("INSERT INTO jobs (job_type, run_at) VALUES ('c', now() + interval '1 hour')")
            assert hear(listener, 0) == []
            producer.commit()
        heard = hear(listener, 2)
        assert len(heard) == 2
        future = db.execute("SELECT extract(epoch FROM run_at)::text FROM jobs WHERE job_type = 'c'").fetchone()[0]
        assert heard[1].payload == future


def test_migrate_refuses_an_unrelated_table_with_the_same_name(empty_dsn, tmp_path: Path):
    with psycopg.connect(empty_dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE jobs (id serial PRIMARY KEY, title text, salary int)")
        conn.execute("INSERT INTO jobs (title, salary) VALUES ('engineer', 1)")
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({"database": {"dsn": empty_dsn}}))
    result = run_cli("-c", str(config), "migrate")
    assert result.returncode == 2, result
    assert len(result.stderr.splitlines()) == 1 and "Traceback" not in result.stderr
    assert "already exists" in result.stderr and "database.table" in result.stderr
    with psycopg.connect(empty_dsn, autocommit=True) as conn:
        assert conn.execute("SELECT title, salary FROM jobs").fetchall() == [("engineer", 1)]
        assert conn.execute("SELECT to_regclass('jobs_migrations'), to_regclass('jobs_runners')").fetchone() == (
            None, None)
        # Another table name works next to it.
        migrate(conn, "background_jobs")
        assert_spec_schema(conn, "background_jobs")


def test_running_jobs_are_found_through_the_partial_status_index(db):
    """0005 replaced the (locked_by) index over running jobs: the rescuer's and the fence's
    look at running jobs still never reads the table's history."""
    db.execute("""INSERT INTO jobs (job_type, status, attempts, finished_at, locked_by)
                  SELECT 'noop', 'succeeded', 1, now(), 'h:1:a/' || (i % 7) FROM generate_series(1, 50000) AS i""")
    db.execute("""INSERT INTO jobs (job_type, status, attempts, locked_by, locked_at)
                  SELECT 'noop', 'running', 1, 'h:2:b/' || i, now() FROM generate_series(1, 5) AS i""")
    db.execute("ANALYZE jobs")
    q = queries_for("jobs")
    for query, params in ((q.jobs_held_by_runner, {"runner": "h:2:b"}),
                          (q.jobs_set_succeeded_many, {"ids": "{50001,50002}", "locks": '{"h:2:b/1","h:2:b/2"}',
                                                        "ages": "{500000,0}"})):
        plan = "\n".join(row[0] for row in db.execute("EXPLAIN " + query, params).fetchall())
        assert "Seq Scan on jobs" not in plan, plan
    assert len(db.execute(q.jobs_held_by_runner, {"runner": "h:2:b"}).fetchall()) == 5


def _back_to_0005(conn: psycopg.Connection) -> None:
    """The schema as 0005 left it: 0002's (job_type, id) over every row, 0006 not applied."""
    conn.execute("DROP INDEX jobs_type_partial_idx")
    conn.execute("CREATE INDEX jobs_type_id_idx ON jobs (job_type, id)")
    conn.execute("DELETE FROM jobs_migrations WHERE version = 6")


def test_0006_replaces_the_type_index_only_where_it_exists(empty_dsn):
    with psycopg.connect(empty_dsn, autocommit=True) as conn:
        migrate(conn, "jobs")
        fresh = indexes(conn, "jobs")
        assert fresh["jobs_type_partial_idx"].endswith("(job_type, id) WHERE (status <> 'running'::text)")
        assert "jobs_type_id_idx" not in fresh

        # An upgrade from 0005 swaps the index, keeping the rows.
        _back_to_0005(conn)
        enqueue(conn, "noop", {})
        assert [m.version for m in migrate(conn, "jobs")] == [6]
        assert indexes(conn, "jobs") == fresh
        assert conn.execute("SELECT count(*) FROM jobs").fetchone()[0] == 1

        # Built by hand beforehand (CONCURRENTLY, same name): kept as it is, the old one dropped.
        _back_to_0005(conn)
        conn.execute("CREATE INDEX CONCURRENTLY jobs_type_partial_idx ON jobs (job_type, id) WHERE status <> 'running'")
        oid = conn.execute("SELECT 'jobs_type_partial_idx'::regclass::oid").fetchone()[0]
        migrate(conn, "jobs")
        assert indexes(conn, "jobs") == fresh
        assert conn.execute("SELECT 'jobs_type_partial_idx'::regclass::oid").fetchone()[0] == oid

        # Dropped on purpose (README, "Large tables"): the migration creates neither.
        _back_to_0005(conn)
        conn.execute("DROP INDEX jobs_type_id_idx")
        migrate(conn, "jobs")
        assert "jobs_type_partial_idx" not in indexes(conn, "jobs")
        assert "jobs_type_id_idx" not in indexes(conn, "jobs")
        assert latest_version() in {row[0] for row in conn.execute("SELECT version FROM jobs_migrations")}
