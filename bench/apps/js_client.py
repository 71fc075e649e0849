"""jobsupervisor's benchmark client: enqueues with the public Python API (``enqueue``,
``enqueue_many``) on a psycopg connection. Run with the project's Python."""

from __future__ import annotations

import time

import clientlib
import psycopg

from supervisor import enqueue, enqueue_many


def enqueue_single(dsn: str, n: int) -> dict:
    with psycopg.connect(dsn, autocommit=True) as conn:
        enqueue(conn, "noop", {"i": -1})  # first use: statement caches, imports
        t = time.perf_counter()
        for i in range(n):
            enqueue(conn, "noop", {"i": i})
        return {"seconds": time.perf_counter() - t, "n": n}


def enqueue_bulk(dsn: str, n: int, batch: int) -> dict:
    with psycopg.connect(dsn) as conn:
        enqueue_many(conn, [{"job_type": "noop", "payload": {"i": -1}}])
        conn.commit()
        t = time.perf_counter()
        for part in clientlib.chunks(n, batch):
            enqueue_many(conn, [{"job_type": "noop", "payload": {"i": i}} for i in part])
            conn.commit()
        return {"seconds": time.perf_counter() - t, "n": n}


def load(dsn: str, job_type: str, n: int, payload: dict | None = None) -> dict:
    """All n jobs in one transaction: they become visible at once."""
    with psycopg.connect(dsn) as conn:
        t = time.perf_counter()
        enqueue_many(conn, [{"job_type": job_type, "payload": dict(payload or {}, i=i)} for i in range(n)])
        conn.commit()
        return {"seconds": time.perf_counter() - t, "n": n}


def latency(dsn: str, n: int, port: int) -> dict:
    with psycopg.connect(dsn, autocommit=True) as conn:
        return clientlib.measure_latency(lambda k: enqueue(conn, "record", {"k": k}), n, port)


def enqueue_records(dsn: str, keys: list[int], sleep: float = 0) -> dict:
    with psycopg.connect(dsn) as conn:
        enqueue_many(conn, [{"job_type": "record", "payload": {"k": k, "sleep": sleep}} for k in keys])
        conn.commit()
    return {"n": len(keys)}


if __name__ == "__main__":
    clientlib.main({"enqueue_single": enqueue_single, "enqueue_bulk": enqueue_bulk, "load": load,
                    "latency": latency, "enqueue_records": enqueue_records})
