"""procrastinate: ``procrastinate --app=proc_app.app worker`` processes, installed from PyPI
into bench/.venvs/procrastinate. Defaults except the concurrency and the number of processes."""

from __future__ import annotations

import subprocess
from typing import Any

from common import BenchError, Worker, app_env, ensure_venv, query_one

from .base import System

VERSION = "3.10.0"


class Procrastinate(System):
    name = "procrastinate"
    client_script = "proc_client.py"
    analyze_sql = "ANALYZE procrastinate_jobs"
    requirements = [f"procrastinate=={VERSION}", "psycopg[binary]==3.3.9", "psycopg-pool==3.3.3"]

    def prepare(self) -> None:
        self.python = str(ensure_venv("procrastinate", self.requirements, self.log))
        self.cli = str(self.python).rsplit("/", 1)[0] + "/procrastinate"

    def version(self) -> str:
        return VERSION

    def setup_db(self, dsn: str) -> None:
        proc = subprocess.run([self.cli, "--app=proc_app.app", "schema", "--apply"], env=app_env(BENCH_DSN=dsn),
                              capture_output=True, text=True, cwd=self.run_dir)
        if proc.returncode != 0:
            raise BenchError(f"procrastinate schema --apply failed: {proc.stderr.strip()[-2000:]}")

    def count_done(self, dsn: str, job_type: str) -> int:
        return query_one(dsn, "SELECT count(*) FROM procrastinate_jobs WHERE status = 'succeeded' AND task_name = %s",
                         (job_type,))[0]

    def window(self, dsn: str, job_type: str) -> tuple[int, float]:
        n, seconds = query_one(dsn, """
            SELECT count(*) FILTER (WHERE e.type = 'succeeded'),
                   extract(epoch FROM max(e.at) FILTER (WHERE e.type = 'succeeded')
                                      - min(e.at) FILTER (WHERE e.type = 'started'))::float8
            FROM procrastinate_events e JOIN procrastinate_jobs j ON j.id = e.job_id
            WHERE j.task_name = %s""", (job_type,))
        return n, seconds

    def candidates(self, workload: str, quick: bool) -> list[dict[str, Any]]:
        if quick:
            return [{"processes": 1, "concurrency": 10}]
        if workload == "cpu":
            return [{"processes": 1, "concurrency": 1}, {"processes": 2, "concurrency": 1}]
        return [{"processes": 1, "concurrency": 10}, {"processes": 2, "concurrency": 10},
                {"processes": 2, "concurrency": 25}]

    def describe(self, conf: dict[str, Any]) -> str:
        p = conf["processes"]
        return f"{p} process{'es' if p != 1 else ''}, concurrency {conf['concurrency']}"

    def start(self, dsn: str, conf: dict[str, Any], tag: str, **env: Any) -> list[Worker]:
        cmd = [self.cli, "--app=proc_app.app", "worker", "--concurrency", str(conf["concurrency"])]
        return [Worker(cmd, app_env(BENCH_DSN=dsn, **env), self.log_path(f"{tag}-{i}"))
                for i in range(conf["processes"])]

    def memory(self, workers: list[Worker]) -> dict[str, float]:
        rss = [w.ps.memory_info().rss / 2**20 for w in workers]
        return {"worker_mb": sum(rss) / len(rss), "total_mb": sum(rss)}
