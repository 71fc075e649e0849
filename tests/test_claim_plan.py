"""The claim walks the claim index in order even when the table's statistics are stale
(a queue table is normally analysed while it is small): regression for a bitmap scan of
every due row plus a sort, 40x slower with 30,000 jobs waiting."""

import psycopg

from supervisor.config import config_from_dict
from supervisor.parent import Supervisor
from supervisor.queries import queries_for


def test_claim_uses_the_claim_index_in_order_with_stale_statistics(dsn):
    with psycopg.connect(dsn, autocommit=True) as setup:
        setup.execute("ANALYZE jobs")  # statistics of an empty table
        setup.execute("INSERT INTO jobs (job_type, payload) SELECT 'noop', '{}' FROM generate_series(1, 30000)")
    supervisor = Supervisor(config_from_dict({"database": {"dsn": dsn}}), dsn)
    conn = supervisor.open_connection()
    try:
        params = {"n": 4, "types": ["noop", "other"], "queues": None, "locks": ["a/1", "a/2", "a/3", "a/4"]}
        with conn.transaction():
            plan = "\n".join(row[0] for row in conn.execute("EXPLAIN " + queries_for("jobs").jobs_claim, params))
        assert "Index Scan using jobs_claim_idx" in plan, plan
        assert "Bitmap" not in plan and "Sort" not in plan.split("CTE Scan")[0], plan
    finally:
        conn.close()


def test_autovacuum_is_tuned_for_a_queue_table(db):
    options = db.execute("SELECT reloptions FROM pg_class WHERE relname = 'jobs'").fetchone()[0]
    assert "autovacuum_analyze_scale_factor=0.02" in options
