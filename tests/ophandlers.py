"""Handlers for tests/test_operations.py (imported next to ``jobhandlers``)."""

from __future__ import annotations

from supervisor import job


@job("leak", max_attempts=1)
def leak(job):
    """Prints and raises what it is given (a DSN, a password): the logs must mask it."""
    print(f"connecting to {job.payload['dsn']} with {job.payload['password']}", flush=True)
    raise RuntimeError(f"could not use {job.payload['dsn']} (password {job.payload['password']})")
