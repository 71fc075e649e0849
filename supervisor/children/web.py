"""The dashboard as one more managed child of the supervisor (``web.listen``).

It runs ``python -m supervisor.web.serve`` with the supervisor's resolved DSN in its
environment (never on the command line, where ``ps`` shows it). Its output is re-emitted
as JSON log lines like every child's. If it dies it is started again with a growing delay,
so a port already in use does not become a restart storm.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from typing import Any

from .. import logs
from . import protocol

MAX_RESTART_DELAY = 60.0


class WebProcess:
    def __init__(self, config: Any, dsn: str):
        self.config = config
        self.dsn = dsn
        self.proc: subprocess.Popen | None = None
        self.out_fd: int | None = None
        self.outbuf = protocol.LineBuffer(limit=logs.MAX_LINE)
        self.restart_at: float | None = None
        self.restart_delay = 1.0
        self.started_at = 0.0
        self.stopping = False

    @property
    def running(self) -> bool:
        return self.proc is not None

    def start(self) -> None:
        argv = [sys.executable, "-m", "supervisor.web.serve", "--parent-pid", str(os.getpid())]
        if self.config.path:
            argv[3:3] = ["-c", self.config.path]
        env = dict(os.environ)
        env.pop("NOTIFY_SOCKET", None)
        env["JOBSUPERVISOR_WEB_DSN"] = self.dsn
        out_r, out_w = os.pipe()
        try:
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out_w, stderr=out_w,
                                         close_fds=True, process_group=0, env=env, cwd=self.config.base_dir)
        finally:
            os.close(out_w)
        os.set_blocking(out_r, False)
        self.out_fd = out_r
        self.started_at = time.monotonic()
        self.restart_at = None

    def read_output(self, final: bool = False) -> list[bytes]:
        if self.out_fd is None:
            return []
        lines: list[bytes] = []
        while True:
            try:
                data = os.read(self.out_fd, 65536)
            except BlockingIOError:
                break
            except OSError:
                break
            if not data:
                break
            lines.extend(self.outbuf.feed(data))
        if final:
            rest = self.outbuf.rest()
            if rest.strip():
                lines.append(rest)
        pid = self.proc.pid if self.proc else None
        return [logs.wrap_foreign_line(line, web_pid=pid) for line in lines if line.strip()]

    def poll(self) -> int | None:
        """The exit status if it has exited (and schedules the restart), else None."""
        if self.proc is None:
            return None
        status = self.proc.poll()
        if status is None:
            return None
        self.proc = None
        if not self.stopping:
            # Ran a good while: a fresh failure, restart quickly. Died at once: back off.
            if time.monotonic() - self.started_at > 30:
                self.restart_delay = 1.0
            self.restart_at = time.monotonic() + self.restart_delay
            self.restart_delay = min(self.restart_delay * 2, MAX_RESTART_DELAY)
        return status

    def close_output(self) -> None:
        if self.out_fd is not None:
            try:
                os.close(self.out_fd)
            except OSError:
                pass
            self.out_fd = None

    def stop(self, timeout: float = 5.0) -> None:
        self.stopping = True
        if self.proc is None:
            return
        try:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(2)
        except ProcessLookupError:
            pass
