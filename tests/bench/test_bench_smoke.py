"""The benchmark must keep running: a few-second smoke run that only checks it measures and reports."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parents[2]


def test_quick_benchmark_runs_and_reports_every_target() -> None:
    # .ci/run installs wrk, nginx, haproxy and dnsmasq from Debian; without them this fails, on purpose.
    run = subprocess.run([sys.executable, "-m", "bench.run", "--quick"], cwd=ROOT, capture_output=True, text=True,
                         timeout=240)
    assert run.returncode == 0, run.stderr[-2000:]
    for target in ("a direct", "b gateway", "c nginx", "d haproxy", "e gateway+dns"):
        rows = re.findall(rf"^{re.escape(target)}\s+(\d+)\s+(\d+)\s", run.stdout, re.MULTILINE)
        assert [conns for conns, _ in rows] == ["32", "128"], run.stdout
        assert all(int(rate) > 0 for _, rate in rows), run.stdout
    assert "targets:" in run.stdout and re.search(r"b/c \d+\.\d\d", run.stdout)
