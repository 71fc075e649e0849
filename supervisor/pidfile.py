"""The pidfile: written atomically at start, held with an exclusive lock while we run,
refused when a live supervisor holds it, and never trusted blindly (pids get reused)."""

from __future__ import annotations

import fcntl
import os

import psutil

from .errors import UserError


def _is_our_supervisor(pid: int, written_at: float) -> bool:
    """Is ``pid`` a live jobsupervisor that existed when the pidfile was written?"""
    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return False
        if proc.create_time() > written_at + 1.0:
            return False  # born after the file was written: a reused pid
        title = " ".join(proc.cmdline())
    except psutil.NoSuchProcess:
        return False
    except (psutil.AccessDenied, OSError):
        return True  # cannot tell: assume it is, rather than ignore a running supervisor
    return "jobsupervisor" in title or "supervisor.cli" in title


def _make_dirs(directory: str) -> None:
    """Create missing directories 0755 (not what a umask of 000 would give: 0777)."""
    missing = []
    path = os.path.abspath(directory)
    while not os.path.isdir(path):
        missing.append(path)
        parent = os.path.dirname(path)
        if parent == path:
            break
        path = parent
    for path in reversed(missing):
        try:
            os.mkdir(path, 0o755)
        except FileExistsError:
            continue
        os.chmod(path, 0o755)


class Pidfile:
    def __init__(self, path: str):
        self.path = path
        self.written = False
        self.fd: int | None = None

    def read_live_pid(self) -> int | None:
        """The pid in the file if it is a live jobsupervisor, else None."""
        try:
            with open(self.path) as f:
                pid = int(f.read().split()[0])
            written_at = os.stat(self.path).st_mtime
        except (OSError, ValueError, IndexError):
            return None
        if pid <= 0:
            return None
        return pid if _is_our_supervisor(pid, written_at) else None

    def acquire(self) -> None:
        directory = os.path.dirname(self.path) or "."
        try:
            _make_dirs(directory)
            # The lock closes the gap between "nobody holds it" and "we wrote it".
            self.fd = os.open(self.path + ".lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
            os.fchmod(self.fd, 0o600)
        except OSError as error:
            raise UserError(f"pidfile {self.path}: cannot write it ({error.strerror})", exit_code=2) from None
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            other = self.read_live_pid()
            raise UserError(f"pidfile {self.path}: a supervisor is already running"
                            + (f" with pid {other}" if other else ""), exit_code=2) from None
        other = self.read_live_pid()
        if other is not None and other != os.getpid():
            raise UserError(f"pidfile {self.path}: a supervisor is already running with pid {other}", exit_code=2)
        try:
            tmp = f"{self.path}.{os.getpid()}.tmp"
            # Never through a symlink someone planted, and never writable by others (whatever
            # the umask): the file decides which process 'stop' signals.
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
            try:
                os.fchmod(fd, 0o644)
                os.write(fd, f"{os.getpid()}\n".encode())
            finally:
                os.close(fd)
            os.replace(tmp, self.path)
        except OSError as error:
            raise UserError(f"pidfile {self.path}: cannot write it ({error.strerror})", exit_code=2) from None
        self.written = True

    def release(self) -> None:
        if self.written:
            try:
                with open(self.path) as f:
                    if int(f.read().split()[0]) == os.getpid():
                        os.unlink(self.path)
            except (OSError, ValueError, IndexError):
                pass
        if self.fd is not None:
            # The lock file stays: unlinking it would let two later starters lock different inodes.
            os.close(self.fd)
            self.fd = None
