"""jobsupervisor handlers for the benchmark (imported by the children via ``imports:``)."""

from __future__ import annotations

import time

import benchlib

from supervisor import job


@job("warmup")
def warmup(job):
    pass


@job("noop")
def noop(job):
    pass


@job("cpu")
def cpu(job):
    benchlib.burn(job.payload["n"])


@job("record")
def record(job):
    benchlib.record(job.payload.get("k", job.id), job.attempts)
    if job.payload.get("sleep"):
        time.sleep(job.payload["sleep"])
