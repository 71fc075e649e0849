"""pgqueuer application for the benchmark: ``pgq run pgq_app:create`` (DSN in $BENCH_DSN).

Entrypoints must be ``async def`` in pgqueuer 1.x; CPU work runs inline on the event loop,
which is what an asyncio worker does with CPU-bound Python (a thread would not help: the GIL).
"""

from __future__ import annotations

import asyncio
import json
import os
from contextlib import asynccontextmanager

import asyncpg
import benchlib
from pgqueuer import PgQueuer
from pgqueuer.db import AsyncpgDriver
from pgqueuer.models import Job


def _payload(job: Job) -> dict:
    return json.loads(job.payload) if job.payload else {}


@asynccontextmanager
async def create():
    conn = await asyncpg.connect(os.environ["BENCH_DSN"])
    pgq = PgQueuer(AsyncpgDriver(conn))

    @pgq.entrypoint("warmup")
    async def warmup(job: Job) -> None:
        pass

    @pgq.entrypoint("noop")
    async def noop(job: Job) -> None:
        pass

    @pgq.entrypoint("cpu")
    async def cpu(job: Job) -> None:
        benchlib.burn(_payload(job)["n"])

    @pgq.entrypoint("record")
    async def record(job: Job) -> None:
        p = _payload(job)
        benchlib.record(p["k"], job.attempts)
        if p.get("sleep"):
            await asyncio.sleep(p["sleep"])

    try:
        yield pgq
    finally:
        await conn.close()
