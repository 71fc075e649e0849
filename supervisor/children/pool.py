"""The supervisor's side of its children: spawning, messaging, output, exit decoding.

The pool owns the map child -> job. It does no database work and makes no policy
decisions: the supervisor's loop (``supervisor/parent.py``) asks it questions and tells it
what to do, so each step of the loop stays one readable method.
"""

from __future__ import annotations

import base64
import collections
import errno
import os
import pickle
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Iterator

from .. import logs
from . import protocol

BOOTING, IDLE, BUSY, STOPPING = "booting", "idle", "busy", "stopping"
SEND_TIMEOUT = 10.0


@dataclass
class Running:
    """A job handed to a child: what the supervisor must know if the child never answers."""

    id: int
    job_type: str
    queue: str
    attempts: int
    max_attempts: int | None
    lock: str
    started: float  # monotonic
    deadline: float | None  # monotonic; None = no timeout
    timeout: float | None
    finished: float = 0.0  # monotonic: when its child reported it done (a success waiting to be recorded)


@dataclass
class Child:
    proc: subprocess.Popen
    sock: socket.socket
    out_fd: int
    generation: int
    lock: str
    state: str = BOOTING
    started: float = field(default_factory=time.monotonic)
    idle_since: float = field(default_factory=time.monotonic)
    job: Running | None = None
    jobs_done: int = 0
    rss: int = 0
    # Why the supervisor is ending this child ("timeout", "killed", "shutdown", "lock_lost",
    # "recycle", "retire", "reload"), so its exit can be recorded correctly.
    ending: str | None = None
    # Claimed for this child and not started yet (prefetch): (Running, spec, payload JSON).
    # The first ``sent`` of them are already in its socket, queued behind its current job;
    # ``releasing`` says why they were asked back (a ``released`` answer is awaited).
    prefetched: collections.deque = field(default_factory=collections.deque)
    sent: int = 0
    releasing: str | None = None
    stop_sent: bool = False
    eof: bool = False  # its control socket reached end-of-file
    out_eof: bool = False  # its output pipe reached end-of-file
    term_sent: float | None = None
    kill_at: float | None = None
    exit_status: int | None = None
    inbuf: protocol.LineBuffer = field(default_factory=protocol.LineBuffer)
    outbuf: protocol.LineBuffer = field(default_factory=lambda: protocol.LineBuffer(limit=logs.MAX_LINE))
    types: dict[str, Any] = field(default_factory=dict)

    @property
    def pid(self) -> int:
        return self.proc.pid


def describe_exit(status: int) -> str:
    """Popen's returncode as words for last_error: ``SIGKILL``, ``exit status 3``."""
    if status < 0:
        try:
            return signal.Signals(-status).name
        except ValueError:
            return f"signal {-status}"
    return f"exit status {status}"


class Pool:
    def __init__(self, runner_id: str):
        self.runner_id = runner_id
        self.children: dict[int, Child] = {}
        self.generation = 0
        self.log = logs.get_logger()

    # --- questions ------------------------------------------------------------------------
    def __iter__(self) -> Iterator[Child]:
        return iter(list(self.children.values()))

    def __len__(self) -> int:
        return len(self.children)

    def in_state(self, *states: str) -> list[Child]:
        return [c for c in self.children.values() if c.state in states]

    def busy(self) -> list[Child]:
        return [c for c in self.children.values() if c.job is not None]

    def idle(self) -> list[Child]:
        return [c for c in self.children.values() if c.state == IDLE and c.ending is None]

    def by_fd(self, fd: int) -> Child | None:
        for child in self.children.values():
            if child.sock.fileno() == fd or child.out_fd == fd:
                return child
        return None

    # --- actions ------------------------------------------------------------------------
    def spawn(self, hello: dict[str, Any], config: Any) -> Child:
        parent_end, child_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        out_r, out_w = os.pipe()
        env = dict(os.environ)
        env.pop("NOTIFY_SOCKET", None)  # only the supervisor talks to systemd
        try:
            proc = subprocess.Popen(
                [sys.executable, "-m", "supervisor.children.worker", str(child_end.fileno()), str(os.getpid())],
                stdin=subprocess.DEVNULL,
                stdout=out_w,
                stderr=out_w,
                pass_fds=(child_end.fileno(),),
                close_fds=True,
                process_group=0,  # the terminal's Ctrl-C reaches only the supervisor
                env=env,
                cwd=config.base_dir,
            )
        finally:
            child_end.close()
            os.close(out_w)
        os.set_blocking(out_r, False)
        parent_end.setblocking(False)
        child = Child(proc=proc, sock=parent_end, out_fd=out_r, generation=self.generation,
                      lock=f"{self.runner_id}/{proc.pid}")
        self.children[proc.pid] = child
        message = dict(hello)
        message["config"] = base64.b64encode(pickle.dumps(config)).decode("ascii")
        self.send(child, protocol.encode({"op": protocol.HELLO, **message}))
        return child

    def send(self, child: Child, data: bytes) -> bool:
        """Send a message. Small ones fit the socket buffer; a large payload waits for the (idle)
        child to read it, but never longer than SEND_TIMEOUT: a hung child is killed instead."""
        try:
            try:
                sent = child.sock.send(data)  # the common case: it fits, no mode switching
            except BlockingIOError:
                sent = 0
            if sent < len(data):
                child.sock.settimeout(SEND_TIMEOUT)
                try:
                    child.sock.sendall(data[sent:])
                finally:
                    child.sock.setblocking(False)
            return True
        except OSError:
            # Gone (reaping will tell why) or hung: either way it cannot take work.
            self.kill(child, child.ending or "unresponsive")
            return False

    def hand_out(self, child: Child, job: Running, spec: dict[str, Any], payload_json: str, sent: bool = False) -> bool:
        """Make ``job`` the child's current one; send it unless it was queued to it before."""
        child.job = job
        child.state = BUSY
        return True if sent else self.send(child, protocol.encode_run(spec, payload_json))

    def ask_to_stop(self, child: Child, reason: str, grace: float) -> None:
        """Finish the current job (if any), then exit; killed if it is still there after ``grace``
        beyond the job's own end."""
        if child.ending is None:
            child.ending = reason
        if child.job is None and child.state != STOPPING:
            child.state = STOPPING
            child.kill_at = time.monotonic() + grace
        if not child.stop_sent:
            child.stop_sent = True
            self.send(child, protocol.encode({"op": protocol.STOP}))

    def terminate(self, child: Child, reason: str, grace: float) -> None:
        """SIGTERM now, SIGKILL after ``grace`` seconds if it is still alive."""
        child.ending = reason
        if child.term_sent is None:
            child.term_sent = time.monotonic()
            child.kill_at = child.term_sent + grace
            self._signal(child, signal.SIGTERM)

    def kill(self, child: Child, reason: str | None = None) -> None:
        if reason is not None:
            child.ending = reason
        self._signal(child, signal.SIGKILL)

    def _signal(self, child: Child, sig: int) -> None:
        try:
            os.kill(child.pid, sig)
        except ProcessLookupError:
            pass

    # --- reading --------------------------------------------------------------------------
    def read_messages(self, child: Child) -> list[dict[str, Any]]:
        messages = []
        while True:
            try:
                data = child.sock.recv(65536)
            except BlockingIOError:
                break
            except OSError:
                child.eof = True
                break
            if not data:
                child.eof = True  # it closed its end: exiting (or gone)
                break
            for line in child.inbuf.feed(data):
                try:
                    messages.append(protocol.decode(line))
                except ValueError:
                    self.log.error("child_protocol_error", child_pid=child.pid, line=line[:200].decode("utf-8", "replace"))
            if len(data) < 65536:
                break
        return messages

    def read_output(self, child: Child, final: bool = False) -> list[bytes]:
        """Lines the child wrote to stdout/stderr, as JSON log lines."""
        lines: list[bytes] = []
        while True:
            try:
                data = os.read(child.out_fd, 65536)
            except BlockingIOError:
                break
            except OSError as error:
                if error.errno == errno.EINTR:
                    continue
                break
            if not data:
                child.out_eof = True
                break
            lines.extend(child.outbuf.feed(data))
        if final:
            rest = child.outbuf.rest()
            if rest.strip():
                lines.append(rest)
        return [logs.wrap_foreign_line(line, child_pid=child.pid) for line in lines if line.strip()]

    # --- exits ----------------------------------------------------------------------------
    def poll_exited(self) -> list[Child]:
        exited = []
        for child in list(self.children.values()):
            status = child.proc.poll()
            if status is not None:
                child.exit_status = status
                exited.append(child)
        return exited

    def forget(self, child: Child) -> None:
        self.children.pop(child.pid, None)
        try:
            child.sock.close()
        except OSError:
            pass
        try:
            os.close(child.out_fd)
        except OSError:
            pass

    def kill_all(self) -> None:
        for child in self.children.values():
            self._signal(child, signal.SIGKILL)

    def wait_all(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        for child in list(self.children.values()):
            remaining = max(deadline - time.monotonic(), 0.0)
            try:
                child.exit_status = child.proc.wait(remaining)
            except subprocess.TimeoutExpired:
                self._signal(child, signal.SIGKILL)
                try:
                    child.exit_status = child.proc.wait(1.0)
                except subprocess.TimeoutExpired:
                    pass
