"""``/metrics`` in the Prometheus text exposition format (version 0.0.4).

Everything is read from the database at scrape time, so every dashboard (or supervisor)
serving ``/metrics`` reports the same numbers: the jobs table is the source of truth.

* ``jobsupervisor_jobs{status,job_type,queue}``: jobs in the table (a gauge);
* ``jobsupervisor_oldest_waiting_seconds``: how long the longest-due waiting job has waited;
* ``jobsupervisor_job_duration_seconds{job_type}``: a histogram of run times (claim to finish of
  the last attempt) of the jobs that finished in the last ``DURATION_WINDOW`` seconds. It is
  a sliding window, not a cumulative counter: use ``histogram_quantile()`` on the buckets
  directly, without ``rate()``;
* ``jobsupervisor_runners``, ``jobsupervisor_runner_children{runner,host}``,
  ``jobsupervisor_runner_busy{runner,host}``, ``jobsupervisor_runner_heartbeat_age_seconds``,
  ``jobsupervisor_runner_gate_open`` (when the runner publishes its gate).
"""

from __future__ import annotations

from typing import Any

from .. import admin

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
DURATION_WINDOW = 600
DURATION_BOUNDS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600)


def escape_label(value: Any) -> str:
    return str(value).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(**labels: Any) -> str:
    if not labels:
        return ""
    return "{" + ",".join(f'{key}="{escape_label(value)}"' for key, value in labels.items()) + "}"


def _number(value: float) -> str:
    if isinstance(value, int) or float(value).is_integer():
        return str(int(value))
    return repr(float(value))


class _Writer:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def family(self, name: str, kind: str, help_text: str) -> None:
        self.lines.append(f"# HELP {name} {help_text}")
        self.lines.append(f"# TYPE {name} {kind}")

    def sample(self, name: str, value: float, **labels: Any) -> None:
        self.lines.append(f"{name}{_labels(**labels)} {_number(value)}")

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"


def render(conn, table: str) -> str:
    data = admin.overview(conn, table)
    out = _Writer()

    out.family("jobsupervisor_jobs", "gauge", "Jobs in the table by status, job type and queue.")
    for (job_type, queue), counts in sorted(data["by_type_queue"].items()):
        for status in admin.STATUSES:
            out.sample("jobsupervisor_jobs", counts.get(status, 0), status=status, job_type=job_type, queue=queue)

    out.family("jobsupervisor_oldest_waiting_seconds", "gauge",
               "Seconds the waiting job that has been due the longest has waited (0: none waiting).")
    oldest = data["oldest_waiting"]
    out.sample("jobsupervisor_oldest_waiting_seconds", round(max(oldest["waiting_seconds"], 0.0), 3) if oldest else 0)

    out.family("jobsupervisor_job_duration_seconds", "histogram",
               f"Run time of the jobs that finished in the last {DURATION_WINDOW} seconds "
               "(a sliding window, not a counter: use histogram_quantile() without rate()).")
    rows = admin.duration_buckets(conn, table, window=DURATION_WINDOW, bounds=list(DURATION_BOUNDS))
    by_type: dict[str, dict[str, Any]] = {}
    for row in rows:
        entry = by_type.setdefault(row["job_type"], {"buckets": [], "count": row["total"], "sum": row["seconds_sum"]})
        entry["buckets"].append((row["le"], row["at_most"]))
    for job_type, entry in sorted(by_type.items()):
        for le, at_most in entry["buckets"]:
            out.sample("jobsupervisor_job_duration_seconds_bucket", at_most, job_type=job_type, le=_number(le))
        out.sample("jobsupervisor_job_duration_seconds_bucket", entry["count"], job_type=job_type, le="+Inf")
        out.sample("jobsupervisor_job_duration_seconds_sum", round(entry["sum"], 6), job_type=job_type)
        out.sample("jobsupervisor_job_duration_seconds_count", entry["count"], job_type=job_type)

    runners = data["runners"]
    out.family("jobsupervisor_runners", "gauge", "Registered runners (supervisors), live or stale.")
    out.sample("jobsupervisor_runners", sum(1 for r in runners if not r["stale"]), state="live")
    out.sample("jobsupervisor_runners", sum(1 for r in runners if r["stale"]), state="stale")
    out.family("jobsupervisor_runner_children", "gauge", "Child processes of each runner.")
    for r in runners:
        out.sample("jobsupervisor_runner_children", r["children"], runner=r["id"], host=r["host"])
    out.family("jobsupervisor_runner_busy", "gauge", "Children of each runner running a job.")
    for r in runners:
        out.sample("jobsupervisor_runner_busy", r["busy"], runner=r["id"], host=r["host"])
    out.family("jobsupervisor_runner_heartbeat_age_seconds", "gauge", "Seconds since each runner's last heartbeat.")
    for r in runners:
        out.sample("jobsupervisor_runner_heartbeat_age_seconds", round(max(r["heartbeat_age"], 0.0), 3),
                   runner=r["id"], host=r["host"])
    gated = [(r, (r.get("info") or {}).get("gate")) for r in runners]
    gated = [(r, gate) for r, gate in gated if isinstance(gate, dict) and "open" in gate]
    if gated:
        out.family("jobsupervisor_runner_gate_open", "gauge", "1 when the runner's gate lets it claim jobs, else 0.")
        for r, gate in gated:
            out.sample("jobsupervisor_runner_gate_open", 1 if gate.get("open") else 0, runner=r["id"], host=r["host"],
                       kind=gate.get("kind") or "")
    return out.text()
