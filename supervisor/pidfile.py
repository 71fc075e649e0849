"""The pidfile: written atomically at start, refused when a live supervisor holds it."""

from __future__ import annotations

import os

from .errors import UserError


class Pidfile:
    def __init__(self, path: str):
        self.path = path
        self.written = False

    def read_live_pid(self) -> int | None:
        try:
            with open(self.path) as f:
                pid = int(f.read().strip() or 0)
        except (OSError, ValueError):
            return None
        if pid <= 0:
            return None
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            return pid
        return pid

    def acquire(self) -> None:
        other = self.read_live_pid()
        if other is not None and other != os.getpid():
            raise UserError(f"pidfile {self.path}: a supervisor is already running with pid {other}", exit_code=2)
        directory = os.path.dirname(self.path) or "."
        try:
            os.makedirs(directory, exist_ok=True)
            tmp = f"{self.path}.{os.getpid()}.tmp"
            with open(tmp, "w") as f:
                f.write(f"{os.getpid()}\n")
            os.replace(tmp, self.path)
        except OSError as error:
            raise UserError(f"pidfile {self.path}: cannot write it ({error.strerror})", exit_code=2) from None
        self.written = True

    def release(self) -> None:
        if not self.written:
            return
        try:
            if self.read_live_pid() == os.getpid():
                os.unlink(self.path)
        except OSError:
            pass
