"""Versioned, idempotent schema migrations for one jobs table.

Migrations are the numbered files in ``supervisor/migrations/`` (``0001_initial.sql`` …),
applied in order inside one transaction each, under an advisory lock so that two
supervisors starting at once cannot race. They only ever add: nothing here drops data.
The applied versions are recorded in ``<table>_migrations``.
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass
from importlib import resources

import psycopg

from .queries import identifiers, render

_FILE = re.compile(r"^(\d{4})_(\w+)\.sql$")


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str


def available() -> list[Migration]:
    found = []
    for entry in resources.files("supervisor").joinpath("migrations").iterdir():
        match = _FILE.match(entry.name)
        if match:
            found.append(Migration(int(match.group(1)), match.group(2), entry.read_text()))
    found.sort(key=lambda m: m.version)
    return found


def latest_version() -> int:
    return available()[-1].version


def lock_key(table: str) -> int:
    """A stable advisory-lock key per table (crc32 fits a signed bigint)."""
    return zlib.crc32(f"jobsupervisor:migrate:{table}".encode())


def current_version(conn: psycopg.Connection, table: str) -> int:
    """The highest applied version, 0 for a database that has never been migrated."""
    names = identifiers(table)
    exists = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (names["migrations"],)).fetchone()[0]
    if not exists:
        return 0
    row = conn.execute(f"SELECT coalesce(max(version), 0) FROM {names['migrations']}").fetchone()
    return int(row[0])


# The columns 0001 creates: a pre-existing table without them belongs to someone else.
_OWN_COLUMNS = {"id", "queue", "job_type", "payload", "status", "priority", "run_at", "attempts", "max_attempts",
                "last_error", "locked_by", "locked_at", "unique_key", "created_at", "updated_at", "finished_at"}


def _refuse_foreign_table(conn: psycopg.Connection, table: str) -> None:
    """Never adopt an unrelated table that happens to have our name (``jobs`` is a common one):
    ``CREATE TABLE IF NOT EXISTS`` would skip it and record the migration as applied."""
    oid = conn.execute("SELECT to_regclass(%s)::oid", (identifiers(table)["table"],)).fetchone()[0]
    if oid is None:
        return
    have = {row[0] for row in conn.execute(
        "SELECT attname FROM pg_attribute WHERE attrelid = %s AND attnum > 0 AND NOT attisdropped", (oid,))}
    missing = sorted(_OWN_COLUMNS - have)
    if missing:
        from .errors import UserError

        raise UserError(f"table {table!r} already exists and is not a jobsupervisor jobs table "
                        f"(it has no column {', '.join(missing[:3])}{', ...' if len(missing) > 3 else ''}); "
                        "set database.table to another name", exit_code=2)


def migrate(conn: psycopg.Connection, table: str) -> list[Migration]:
    """Apply every pending migration; returns those applied (empty when up to date).

    ``conn`` must be in autocommit mode; each migration runs in its own transaction.
    """
    names = identifiers(table)
    applied: list[Migration] = []
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (lock_key(table),))
        conn.execute(
            f"CREATE TABLE IF NOT EXISTS {names['migrations']} ("
            " version integer PRIMARY KEY, name text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
        done = {row[0] for row in conn.execute(f"SELECT version FROM {names['migrations']}")}
        if not done:
            _refuse_foreign_table(conn, table)
        for migration in available():
            if migration.version in done:
                continue
            with conn.transaction():
                conn.execute(render(migration.sql, table))
                conn.execute(
                    f"INSERT INTO {names['migrations']} (version, name) VALUES (%s, %s)",
                    (migration.version, migration.name),
                )
            applied.append(migration)
    return applied
