"""Durations, sizes, DSN masking and the SQL file's blocks (pure functions)."""

import math

import pytest

from supervisor.queries import Queries, inline_fragments, parse_blocks, render
from supervisor.units import format_duration, format_size, mask_dsn, parse_duration, parse_size


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        (30, 30.0),
        (0, 0.0),
        (1.5, 1.5),
        ("90", 90.0),
        ("2.5", 2.5),
        ("30s", 30.0),
        ("5m", 300.0),
        ("1h", 3600.0),
        ("1d", 86400.0),
        ("250ms", 0.25),
        ("1.5s", 1.5),
        (".5s", 0.5),
        ("1h30m", 5400.0),
        ("1h 30m", 5400.0),
        ("1d2h3m4s", 93784.0),
        (" 10S ", 10.0),
        ("5 m", 300.0),
    ],
)
def test_parse_duration_accepts(text, seconds):
    assert parse_duration(text) == pytest.approx(seconds)
    assert isinstance(parse_duration(text), float)


@pytest.mark.parametrize(
    "value",
    [True, False, None, "", "  ", "ten", "5x", "m5", "1h30", "-5s", "-1", -3, "5 minutes",
     math.nan, math.inf, "1.2.3s", [], {}],
)
def test_parse_duration_rejects(value):
    with pytest.raises(ValueError) as excinfo:
        parse_duration(value)
    assert "duration" in str(excinfo.value)


def test_parse_duration_error_is_helpful():
    with pytest.raises(ValueError, match=r"'ten'.*'30s'"):
        parse_duration("ten")
    with pytest.raises(ValueError, match="negative"):
        parse_duration("-5s")


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0s"),
        (0.25, "250ms"),
        (0.0015, "1.5ms"),
        (1.5, "1.5s"),
        (30, "30s"),
        (60, "1m"),
        (300, "5m"),
        (5400, "1h30m"),
        (3600, "1h"),
        (86400 + 7200, "1d2h"),
        (61.25, "1m1.25s"),
        (-30, "-30s"),
    ],
)
def test_format_duration(seconds, text):
    assert format_duration(seconds) == text


@pytest.mark.parametrize("seconds", [0.001, 0.25, 1, 1.5, 59, 61, 3599.5, 5400, 90061, 604800])
def test_format_duration_round_trips(seconds):
    assert parse_duration(format_duration(seconds)) == pytest.approx(seconds)


@pytest.mark.parametrize(
    ("text", "size"),
    [
        (0, 0),
        (1024, 1024),
        ("1024", 1024),
        ("100B", 100),
        ("100KB", 100 * 1024),
        ("100K", 100 * 1024),
        ("512MB", 512 * 1024**2),
        ("512M", 512 * 1024**2),
        ("512mb", 512 * 1024**2),
        ("512 MB", 512 * 1024**2),
        ("1GB", 1024**3),
        ("2GiB", 2 * 1024**3),
        ("1.5GB", 3 * 1024**3 // 2),
        ("1TiB", 1024**4),
    ],
)
def test_parse_size_accepts(text, size):
    assert parse_size(text) == size
    assert isinstance(parse_size(text), int)


@pytest.mark.parametrize(
    "value", [True, False, None, "", "lots", "512XB", "-1", -1, "1.5", 1.5, "MB", "5 G B", []]
)
def test_parse_size_rejects(value):
    with pytest.raises(ValueError) as excinfo:
        parse_size(value)
    assert "size" in str(excinfo.value)


@pytest.mark.parametrize(
    ("size", "text"),
    [(100, "100B"), (1024, "1KiB"), (512 * 1024**2, "512MiB"), (3 * 1024**3 // 2, "1.5GiB")],
)
def test_format_size(size, text):
    assert format_size(size) == text
    assert parse_size(text) == size


@pytest.mark.parametrize(
    ("dsn", "masked"),
    [
        ("postgresql://user:secret@host/db", "postgresql://user:***@host/db"),
        ("postgres://user:secret@host:5432/db?sslmode=require",
         "postgres://user:***@host:5432/db?sslmode=require"),
        ("postgresql://user@host/db", "postgresql://user@host/db"),
        ("postgresql://host/db", "postgresql://host/db"),
        ("postgresql:///db?host=/tmp", "postgresql:///db?host=/tmp"),
        ("postgresql://user:p@ss/w:rd@host/db", "postgresql://user:***@host/db"),
        ("postgresql://host/db?user=u&password=secret&x=1",
         "postgresql://host/db?user=u&password=***&x=1"),
        ("host=localhost password=secret dbname=app", "host=localhost password=*** dbname=app"),
        ("host=localhost password = 'se cret' dbname=app",
         "host=localhost password = *** dbname=app"),
        ("dbname=app", "dbname=app"),
        ("", ""),
    ],
)
def test_mask_dsn(dsn, masked):
    assert mask_dsn(dsn) == masked
    assert "secret" not in mask_dsn(dsn)


def test_mask_dsn_none():
    assert mask_dsn(None) is None


def test_sql_fragments_are_inlined_and_never_statements():
    text = """-- name: _cols
-- a fragment
id, status
-- name: jobs_list
-- a statement
SELECT {_cols} FROM {table} WHERE {_unknown}
"""
    blocks = inline_fragments(parse_blocks(text))
    assert blocks == {"jobs_list": "SELECT id, status FROM {table} WHERE {_unknown}"}
    with pytest.raises(KeyError, match="_unknown"):
        render(blocks["jobs_list"], "jobs")  # a fragment that does not exist is caught at load
    q = Queries("jobs")
    assert "{" not in q.jobs_page_newest and "_job_filters" not in vars(q)
