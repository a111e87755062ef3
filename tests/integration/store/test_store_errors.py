"""The store's error boundary: a driver's or the OS's error leaves a backend only as `StoreError`."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from gateway import errors, store
from gateway.store import StoreError, open_store


def test_the_store_raises_the_errors_of_the_one_tree() -> None:
    assert (store.StoreError, store.ItemNotFound, store.LeaseLost) == (
        errors.StoreError, errors.ItemNotFound, errors.LeaseLost)
    assert issubclass(errors.StoreError, errors.GatewayError)


async def test_opening_a_file_that_is_not_a_database_is_a_store_error(tmp_path: Path) -> None:
    path = tmp_path / "gateway.db"
    path.write_bytes(b"this is a text file, not a SQLite database\n" * 200)
    with pytest.raises(StoreError, match="cannot open") as raised:
        await open_store(f"sqlite:///{path}")
    assert isinstance(raised.value.__cause__, sqlite3.DatabaseError)


async def test_opening_a_store_below_a_regular_file_is_a_store_error(tmp_path: Path) -> None:
    (tmp_path / "data").write_text("a file where the store's folder should be")
    with pytest.raises(StoreError, match="cannot open") as raised:
        await open_store(f"sqlite:///{tmp_path / 'data' / 'gateway.db'}")
    assert isinstance(raised.value.__cause__, OSError)


def test_cli_reports_a_store_it_cannot_open_in_a_sentence(tmp_path: Path) -> None:
    path = tmp_path / "gateway.db"
    path.write_bytes(b"not a database\n" * 400)
    config = {"store": f"sqlite:///{path}",
              "accounts": [{"name": "p", "login_url": "https://127.0.0.1:9", "user_name": "u", "password": "p"}]}
    (tmp_path / "gw.yaml").write_text(yaml.safe_dump(config))
    done = subprocess.run([sys.executable, "-m", "gateway.cli", "migrate", "--config", str(tmp_path / "gw.yaml")],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert f"store problem: store {path}: cannot open" in done.stderr
    assert "Traceback" not in done.stderr
