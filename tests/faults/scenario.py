"""Small helpers the fault scenarios share: waiting on rows and processes, taking the
database away, finding and hurting children. Every wait is a condition with a deadline."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from typing import Any

import psutil
import psycopg
from psycopg.conninfo import conninfo_to_dict

from conftest import job_row, statuses, wait_for

FAULTS_IMPORTS = ["jobhandlers", "faults.handlers"]


def config_for(make_config, extra: dict | None = None, **kwargs):
    """make_config with the fault handlers imported too."""
    data = {"imports": FAULTS_IMPORTS}
    data.update(extra or {})
    return make_config(data, **kwargs)


def wait_status(db, job_id: int, *wanted: str, timeout: float = 20.0) -> dict:
    return wait_for(lambda: (row := job_row(db, job_id))["status"] in wanted and row, timeout,
                    message=f"job {job_id} {'/'.join(wanted)}; it is {job_row(db, job_id)}")


def wait_all_ended(db, ids, timeout: float = 60.0, sup=None) -> None:
    def ended() -> bool:
        return db.execute("SELECT count(*) FROM jobs WHERE id = ANY(%s::bigint[]) AND status IN ('queued','retry','running')",
                          ([int(i) for i in ids],)).fetchone()[0] == 0
    wait_for(ended, timeout, interval=0.1,
             message=f"every job ended ({statuses(db)})" + (f"\n{sup.tail()}" if sup is not None else ""))


def effects(db, job_id: int, kind: str | None = None) -> list[tuple]:
    """(attempt, kind, pid) rows a handler wrote for this job, oldest first."""
    return db.execute("SELECT attempt, kind, pid FROM effects WHERE job_id = %s"
                      " AND (%s::text IS NULL OR kind = %s::text) ORDER BY id", (job_id, kind, kind)).fetchall()


def wait_started(db, job_id: int, attempt: int = 1, timeout: float = 20.0) -> int:
    """Until attempt ``attempt`` of the job recorded "started"; returns its child's pid."""
    rows = wait_for(lambda: [r for r in effects(db, job_id, "started") if r[0] == attempt], timeout,
                    message=f"job {job_id} attempt {attempt} started")
    return rows[0][2]


def serve_one(db, sup, job_type: str = "quick") -> int:
    """One job end to end: the supervisor is up, its children ready, its job types known."""
    from supervisor import enqueue

    job_id = enqueue(db, job_type)
    wait_status(db, job_id, "succeeded")
    sup.wait_event("job_succeeded", job_id=job_id)
    return job_id


def terminate_backends(db, where: str = "true") -> int:
    """pg_terminate_backend on this test database's other backends matching ``where``."""
    rows = db.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                      f"WHERE datname = current_database() AND pid <> pg_backend_pid() AND {where}").fetchall()
    return sum(1 for (done,) in rows if done)


class DatabaseAway:
    """This test's database refuses connections and every session but the test's own is cut:
    an outage for the runtime, while the rest of the server (other tests' databases) goes on."""

    def __init__(self, db, server_dsn: str):
        self.db = db
        self.name = db.execute("SELECT current_database()").fetchone()[0]
        self.admin = psycopg.connect(server_dsn, autocommit=True)  # ALTER DATABASE from elsewhere

    def __enter__(self) -> "DatabaseAway":
        self.admin.execute(f'ALTER DATABASE "{self.name}" ALLOW_CONNECTIONS false')
        self.cut_again()
        return self

    def cut_again(self) -> int:
        rows = self.admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s"
                                  " AND pid <> %s", (self.name, self.db.info.backend_pid)).fetchall()
        return sum(1 for (done,) in rows if done)

    def __exit__(self, *exc: Any) -> None:
        try:
            self.admin.execute(f'ALTER DATABASE "{self.name}" ALLOW_CONNECTIONS true')
        finally:
            self.admin.close()


def live(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def wait_gone(pid: int, timeout: float = 10.0) -> None:
    wait_for(lambda: not live(pid), timeout, message=f"process {pid} gone")


def child_of(locked_by: str) -> int:
    """locked_by is ``host:supervisor_pid:token/child_pid``."""
    return int(locked_by.rsplit("/", 1)[1])


def busy_children(sup) -> list[int]:
    """Children of ``sup`` that are running a job right now (by their process title)."""
    out = []
    for pid in sup.children():
        try:
            if "child running" in " ".join(psutil.Process(pid).cmdline()):
                out.append(pid)
        except psutil.Error:
            pass
    return out


def strict_json(line: bytes) -> Any:
    """json.loads that refuses what strict JSON parsers refuse (NaN, Infinity)."""
    import json

    def refuse(name: str) -> Any:
        raise ValueError(f"not JSON: {name}")
    return json.loads(line, parse_constant=refuse)


# --- the local cluster, for the restart test --------------------------------------------------------
def local_cluster(dsn: str) -> tuple[str, str] | str:
    """(version, name) of the pg_ctlcluster cluster serving ``dsn`` on this machine, or why not."""
    info = conninfo_to_dict(dsn)
    host, port = info.get("host") or "", str(info.get("port") or 5432)
    if host not in ("127.0.0.1", "localhost"):
        return f"the test database is not on 127.0.0.1 (host {host!r}): not restarting someone else's server"
    if os.geteuid() != 0 or not shutil.which("pg_ctlcluster") or not shutil.which("pg_lsclusters"):
        return "pg_ctlcluster (as root) is needed to restart the server"
    out = subprocess.run(["pg_lsclusters", "--no-header"], capture_output=True, text=True).stdout
    for line in out.splitlines():
        fields = line.split()
        if len(fields) >= 4 and fields[2] == port and fields[3].startswith("online"):
            return fields[0], fields[1]
    return f"no online pg_ctlcluster cluster listens on port {port}"


def restart_cluster(cluster: tuple[str, str], server_dsn: str, timeout: float = 60.0) -> float:
    """Restart it (fast shutdown: every session is cut) and wait until it answers; seconds down."""
    started = time.monotonic()
    subprocess.run(["pg_ctlcluster", cluster[0], cluster[1], "restart", "-m", "fast"], check=True,
                   capture_output=True, timeout=timeout)

    def answers() -> bool:
        try:
            with psycopg.connect(server_dsn, connect_timeout=2) as conn:
                return conn.execute("SELECT 1").fetchone() == (1,)
        except psycopg.Error:
            return False
    wait_for(answers, timeout, interval=0.1, message="the restarted server answers")
    return time.monotonic() - started

