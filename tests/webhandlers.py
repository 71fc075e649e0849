"""Handlers for the dashboard tests: ``describe=`` summaries (plain, hostile, broken) and a job
that fails until its fix is "deployed" (a file exists), for the retry story of the browser test."""

from __future__ import annotations

import os

from supervisor import job


@job("greet", describe=lambda payload: f"Greets {payload['name']} in {payload.get('lang', 'en')}")
def greet(job):
    pass


@job("hostile_describe", describe=lambda payload: '<script>alert("describe")</script> & "quotes"')
def hostile_describe(job):
    pass


@job("broken_describe", describe=lambda payload: payload["missing"])
def broken_describe(job):
    pass


@job("import_report", max_attempts=1,
     describe=lambda payload: f"Import report {payload.get('report', '?')} for {payload.get('customer', '?')}")
def import_report(job):
    """Fails while the file ``payload["fix"]`` is missing (the bug is not fixed yet)."""
    flag = job.payload.get("fix") or ""
    if not os.path.exists(flag):
        raise RuntimeError(f"report parser cannot read column 'amount' (fix not deployed: {os.path.basename(flag)})")
