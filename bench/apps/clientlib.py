"""The measuring side of the benchmark clients (standard library only; runs in every
system's virtualenv). Each client script calls ``main(modes)`` with its own functions."""

from __future__ import annotations

import json
import random
import socket
import sys
import time
from typing import Callable


def chunks(n: int, size: int) -> list[range]:
    return [range(i, min(i + size, n)) for i in range(0, n, size)]


def measure_latency(enqueue: Callable[[int], object], n: int, port: int, gap: tuple[float, float] = (0.02, 0.04),
                    timeout: float = 15.0) -> dict:
    """Enqueue one ``record`` job at a time on an idle system and wait for its handler's
    datagram. Returns seconds from the enqueue call to the handler's start, and from the
    enqueue call's return (the commit) to the handler's start."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", port))
    sock.settimeout(timeout)
    from_call, from_commit = [], []
    for k in range(n):
        time.sleep(random.uniform(*gap))
        t0 = time.time()
        enqueue(k)
        t1 = time.time()
        while True:
            data = sock.recv(256).decode().split()
            if int(data[0]) == k:
                started = float(data[1])
                break
        from_call.append(started - t0)
        from_commit.append(started - t1)
    sock.close()
    return {"from_call": from_call, "from_commit": from_commit}


def main(modes: dict[str, Callable[..., dict]]) -> None:
    mode = sys.argv[1]
    args = json.loads(sys.argv[2]) if len(sys.argv) > 2 else {}
    result = modes[mode](**args)
    sys.stdout.write(json.dumps(result) + "\n")
    sys.stdout.flush()
