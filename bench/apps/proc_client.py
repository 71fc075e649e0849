"""procrastinate's benchmark client: ``Task.defer_async`` / ``Task.batch_defer_async`` on the
app's psycopg pool. Run with the procrastinate virtualenv."""

from __future__ import annotations

import asyncio
import os
import time

import clientlib


def _app(dsn: str):
    os.environ["BENCH_DSN"] = dsn
    import proc_app

    return proc_app


def enqueue_single(dsn: str, n: int) -> dict:
    m = _app(dsn)

    async def go():
        async with m.app.open_async():
            await m.noop.defer_async(i=-1)
            t = time.perf_counter()
            for i in range(n):
                await m.noop.defer_async(i=i)
            return {"seconds": time.perf_counter() - t, "n": n}
    return asyncio.run(go())


def enqueue_bulk(dsn: str, n: int, batch: int) -> dict:
    m = _app(dsn)

    async def go():
        async with m.app.open_async():
            await m.noop.batch_defer_async({"i": -1})
            t = time.perf_counter()
            for part in clientlib.chunks(n, batch):
                await m.noop.batch_defer_async(*[{"i": i} for i in part])
            return {"seconds": time.perf_counter() - t, "n": n}
    return asyncio.run(go())


def load(dsn: str, job_type: str, n: int, payload: dict | None = None) -> dict:
    m = _app(dsn)
    task = {"noop": m.noop, "cpu": m.cpu, "warmup": m.warmup}[job_type]

    async def go():
        async with m.app.open_async():
            t = time.perf_counter()
            await task.batch_defer_async(*[dict(payload or {}, i=i) for i in range(n)])
            return {"seconds": time.perf_counter() - t, "n": n}
    return asyncio.run(go())


def latency(dsn: str, n: int, port: int) -> dict:
    m = _app(dsn)
    loop = asyncio.new_event_loop()
    cm = m.app.open_async()
    loop.run_until_complete(cm.__aenter__())
    try:
        return clientlib.measure_latency(lambda k: loop.run_until_complete(m.record.defer_async(k=k)), n, port)
    finally:
        loop.run_until_complete(cm.__aexit__(None, None, None))
        loop.close()


def enqueue_records(dsn: str, keys: list[int], sleep: float = 0) -> dict:
    m = _app(dsn)

    async def go():
        async with m.app.open_async():
            await m.record.batch_defer_async(*[{"k": k, "sleep": sleep} for k in keys])
        return {"n": len(keys)}
    return asyncio.run(go())


if __name__ == "__main__":
    clientlib.main({"enqueue_single": enqueue_single, "enqueue_bulk": enqueue_bulk, "load": load,
                    "latency": latency, "enqueue_records": enqueue_records})
