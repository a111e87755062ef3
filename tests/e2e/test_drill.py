"""The failover drill (`aftm-gateway demo --drill`) at a small scale: nothing accepted is lost, and
every SMS PIN failed on the short code arrives from the long code with the right callbacks."""

from __future__ import annotations

import asyncio
import re
import threading
import time
from pathlib import Path

import pytest

from gateway_tools.drill.main import run_drill, script

SCALE = 0.2
WITHIN = 40.0  # seconds the short drill may take, start to finish


def test_short_drill_loses_nothing_and_stops_every_listener(tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    threads_before = set(threading.enumerate())
    started = time.monotonic()
    code = asyncio.run(run_drill(data_dir=tmp_path / "drill", duration_scale=SCALE))
    took = time.monotonic() - started
    out = capsys.readouterr().out
    log = (tmp_path / "drill" / "drill.log").read_text(errors="replace")[-3000:]

    assert code == 0, f"{out}\n--- drill.log (tail) ---\n{log}"
    assert re.search(r"^lost 0$", out, flags=re.MULTILINE), out
    for phase in script():  # one row per phase
        assert re.search(rf"^{re.escape(phase.name)}\s+\d+\s", out, flags=re.MULTILINE), (phase.name, out)
    total = re.search(r"^total\s+(\d+)\s", out, flags=re.MULTILINE)
    assert total is not None and int(total.group(1)) > 0, out
    # The SMS part: every PIN failed on the short code and was delivered from the long code, with the
    # right callbacks for both receipt levels.
    assert re.search(r"^SMS passed$", out, flags=re.MULTILINE), out
    sms = re.search(r"accepted (\d+), forwarded to long code (\d+), delivered from \+\d+ (\d+)", out)
    assert sms is not None and len(set(sms.groups())) == 1 and int(sms.group(1)) >= 4, out
    levels = re.search(r"callbacks as expected: ALL (\d+)/(\d+) .* FINAL (\d+)/(\d+)", out)
    assert levels is not None and levels.group(1) == levels.group(2) and levels.group(3) == levels.group(4), out
    assert took < WITHIN, f"the short drill took {took:.1f}s"
    # every simulator and the gateway were stopped: their threads are gone
    left = [t.name for t in set(threading.enumerate()) - threads_before if t.is_alive()]
    assert left == [], left
