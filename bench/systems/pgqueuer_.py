"""pgqueuer: ``pgq run pgq_app:create`` worker processes (through apps/pgq_worker.py), installed from PyPI into
bench/.venvs/pgqueuer. Defaults except the batch size and the number of processes."""

from __future__ import annotations

import subprocess
from typing import Any

from common import APPS, BenchError, Worker, app_env, ensure_venv, query_one

from .base import System

VERSION = "1.6.0"


class PgQueuer(System):
    name = "pgqueuer"
    client_script = "pgq_client.py"
    analyze_sql = "ANALYZE pgqueuer"
    requirements = [f"pgqueuer=={VERSION}", "asyncpg==0.32.0", "uvloop==0.23.0"]

    def prepare(self) -> None:
        self.python = str(ensure_venv("pgqueuer", self.requirements, self.log))
        self.pgq = str(self.python).rsplit("/", 1)[0] + "/pgq"

    def version(self) -> str:
        return VERSION

    def setup_db(self, dsn: str) -> None:
        proc = subprocess.run([self.pgq, "--pg-dsn", dsn, "install"], env=app_env(), capture_output=True, text=True)
        if proc.returncode != 0:
            raise BenchError(f"pgq install failed: {proc.stderr.strip()[-2000:]}")

    def count_done(self, dsn: str, job_type: str) -> int:
        return query_one(dsn, "SELECT count(*) FROM pgqueuer_log WHERE status = 'successful' AND entrypoint = %s",
                         (job_type,))[0]

    def window(self, dsn: str, job_type: str) -> tuple[int, float]:
        n, seconds = query_one(dsn, """
            SELECT count(*) FILTER (WHERE status = 'successful'),
                   extract(epoch FROM max(created) FILTER (WHERE status = 'successful')
                                      - min(created) FILTER (WHERE status = 'picked'))::float8
            FROM pgqueuer_log WHERE entrypoint = %s""", (job_type,))
        return n, seconds

    def candidates(self, workload: str, quick: bool) -> list[dict[str, Any]]:
        if quick:
            return [{"processes": 1, "batch_size": 10}]
        if workload == "cpu":
            return [{"processes": 1, "batch_size": 10}, {"processes": 2, "batch_size": 10}]
        return [{"processes": 1, "batch_size": 10}, {"processes": 2, "batch_size": 10},
                {"processes": 1, "batch_size": 50}, {"processes": 2, "batch_size": 50}]

    def describe(self, conf: dict[str, Any]) -> str:
        p = conf["processes"]
        return f"{p} process{'es' if p != 1 else ''}, batch {conf['batch_size']}"

    def start(self, dsn: str, conf: dict[str, Any], tag: str, **env: Any) -> list[Worker]:
        # `pgq run pgq_app:create --batch-size N` (see apps/pgq_worker.py for why not the command itself)
        cmd = [self.python, str(APPS / "pgq_worker.py"), str(conf["batch_size"])]
        return [Worker(cmd, app_env(BENCH_DSN=dsn, **env), self.log_path(f"{tag}-{i}"))
                for i in range(conf["processes"])]

    def memory(self, workers: list[Worker]) -> dict[str, float]:
        rss = [w.ps.memory_info().rss / 2**20 for w in workers]
        return {"worker_mb": sum(rss) / len(rss), "total_mb": sum(rss)}
