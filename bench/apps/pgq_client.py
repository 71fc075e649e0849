"""pgqueuer's benchmark client: ``Queries.enqueue`` on an asyncpg connection (scalar
arguments: one job; lists: one statement for many). Run with the pgqueuer virtualenv."""

from __future__ import annotations

import asyncio
import json
import time

import asyncpg
import clientlib
from pgqueuer.db import AsyncpgDriver
from pgqueuer.queries import Queries


def _run(coro):
    return asyncio.run(coro)


async def _queries(dsn: str):
    conn = await asyncpg.connect(dsn)
    return conn, Queries(AsyncpgDriver(conn))


def _p(obj: dict) -> bytes:
    return json.dumps(obj).encode()


def enqueue_single(dsn: str, n: int) -> dict:
    async def go():
        conn, q = await _queries(dsn)
        await q.enqueue("noop", _p({"i": -1}))
        t = time.perf_counter()
        for i in range(n):
            await q.enqueue("noop", _p({"i": i}))
        seconds = time.perf_counter() - t
        await conn.close()
        return {"seconds": seconds, "n": n}
    return _run(go())


def enqueue_bulk(dsn: str, n: int, batch: int) -> dict:
    async def go():
        conn, q = await _queries(dsn)
        await q.enqueue(["noop"], [_p({"i": -1})], [0])
        t = time.perf_counter()
        for part in clientlib.chunks(n, batch):
            await q.enqueue(["noop"] * len(part), [_p({"i": i}) for i in part], [0] * len(part))
        seconds = time.perf_counter() - t
        await conn.close()
        return {"seconds": seconds, "n": n}
    return _run(go())


def load(dsn: str, job_type: str, n: int, payload: dict | None = None) -> dict:
    async def go():
        conn, q = await _queries(dsn)
        t = time.perf_counter()
        await q.enqueue([job_type] * n, [_p(dict(payload or {}, i=i)) for i in range(n)], [0] * n)
        seconds = time.perf_counter() - t
        await conn.close()
        return {"seconds": seconds, "n": n}
    return _run(go())


def latency(dsn: str, n: int, port: int) -> dict:
    loop = asyncio.new_event_loop()
    conn, q = loop.run_until_complete(_queries(dsn))
    try:
        return clientlib.measure_latency(lambda k: loop.run_until_complete(q.enqueue("record", _p({"k": k}))), n, port)
    finally:
        loop.run_until_complete(conn.close())
        loop.close()


def enqueue_records(dsn: str, keys: list[int], sleep: float = 0) -> dict:
    async def go():
        conn, q = await _queries(dsn)
        await q.enqueue(["record"] * len(keys), [_p({"k": k, "sleep": sleep}) for k in keys], [0] * len(keys))
        await conn.close()
        return {"n": len(keys)}
    return _run(go())


if __name__ == "__main__":
    clientlib.main({"enqueue_single": enqueue_single, "enqueue_bulk": enqueue_bulk, "load": load,
                    "latency": latency, "enqueue_records": enqueue_records})
