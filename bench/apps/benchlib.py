"""What the benchmark handlers do, shared by every system's handlers (standard library only:
it is imported inside each system's own virtualenv).

- ``burn(n)``: pure-Python CPU work; the harness calibrates ``n`` to about 5 ms on this machine.
- ``record(key, attempt)``: note that a handler started, with the time (``time.time()``, the same
  clock as the database server's on this machine), by a UDP datagram to the harness (latency)
  and/or one appended line in a shared file (every execution: duplicates, recovery).
"""

from __future__ import annotations

import os
import socket
import time

_sock: socket.socket | None = None
_fd: int | None = None


def burn(n: int) -> int:
    x = 0
    for i in range(n):
        x += i * i
    return x


def record(key: object, attempt: int = 0) -> float:
    global _sock, _fd
    now = time.time()
    port = os.environ.get("BENCH_UDP_PORT")
    if port:
        if _sock is None:
            _sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        _sock.sendto(f"{key} {now:.6f}".encode(), ("127.0.0.1", int(port)))
    path = os.environ.get("BENCH_RECORD_FILE")
    if path:
        if _fd is None:
            _fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        # One write(2) of a short line with O_APPEND: lines from many processes never interleave.
        os.write(_fd, f"{key} {attempt} {os.getpid()} {now:.6f}\n".encode())
    return now
