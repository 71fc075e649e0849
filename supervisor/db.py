"""Connections: where the DSN comes from, how we connect, and what a failure means to a user."""

from __future__ import annotations

import json
from functools import lru_cache
from typing import Iterable

import psycopg

from .errors import UserError
from .units import mask_dsn, mask_secrets, remember_secrets

APPLICATION_NAME = "jobsupervisor"

# Failures that retrying will not fix: the DSN itself is wrong. Everything else
# (refused, reset, timed out, server starting up) is the world and worth waiting out.
_PERMANENT_MARKERS = (
    "password authentication failed",
    "authentication failed",
    "does not exist",
    "no password supplied",
    "invalid dsn",
    "invalid connection option",
    "for connection option",  # invalid integer value "x" for connection option "port"
    "invalid port number",
    "invalid sslmode value",
    "invalid uri",
    "missing \"=\"",
    "pg_hba.conf",
    "permission denied",
)


def resolve_dsn(config) -> str:
    """The configured DSN, or the embedded server's (started on demand)."""
    if config.database.dsn:
        remember_secrets(config.database.dsn)
        return config.database.dsn
    from .embedded import embedded_dsn

    return embedded_dsn(config.database.embedded_dir)


def is_permanent(error: BaseException) -> bool:
    if isinstance(error, psycopg.ProgrammingError):
        return True  # libpq could not parse the DSN: waiting will not fix it
    text = str(error).lower()
    return any(marker in text for marker in _PERMANENT_MARKERS)


def connect(dsn: str, *, autocommit: bool = True, connect_timeout: int = 10, **kwargs) -> psycopg.Connection:
    """Open a connection with our defaults; raises psycopg errors unchanged."""
    remember_secrets(dsn)  # its password is masked in every log line and error from now on
    return psycopg.connect(
        dsn,
        autocommit=autocommit,
        connect_timeout=connect_timeout,
        application_name=kwargs.pop("application_name", APPLICATION_NAME),
        **kwargs,
    )


def _tolerant_json_loads(data: bytes | str) -> object:
    try:
        return json.loads(data)
    except (RecursionError, ValueError) as error:
        text = data.decode("utf-8", "replace") if isinstance(data, (bytes, bytearray, memoryview)) else str(data)
        reason = "nested too deeply" if isinstance(error, RecursionError) else str(error)
        return {"_unreadable_json": f"cannot be loaded in Python: {reason}", "_raw": text[:10000]}


def tolerate_unreadable_json(conn: psycopg.Connection) -> psycopg.Connection:
    """Views of the table (CLI, dashboard) show a payload Python cannot load (nesting beyond
    the recursion limit, integers of more than 4,300 digits: valid jsonb from any SQL producer)
    as a marker with its raw text, instead of failing the whole page or command."""
    from psycopg.types.json import set_json_loads

    set_json_loads(_tolerant_json_loads, conn)
    return conn


def connect_or_exit(dsn: str, **kwargs) -> psycopg.Connection:
    """For CLI commands: connect, or raise one clear UserError naming the masked DSN: exit 2
    when the DSN itself is wrong (unparsable, refused credentials, no such database or role),
    1 when the server could not be reached (down, restarting: trying later may work)."""
    try:
        return tolerate_unreadable_json(connect(dsn, **kwargs))
    except psycopg.Error as error:
        reason = mask_secrets(" ".join(str(error).split())) or type(error).__name__
        raise UserError(f"cannot connect to database {mask_dsn(dsn)}: {reason}",
                        exit_code=2 if is_permanent(error) else 1) from None


def close_quietly(conn: psycopg.Connection | None) -> None:
    """Close a connection that may already be broken; closing one can fail any way."""
    if conn is None:
        return
    try:
        conn.close()
    except Exception:  # noqa: BLE001
        pass


def describe_error(error: BaseException) -> str:
    """One line for a log record; never a password."""
    text = mask_secrets(" ".join(str(error).split())) or type(error).__name__
    return f"{type(error).__name__}: {text}"


# Array parameters of the hot statements (ids and locks of hundreds of jobs a statement) go as
# array literals: psycopg dumps a list element by element in Python, a tenth of the
# supervisor's time in a drain; the statements cast them (%(ids)s::bigint[]).
def int_array(values: Iterable[int]) -> str:
    """A bigint[] literal of *values* (ints)."""
    return "{" + ",".join(map(str, values)) + "}"


def text_array(values: Iterable[str]) -> str:
    """A text[] literal of *values*, every element quoted (no NULLs)."""
    return "{" + ",".join(map(_array_element, values)) + "}"


@lru_cache(maxsize=4096)  # the same few locks (one per child) over and over
def _array_element(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
