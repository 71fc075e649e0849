"""Micro-benchmark: per-record cost of the two hot job log lines, through structlog
(``get_logger().info(...)``) and through :func:`supervisor.logs.emit_many` (one call per
batch of 2 records, and one call for all records), written to /dev/null with the ``json``
sink. Reports the process CPU time per record, best of several interleaved rounds (the
machine's other load inflates the rest).

    .venv/bin/python bench/logs_fast.py [records] [--secret]

``--secret`` remembers a DSN password first (what the supervisor does when it connects with
one): every string of every record is then checked against it.
"""

from __future__ import annotations

import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from supervisor import logs, units  # noqa: E402


def main() -> None:
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    n = int(args[0]) if args else 10_000
    if "--secret" in sys.argv:
        units.remember_secrets("postgresql://app:s3cretpassw0rd@db.example/app")
    fd = os.open(os.devnull, os.O_WRONLY)
    logs.configure("json", "info", fd=fd)
    log = logs.get_logger()
    fields = [dict(job_id=i, job_type="email.send", queue="default", attempt=1, child_pid=4242) for i in range(n)]

    def via_structlog() -> None:
        for f in fields:
            log.info("job_started", **f)

    def via_emit() -> None:
        for f in fields:
            logs.emit("info", "job_started", **f)

    def via_emit_many_pairs() -> None:
        for i in range(0, n, 2):
            logs.emit_many([("info", "job_started", fields[i]), ("info", "job_succeeded", fields[i + 1])])

    def via_emit_many_all() -> None:
        logs.emit_many([("info", "job_started", f) for f in fields])

    cases = {"structlog": via_structlog}
    if hasattr(logs, "emit_many"):
        cases.update({"emit": via_emit, "emit_many(2)": via_emit_many_pairs, "emit_many(all)": via_emit_many_all})
    best = {name: float("inf") for name in cases}
    rounds = 15
    for _ in range(rounds):
        for name, case in cases.items():  # interleaved: noise from other processes hits all alike
            start = time.process_time()
            case()
            best[name] = min(best[name], (time.process_time() - start) / n * 1e6)
    for name, value in best.items():
        ratio = f"  ({best['structlog'] / value:.1f}x cheaper)" if name != "structlog" else ""
        print(f"{name:16s} {value:6.2f} µs/record (CPU time, best of {rounds} rounds of {n} records){ratio}")


if __name__ == "__main__":
    main()
