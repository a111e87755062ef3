"""The chaos drill with real processes: SIGKILL a gateway, kill one of two replicas on PostgreSQL,
crash PostgreSQL under two replicas, retry every keyed request five times. Each scenario loses no
accepted send and delivers no keyed send twice; the command prints the table and exits 0.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from gateway_tools.chaos.main import SCENARIOS, render, run_chaos


def test_every_scenario_loses_nothing_and_sends_keyed_ones_once(tmp_path: Path) -> None:
    results = {r.scenario: r for r in run_chaos(scale=0.5, directory=tmp_path, report=lambda line: None)}
    table = render(list(results.values()))
    assert set(results) == set(SCENARIOS), table
    for result in results.values():
        assert result.skipped is None, table
        assert result.accepted >= 10, table  # the disruption struck while sends were being accepted
        assert result.lost == 0, table
        assert result.keyed_duplicates == 0, table
        assert result.keyed_refused == 0, table  # a careful app always got its keyed send in
        assert result.once + result.unkeyed_duplicates == result.accepted, table
        assert "500" not in result.answers, table  # an outage is a vendor-shaped 503, never a crash
    # The kills struck with sends waiting in the outbox, so recovery really had queued work to do.
    assert results["sigkill"].facts["queued_at_kill"] > 0, table
    assert results["replica-kill"].facts["queued_at_kill"] > 0, table
    # While PostgreSQL was down, both replicas said they were not ready, and the apps were told 503.
    assert results["postgres-restart"].facts["not_ready_after"] < 15, table
    assert results["postgres-restart"].answers["503"] > 0, table
    # Every keyed request went five times: the retries were answered without a second delivery.
    retry = results["key-retry"]
    assert sum(retry.answers.values()) >= 5 * (retry.sends // 2), table


def test_chaos_command_prints_the_table_and_exits_zero(tmp_path: Path) -> None:
    completed = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "drill", "--chaos", "--scenario", "key-retry", "--scale", "0.3",
         "--data-dir", str(tmp_path)], capture_output=True, text=True, timeout=180)
    assert completed.returncode == 0, completed.stdout + completed.stderr
    header, rule, row = completed.stdout.splitlines()[:3]
    assert header.split()[:3] == ["scenario", "sends", "accepted"]
    assert set(rule.replace(" ", "")) == {"-"}
    name, sends, accepted, once, dup_keyed, _dup_unkeyed, lost, _refused = row.split()
    assert name == "key-retry" and int(sends) > 0 and lost == "0" and dup_keyed == "0"
    assert int(once) == int(accepted) > 0
