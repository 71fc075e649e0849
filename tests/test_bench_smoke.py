"""The benchmark harness (bench/run.py) still runs: a tiny run of our system only, so CI needs
no peer installed. A benchmark is not a test: nothing here looks at the numbers."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_bench_quick_run_prints_the_table(server_dsn: str, tmp_path: Path) -> None:
    out = tmp_path / "results.md"
    proc = subprocess.run(
        [sys.executable, str(REPO / "bench" / "run.py"), "--quick", "--only", "enqueue,noop",
         "--systems", "jobsupervisor", "--dsn", server_dsn, "--out", str(out)],
        capture_output=True, text=True, timeout=100, cwd=REPO,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "| Measure | jobsupervisor |" in proc.stdout
    for row in ("Enqueue, one job per transaction", "Enqueue, bulk", "No-op drain", "CPU per no-op job, supervisor only"):
        assert row in proc.stdout, row
    assert "Failed measurements" not in proc.stdout
    assert out.read_text().strip() == proc.stdout.strip()
