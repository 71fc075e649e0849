"""The LISTEN connection: an optimisation that starts jobs within milliseconds.

Polling is the guarantee; this only wakes the loop early. When the connection drops it is
re-opened with backoff (``db_reconnected``), and a periodic probe catches a connection the
server has silently forgotten.
"""

from __future__ import annotations

import time
from typing import Any

import psycopg

from . import logs
from .db import close_quietly, connect, describe_error
from .queries import quote_ident


class Listener:
    def __init__(self, dsn: str, channels: list[str]):
        self.dsn = dsn
        self.channels = channels
        self.conn: psycopg.Connection | None = None
        self.retry_at = 0.0
        self.retry_delay = 0.2
        self.lost_since: float | None = None
        self.log = logs.get_logger()

    @property
    def up(self) -> bool:
        return self.conn is not None

    def fileno(self) -> int | None:
        return self.conn.pgconn.socket if self.conn is not None else None

    def open(self) -> bool:
        """Connect and LISTEN; returns False (and schedules a retry) when the database is away."""
        if self.conn is not None:
            return True
        if time.monotonic() < self.retry_at:
            return False
        try:
            conn = connect(self.dsn, autocommit=True, application_name="jobsupervisor-listen")
            for channel in self.channels:
                conn.execute(f"LISTEN {quote_ident(channel)}")
        except psycopg.Error as error:
            self._schedule_retry(error)
            return False
        self.conn = conn
        if self.lost_since is not None:
            self.log.info("db_reconnected", connection="listen",
                          down_ms=round((time.monotonic() - self.lost_since) * 1000))
        self.lost_since = None
        self.retry_delay = 0.2
        return True

    def drain(self) -> list[tuple[str, str]]:
        """Notifications received so far, as (channel, payload); never blocks."""
        if self.conn is None:
            return []
        try:
            return [(n.channel, n.payload) for n in self.conn.notifies(timeout=0)]
        except psycopg.Error as error:
            self.lost(error)
            return []

    def probe(self) -> bool:
        """A round trip that proves the connection is alive."""
        if self.conn is None:
            return False
        try:
            self.conn.execute("SELECT 1")
            return True
        except psycopg.Error as error:
            self.lost(error)
            return False

    def lost(self, error: BaseException) -> None:
        close_quietly(self.conn)
        self.conn = None
        if self.lost_since is None:
            self.lost_since = time.monotonic()
            self.log.warning("db_connection_lost", connection="listen", error=describe_error(error))
        self._schedule_retry(error)

    def _schedule_retry(self, error: BaseException) -> None:
        if self.lost_since is None:
            self.lost_since = time.monotonic()
        self.retry_at = time.monotonic() + self.retry_delay
        self.retry_delay = min(self.retry_delay * 2, 5.0)

    def close(self) -> None:
        close_quietly(self.conn)
        self.conn = None

    def __repr__(self) -> str:  # pragma: no cover
        return f"<Listener up={self.up}>"


def parse_due(payload: str) -> float | None:
    """The NOTIFY payload is the earliest run_at (epoch seconds) of the inserted jobs."""
    try:
        return float(payload)
    except (TypeError, ValueError):
        return None


