"""What the workloads need from a system: install, schema, start and stop real workers with
the system's own CLI, enqueue through its public API (a client script in its interpreter),
and read what happened from its own tables (the database's timestamps)."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any, Callable

import psutil

from common import BenchError, Worker, app_env, run_client, wait_for, wait_settled


class System:
    name = ""
    client_script = ""
    requirements: list[str] = []

    def __init__(self, run_dir: Path, log: Callable[[str], None]):
        self.run_dir = run_dir
        self.log = log
        self.python = ""

    # --- installation -------------------------------------------------------------------------
    def prepare(self) -> None:
        raise NotImplementedError

    def version(self) -> str:
        raise NotImplementedError

    # --- database -------------------------------------------------------------------------------
    def setup_db(self, dsn: str) -> None:
        raise NotImplementedError

    def count_done(self, dsn: str, job_type: str) -> int:
        raise NotImplementedError

    analyze_sql = ""

    def window(self, dsn: str, job_type: str) -> tuple[int, float]:
        """(jobs done, seconds from the first claim to the last completion), from the system's
        own rows and the database clock."""
        raise NotImplementedError

    # --- workers --------------------------------------------------------------------------------
    def candidates(self, workload: str, quick: bool) -> list[dict[str, Any]]:
        """Worker configurations to try for a drain; the best one is measured."""
        raise NotImplementedError

    def describe(self, conf: dict[str, Any]) -> str:
        return ", ".join(f"{k} {v}" for k, v in conf.items())

    def start(self, dsn: str, conf: dict[str, Any], tag: str, **env: Any) -> list[Worker]:
        raise NotImplementedError

    def processes(self, workers: list[Worker]) -> list[psutil.Process]:
        """Every process of the system that runs (for readiness and CPU)."""
        procs: list[psutil.Process] = []
        for w in workers:
            procs.append(w.ps)
            procs.extend(w.children())
        return procs

    def wait_ready(self, dsn: str, workers: list[Worker], conf: dict[str, Any]) -> None:
        """Started, imported, connected, listening: a few warm-up jobs ran and every process
        has gone quiet."""
        self._check_alive(workers)
        wait_settled(self.processes(workers), timeout=20)
        n = 4 * max(1, len(workers))
        self.client("load", dsn=dsn, job_type="warmup", n=n)
        wait_for(lambda: self.count_done(dsn, "warmup") >= n, timeout=60, interval=0.05,
                 what=f"{self.name} warm-up jobs", check=lambda: self._check_alive(workers))
        wait_settled(self.processes(workers), timeout=10)

    def cpu(self, workers: list[Worker]) -> dict[str, float]:
        """CPU seconds so far, by role."""
        return {"system": sum(w.cpu() + w.children_cpu() for w in workers)}

    def memory(self, workers: list[Worker]) -> dict[str, float]:
        raise NotImplementedError

    def stop(self, workers: list[Worker], fast: bool = False) -> None:
        for w in workers:
            w.stop(signal.SIGKILL if fast else signal.SIGTERM)

    def _check_alive(self, workers: list[Worker]) -> None:
        for w in workers:
            if not w.alive():
                raise BenchError(f"{self.name} worker exited (status {w.proc.returncode}); its log:\n{w.tail()}")

    # --- clients -------------------------------------------------------------------------------
    def client(self, mode: str, timeout: float = 600.0, env: dict[str, str] | None = None, **args: Any) -> dict[str, Any]:
        return run_client(self.python, self.client_script, mode, args, env or app_env(), timeout=timeout)

    def log_path(self, tag: str) -> Path:
        path = self.run_dir / f"{self.name}-{tag}.log"
        return path
