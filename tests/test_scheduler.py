"""Built-in cron: DST rules as unit tests, exactly-once ticks against a real database."""

import datetime as dt
import threading
import zoneinfo

import pytest

from supervisor.config import ScheduleConfig
from supervisor.queries import queries_for
from supervisor.scheduler import Scheduler, cron_error, next_runs

UTC = dt.timezone.utc
BERLIN = zoneinfo.ZoneInfo("Europe/Berlin")


def test_cron_errors_are_reported():
    assert cron_error("*/5 * * * *") is None
    assert cron_error("*/10 * * * * *") is None  # seconds first
    assert cron_error("61 * * * *")
    assert cron_error("* * * *")


def test_fixed_hour_runs_once_when_clocks_go_back():
    runs = next_runs("30 2 * * *", "Europe/Berlin", dt.datetime(2026, 10, 24, 12, tzinfo=BERLIN), 3)
    assert [r.date() for r in runs] == [dt.date(2026, 10, 25), dt.date(2026, 10, 26), dt.date(2026, 10, 27)]


def test_nonexistent_time_runs_at_first_valid_moment_when_clocks_go_forward():
    runs = next_runs("30 2 * * *", "Europe/Berlin", dt.datetime(2026, 3, 28, 12, tzinfo=BERLIN), 2)
    assert runs[0] == dt.datetime(2026, 3, 29, 3, 0, tzinfo=BERLIN)
    assert runs[1] == dt.datetime(2026, 3, 30, 2, 30, tzinfo=BERLIN)


def test_every_twenty_minutes_keeps_real_intervals_through_the_repeated_hour():
    runs = next_runs("*/20 * * * *", "Europe/Berlin", dt.datetime(2026, 10, 25, 1, 50, tzinfo=BERLIN), 7)
    utc = [r.astimezone(UTC) for r in runs]
    assert all((b - a) == dt.timedelta(minutes=20) for a, b in zip(utc, utc[1:]))


def schedule(**kw):
    base = dict(name="tick", cron="* * * * * *", job="noop", payload={"k": 1}, timezone="UTC", catch_up="latest")
    base.update(kw)
    return ScheduleConfig(**base)


def ticks_enqueued(db):
    return db.execute("SELECT run_at, unique_key FROM jobs ORDER BY run_at").fetchall()


def test_first_pass_owes_no_past_ticks_then_each_tick_is_enqueued_once(db):
    s = Scheduler((schedule(),), queries_for("jobs"), "jobs")
    t0 = dt.datetime(2030, 1, 1, 12, 0, 0, tzinfo=UTC)
    assert s.run_once(db, now=t0) == []
    done = s.run_once(db, now=t0 + dt.timedelta(seconds=3.5))
    assert [d.tick.second for d in done] == [1, 2, 3]
    # Running again at the same moment, or from another supervisor, adds nothing.
    assert s.run_once(db, now=t0 + dt.timedelta(seconds=3.5)) == []
    other = Scheduler((schedule(),), queries_for("jobs"), "jobs")
    assert other.run_once(db, now=t0 + dt.timedelta(seconds=3.5)) == []
    assert len(ticks_enqueued(db)) == 3


def test_concurrent_supervisors_never_enqueue_a_tick_twice(db, dsn):
    import psycopg

    t0 = dt.datetime(2030, 1, 1, 12, 0, 0, tzinfo=UTC)
    Scheduler((schedule(),), queries_for("jobs"), "jobs").run_once(db, now=t0)
    results = []

    def run():
        with psycopg.connect(dsn, autocommit=True) as conn:
            s = Scheduler((schedule(),), queries_for("jobs"), "jobs")
            for step in range(1, 21):
                results.extend(s.run_once(conn, now=t0 + dt.timedelta(seconds=step)))

    threads = [threading.Thread(target=run) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    keys = [k for _, k in ticks_enqueued(db)]
    assert len(keys) == len(set(keys)) == 20
    assert len(results) == 20


def test_missed_ticks_while_everyone_was_down_are_enqueued_once_with_catch_up_latest(db):
    s = Scheduler((schedule(cron="0 * * * *"),), queries_for("jobs"), "jobs")
    t0 = dt.datetime(2030, 1, 1, 12, 30, tzinfo=UTC)
    s.run_once(db, now=t0)
    later = t0 + dt.timedelta(hours=5)  # 13:00 … 17:00 missed
    done = s.run_once(db, now=later)
    assert [(d.tick.hour, d.catch_up) for d in done] == [(17, True)]
    assert s.run_once(db, now=later + dt.timedelta(minutes=1)) == []


def test_missed_ticks_are_skipped_with_catch_up_none(db):
    s = Scheduler((schedule(cron="0 * * * *", catch_up="none"),), queries_for("jobs"), "jobs")
    t0 = dt.datetime(2030, 1, 1, 12, 30, tzinfo=UTC)
    s.run_once(db, now=t0)
    assert s.run_once(db, now=t0 + dt.timedelta(hours=5)) == []
    # The next tick on time still runs.
    done = s.run_once(db, now=dt.datetime(2030, 1, 1, 18, 0, 5, tzinfo=UTC))
    assert [d.tick.hour for d in done] == [18]


def test_enqueued_tick_carries_payload_queue_priority_and_run_at(db):
    s = Scheduler((schedule(cron="0 * * * *", queue="cron", priority=7),), queries_for("jobs"), "jobs")
    t0 = dt.datetime(2030, 1, 1, 12, 30, tzinfo=UTC)
    s.run_once(db, now=t0)
    s.run_once(db, now=t0 + dt.timedelta(minutes=31))
    row = db.execute("SELECT job_type, payload, queue, priority, run_at FROM jobs").fetchone()
    assert row == ("noop", {"k": 1}, "cron", 7, dt.datetime(2030, 1, 1, 13, 0, tzinfo=UTC))


def test_next_due_is_the_earliest_tick_of_all_schedules():
    s = Scheduler((schedule(name="a", cron="0 * * * *"), schedule(name="b", cron="*/15 * * * *")),
                  queries_for("jobs"), "jobs")
    now = dt.datetime(2030, 1, 1, 12, 20, tzinfo=UTC)
    assert s.next_due(now) == dt.datetime(2030, 1, 1, 12, 30, tzinfo=UTC).timestamp()


@pytest.mark.parametrize("expr", ["0 3 * * *", "*/5 * * * * *"])
def test_config_accepts_valid_cron(expr, tmp_path):
    from supervisor.config import config_from_dict

    cfg = config_from_dict({"schedules": [{"name": "x", "cron": expr, "job": "noop"}]})
    assert cfg.schedules[0].cron == expr


def test_config_rejects_invalid_cron_naming_the_key():
    from supervisor.config import config_from_dict
    from supervisor.errors import ConfigError

    with pytest.raises(ConfigError) as info:
        config_from_dict({"schedules": [{"name": "x", "cron": "61 * * * *", "job": "noop"}]}, source="c.yaml")
    assert "schedules[0].cron" in str(info.value) and "c.yaml" in str(info.value)
