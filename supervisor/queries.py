"""Loads the named SQL blocks of ``sql/queries.sql`` and fills in the per-table identifiers.

The SQL stays in one file where reviewers read it; this module only knows how to cut it
into named statements. Identifiers are filled in once per table name (validated by the
config as ``[a-z_][a-z0-9_]*``), so each statement is a constant string that psycopg can
prepare on the server after a few executions.
"""

from __future__ import annotations

import re
from functools import lru_cache
from importlib import resources

_BLOCK = re.compile(r"^-- name: (\w+)\s*$", re.MULTILINE)
_PLACEHOLDER = re.compile(r"\{(\w+)\}")


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def quote_literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def identifiers(table: str) -> dict[str, str]:
    """Every name derived from the jobs table, already quoted for SQL."""
    return {
        "table": quote_ident(table),
        "runners": quote_ident(f"{table}_runners"),
        "migrations": quote_ident(f"{table}_migrations"),
        "schedules": quote_ident(f"{table}_schedules"),
        "claim_index": quote_ident(f"{table}_claim_idx"),
        "unique_index": quote_ident(f"{table}_unique_key_idx"),
        "running_index": quote_ident(f"{table}_running_idx"),
        "finished_index": quote_ident(f"{table}_finished_idx"),
        "status_id_index": quote_ident(f"{table}_status_id_idx"),
        "status_partial_index": quote_ident(f"{table}_status_partial_idx"),
        "type_id_index": quote_ident(f"{table}_type_id_idx"),
        "type_partial_index": quote_ident(f"{table}_type_partial_idx"),
        "notify_fn": quote_ident(f"{table}_notify"),
        "notify_trigger": quote_ident(f"{table}_notify_insert"),
        "channel": quote_literal(channel_name(table)),
        "control_channel": quote_literal(control_channel_name(table)),
    }


def channel_name(table: str) -> str:
    """The NOTIFY channel that announces new jobs in ``table``."""
    return f"jobsupervisor_{table}"


def control_channel_name(table: str) -> str:
    """The NOTIFY channel for operator requests to runners (kill, stop)."""
    return f"jobsupervisor_{table}_control"


def render(text: str, table: str) -> str:
    names = identifiers(table)

    def fill(match: re.Match[str]) -> str:
        key = match.group(1)
        if key not in names:
            raise KeyError(f"unknown placeholder {{{key}}} in SQL")
        return names[key]

    return _PLACEHOLDER.sub(fill, text)


def parse_blocks(text: str) -> dict[str, str]:
    blocks: dict[str, str] = {}
    parts = _BLOCK.split(text)
    # parts = [preamble, name1, body1, name2, body2, ...]
    for name, body in zip(parts[1::2], parts[2::2]):
        lines = [ln for ln in body.strip().splitlines() if not ln.lstrip().startswith("--")]
        if name in blocks:
            raise ValueError(f"duplicate SQL block {name}")
        blocks[name] = "\n".join(lines).strip()
    return blocks


def inline_fragments(blocks: dict[str, str]) -> dict[str, str]:
    """Statements with their ``{_fragment}`` placeholders filled in from the blocks whose names
    start with ``_`` (shared pieces, such as the dashboard's filters); fragments are dropped."""
    fragments = {name: body for name, body in blocks.items() if name.startswith("_")}

    def fill(match: re.Match[str]) -> str:
        name = match.group(1)
        return fragments[name] if name in fragments else match.group(0)

    return {name: _PLACEHOLDER.sub(fill, body) for name, body in blocks.items() if name not in fragments}


@lru_cache(maxsize=None)
def _raw_blocks() -> dict[str, str]:
    text = resources.files("supervisor").joinpath("sql/queries.sql").read_text()
    return inline_fragments(parse_blocks(text))


class Queries:
    """The named statements for one jobs table: ``Queries("jobs").jobs_claim``."""

    def __init__(self, table: str):
        self.table = table
        self.channel = channel_name(table)
        self.control_channel = control_channel_name(table)
        for name, body in _raw_blocks().items():
            setattr(self, name, render(body, table))

    def __getattr__(self, name: str) -> str:  # only reached for names that do not exist
        raise AttributeError(f"no SQL block named {name!r} in sql/queries.sql")


@lru_cache(maxsize=None)
def queries_for(table: str) -> Queries:
    return Queries(table)
