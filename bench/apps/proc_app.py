"""procrastinate application for the benchmark: ``procrastinate --app=proc_app.app worker``
(DSN in $BENCH_DSN). Tasks are ``async def`` (procrastinate runs sync tasks in a thread,
which only adds overhead for these handlers)."""

from __future__ import annotations

import asyncio
import os

import benchlib
import procrastinate

app = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=os.environ.get("BENCH_DSN", "")))


@app.task(name="warmup")
async def warmup(i: int = 0) -> None:
    pass


@app.task(name="noop")
async def noop(i: int = 0) -> None:
    pass


@app.task(name="cpu")
async def cpu(n: int, i: int = 0) -> None:
    benchlib.burn(n)


@app.task(name="record", pass_context=True)
async def record(context, k: int, sleep: float = 0) -> None:
    benchlib.record(k, context.job.attempts)
    if sleep:
        await asyncio.sleep(sleep)


if os.environ.get("BENCH_PROC_STALLED"):
    # procrastinate does not re-run the jobs of a dead worker by itself: its documentation's
    # recipe is a periodic task that retries stalled jobs. Every 5 s here (6th cron field).
    @app.periodic(cron="* * * * * */5")
    @app.task(name="retry_stalled_jobs", queueing_lock="retry_stalled_jobs", pass_context=True)
    async def retry_stalled_jobs(context, timestamp: int) -> None:
        for job in await app.job_manager.get_stalled_jobs():
            await app.job_manager.retry_job(job)
