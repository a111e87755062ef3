"""The benchmark must keep running: a few-second smoke run that only checks it measures and reports."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]
TARGETS = ("a direct", "b gateway", "c nginx", "d haproxy", "e gateway+dns", "f bare proxy")
# Debian packages (scripts/system-packages installs them; .ci/run runs scripts/test, which calls it):
# wrk nginx-light haproxy dnsmasq-base
MISSING = [tool for tool in ("wrk", "nginx", "haproxy", "dnsmasq") if shutil.which(tool) is None]


@pytest.mark.skipif(bool(MISSING), reason=f"benchmark programs not installed: {', '.join(MISSING)} "
                                          "(apt-get install wrk nginx-light haproxy dnsmasq-base)")
def test_quick_benchmark_runs_and_reports_a_table_with_numbers() -> None:
    run = subprocess.run([sys.executable, "-m", "bench.run", "--quick"], cwd=ROOT, capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 0, run.stderr[-3000:]
    out = run.stdout
    for target in TARGETS:
        rows = re.findall(rf"^{re.escape(target)}\s+(\d+)\s+(\d+)\s+(\d+\.\d+)\s+(\d+\.\d+)\s+(\d+)", out, re.MULTILINE)
        assert [row[0] for row in rows] == ["32", "128"], out
        assert all(int(row[1]) > 0 for row in rows), out
    for ratio in ("b/a", "b/c", "b/d", "b/f"):
        assert re.search(rf"{ratio} \d+\.\d\d", out), out
    assert re.search(r"DNS cost per request: -?\d+ µs", out), out
    for target in ("a direct", "c nginx", "b gateway", "e gateway+dns"):
        assert re.search(rf"^{re.escape(target)}\s+\d+\s+\d+\.\d+\s+\d+\.\d+\s+\d+$", out, re.MULTILINE), out
    assert len(re.findall(r"^  .*(?:met|NOT met)", out, re.MULTILINE)) >= 4, out
    # every figure of the speed issue has its line, each with its target met or not
    for figure in (r"throughput at 32 connections >= 0\.15x nginx: b/c \d+\.\d\dx",
                   r"share of the bare proxy .* b/f \d+\.\d\d", r"CPU per forwarded send .*<= 150 µs",
                   r"added p50 at 500 req/s, DNS per request \(e\) over nginx by IP \(c\), <= \+0\.5 ms: [-+]\d",
                   r"added p99 at 500 req/s, DNS per request \(e\) over nginx by IP \(c\), <= \+2\.0 ms: [-+]\d",
                   r"tail at 128 connections: p99 <= 5x p50 with no errors: \d+\.\dx, \d+ errors",
                   r"RSS of one gateway process after [\d,]+ sends .*: \d+\.\d MiB, [-+]\d+\.\d MiB since warm-up"):
        assert re.search(rf"^  {figure}.* (?:met|NOT met)$", out, re.MULTILINE), (figure, out)
    assert re.search(r"^  serve --workers N.*N=1 \d+", out, re.MULTILINE), out


def test_quick_hostile_bench_answers_every_attack_and_reports_its_bounds() -> None:
    run = subprocess.run([sys.executable, "-m", "bench.hostile", "--quick"], cwd=ROOT, capture_output=True,
                         text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-3000:]
    out = run.stdout
    assert re.search(r"^30 MiB body to /portal/login\s+HTTP/1.1 413 .*peak RSS \+\d+ MiB$", out, re.MULTILINE), out
    assert re.search(r"^50 MB header line\s+HTTP/1.1 431 ", out, re.MULTILINE), out
    assert re.search(r"^login body at 1 byte/s\s+HTTP/1.1 408 .*held \d+\.\d s$", out, re.MULTILINE), out
    assert re.search(r"^/healthz, 4 clients guessing passwords\s+200\s+p50 \d+\.\d ms", out, re.MULTILINE), out
    assert re.search(r"^the real app logging in during the storm\s+200 ", out, re.MULTILINE), out
    for what in ("80 step 1s/s", "step 1s flat out"):
        assert re.search(rf"^/healthz, {what}\s+200\s+p50 \d+\.\d ms, p99 \d+\.\d ms \(answered 200: \d+",
                         out, re.MULTILINE), out
        assert re.search(rf"^first password login, {what}\s+200\s+median \d+ ms, max \d+ ms \(5 logins\)$", out,
                         re.MULTILINE), out
        assert re.search(rf"^certificate login, {what}\s+200\s+median \d+ ms, max \d+ ms \(5 logins, both steps\)$",
                         out, re.MULTILINE), out
    assert re.search(r"^one address sending 30 cert step 1s\s+200: 20, 429: 10\s+Retry-After \d+$", out,
                     re.MULTILINE), out
    assert re.search(r"^certificate login from another address\s+200 ", out, re.MULTILINE), out
    assert len(re.findall(r"^(?:GET|POST) .*HTTP/1.1 4\d\d ", out, re.MULTILINE)) == 4, out
