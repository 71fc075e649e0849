"""Handlers for the quick start: one quick, one failing then succeeding, one slow, one CPU-heavy.

    jobsupervisor -c config.example.yaml enqueue hello '{"name": "world"}'
    jobsupervisor -c config.example.yaml enqueue flaky '{"fail_times": 2}'
    jobsupervisor -c config.example.yaml enqueue slow '{"seconds": 30}'
    jobsupervisor -c config.example.yaml enqueue cpu '{"n": 200000}'
"""

import time

import structlog

from supervisor import job

log = structlog.get_logger()


@job("hello")
def hello(job):
    log.info("hello", name=job.payload.get("name", "world"), job_id=job.id)


@job("flaky", max_attempts=5, backoff="exponential", backoff_delay="2s")
def flaky(job):
    """Fails its first ``fail_times`` attempts, then succeeds: watch job_retry_scheduled."""
    if job.attempts <= job.payload.get("fail_times", 2):
        raise RuntimeError(f"flaky failure on attempt {job.attempts}")


@job("slow", timeout="2m")
def slow(job):
    """Sleeps; SIGINT the supervisor meanwhile to see a graceful drain."""
    time.sleep(float(job.payload.get("seconds", 10)))


@job("cpu")
def cpu(job):
    """Pure-Python work that keeps one core busy: children run these in parallel."""
    n = int(job.payload.get("n", 200_000))
    total = 0
    for i in range(n):
        total += i * i % 7
    log.info("cpu_done", job_id=job.id, n=n, total=total)
