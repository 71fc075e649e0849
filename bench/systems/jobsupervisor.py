"""jobsupervisor: the real ``jobsupervisor -c config.yaml run`` supervisor with its child pool.

Workers run with the harness' own Python (the project's environment). Configuration is the
defaults except the pool size (``children.min = children.max``, fixed for the measurement)."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import psutil
import yaml

from common import REPO, BenchError, Worker, app_env, query, query_one, wait_for

from .base import System

CLI = [sys.executable, "-m", "supervisor.cli"]


class JobSupervisor(System):
    name = "jobsupervisor"
    client_script = "js_client.py"
    analyze_sql = "ANALYZE jobs"

    def prepare(self) -> None:
        self.python = sys.executable

    def version(self) -> str:
        import supervisor

        rev = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
        dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--", "supervisor"],
                               capture_output=True, text=True)
        rev_text = rev.stdout.strip() + ("+local changes" if dirty.stdout.strip() else "")
        return f"{supervisor.__version__} ({rev_text})" if rev_text else supervisor.__version__

    # --- configuration --------------------------------------------------------------------------
    def config(self, dsn: str, tag: str, children: int = 2, **extra: Any) -> Path:
        cfg = {
            "database": {"dsn": dsn},
            "imports": ["js_tasks"],
            "children": {"min": children, "max": children},
            "logging": {"format": "json", "level": "info"},
        }
        cfg.update(extra)
        path = self.run_dir / f"jobsupervisor-{tag}.yaml"
        path.write_text(yaml.safe_dump(cfg, sort_keys=False))
        return path

    # --- database -------------------------------------------------------------------------------
    def setup_db(self, dsn: str) -> None:
        cfg = self.config(dsn, "migrate")
        proc = subprocess.run([*CLI, "-c", str(cfg), "migrate"], env=app_env(), capture_output=True, text=True)
        if proc.returncode != 0:
            raise BenchError(f"jobsupervisor migrate failed: {proc.stderr.strip()}")

    def count_done(self, dsn: str, job_type: str) -> int:
        return query_one(dsn, "SELECT count(*) FROM jobs WHERE status = 'succeeded' AND job_type = %s", (job_type,))[0]

    def window(self, dsn: str, job_type: str) -> tuple[int, float]:
        n, seconds = query_one(dsn, """
            SELECT count(*), extract(epoch FROM max(finished_at) - min(locked_at))::float8
            FROM jobs WHERE status = 'succeeded' AND job_type = %s""", (job_type,))
        return n, seconds

    # --- workers --------------------------------------------------------------------------------
    def candidates(self, workload: str, quick: bool) -> list[dict[str, Any]]:
        if workload == "cpu":
            return [{"children": 1}, {"children": 2}] if quick else [{"children": 1}, {"children": 2}, {"children": 3}]
        return [{"children": 2}] if quick else [{"children": 2}, {"children": 4}, {"children": 8}]

    def describe(self, conf: dict[str, Any]) -> str:
        sups = conf.get("supervisors", 1)
        head = f"{sups} supervisors × " if sups > 1 else ""
        return f"{head}{conf['children']} child{'ren' if conf['children'] != 1 else ''}"

    def start(self, dsn: str, conf: dict[str, Any], tag: str, **env: Any) -> list[Worker]:
        workers = []
        for i in range(conf.get("supervisors", 1)):
            cfg = self.config(dsn, f"{tag}-{i}", children=conf["children"], **conf.get("extra", {}))
            workers.append(Worker([*CLI, "-c", str(cfg), "run"], app_env(**env), self.log_path(f"{tag}-{i}")))
        return workers

    def idle_children(self, worker: Worker) -> int:
        n = 0
        for child in worker.children():
            try:
                if "child idle" in " ".join(child.cmdline()):
                    n += 1
            except psutil.NoSuchProcess:
                pass
        return n

    def wait_ready(self, dsn: str, workers: list[Worker], conf: dict[str, Any]) -> None:
        wait_for(lambda: all(self.idle_children(w) >= conf["children"] for w in workers), timeout=60, interval=0.05,
                 what="jobsupervisor children to be idle", check=lambda: self._check_alive(workers))
        super().wait_ready(dsn, workers, conf)

    def cpu(self, workers: list[Worker]) -> dict[str, float]:
        sup = sum(w.cpu() for w in workers)
        kids = sum(w.children_cpu() for w in workers)
        return {"system": sup + kids, "supervisor": sup, "children": kids}

    def memory(self, workers: list[Worker]) -> dict[str, float]:
        sup = [w.ps.memory_info().rss / 2**20 for w in workers]
        kids = [c.memory_info().rss / 2**20 for w in workers for c in w.children()]
        return {"supervisor_mb": sum(sup) / len(sup), "child_mb": sum(kids) / len(kids) if kids else float("nan"),
                "total_mb": sum(sup) + sum(kids)}

    def stop(self, workers: list[Worker], fast: bool = False) -> None:
        for w in workers:
            w.stop(signal.SIGKILL if fast else signal.SIGTERM, timeout=20)

    # --- fleet ----------------------------------------------------------------------------------
    def claims(self, dsn: str) -> list[tuple]:
        """Claim batches that took at least one job: one per (runner, locked_at) since each claim
        is one statement with one now()."""
        return query(dsn, """
            SELECT split_part(locked_by, '/', 1) AS runner, locked_at, count(*)
            FROM jobs WHERE job_type = 'record' GROUP BY 1, 2""")
