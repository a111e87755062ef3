"""Retention purge and the operator's outbox commands, on a real SQLite store."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import yaml

from gateway.config import parse_config
from gateway.runtime import Runtime
from gateway.store import OutboxItem, open_store


def _config(tmp_path: Path, **extra: object) -> dict[str, object]:
    return {"store": f"sqlite:///{tmp_path / 'gw.db'}", **extra,
            "accounts": [{"name": "p", "login_url": "https://127.0.0.1:9", "user_name": "u", "password": "p"}]}


async def test_retention_purge_drops_expired_idempotency_records(tmp_path: Path) -> None:
    config = parse_config(_config(tmp_path, requests={"idempotency_window": 0.0},
                                  outbox={"retention_days": 0.0, "purge_interval": 3600.0}), environ={})
    runtime = Runtime(config)
    await runtime.start()
    try:
        store = runtime.store
        assert store is not None
        await store.idempotency_put("app:old", 200, (), b"first", time.time() - 10)
        await store.idempotency_put("app:fresh", 200, (), b"first", time.time() + 3600)
        purged = await runtime.retention.purge_once()
        assert purged.idempotency_records == 1
        assert await store.idempotency_get("app:old") is None
        assert await store.idempotency_get("app:fresh") is not None
    finally:
        await runtime.close()


async def test_outbox_commands_list_retry_and_drop(tmp_path: Path) -> None:
    (tmp_path / "gw.yaml").write_text(yaml.safe_dump(_config(tmp_path)))
    store = await open_store(f"sqlite:///{tmp_path / 'gw.db'}")
    item_id = await store.enqueue(OutboxItem.new(protocol="rest", method="POST", path="/rest/api/v1.3/events/e",
                                                 headers=(), body=b"{}", client="app", now=time.time(),
                                                 max_age=60))
    await store.close()

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "gateway.cli", "outbox", "--config", str(tmp_path / "gw.yaml"),
                               *args], capture_output=True, text=True, timeout=60)

    listed = cli("list")
    assert listed.returncode == 0 and item_id in listed.stdout and "pending" in listed.stdout
    assert cli("retry", item_id).returncode == 0
    assert cli("drop", item_id).returncode == 0
    assert item_id not in cli("list").stdout
    assert cli("drop", item_id).returncode == 1
