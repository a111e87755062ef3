from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from gateway_tools.simulator.server import SimulatedAccount
from tests.support.servers import free_port


@pytest.fixture
def account() -> Iterator[SimulatedAccount]:
    """One simulated Responsys account (plain HTTP on loopback) for a gateway process to call."""
    with SimulatedAccount(name="primary", user_name="api_primary", password="pw") as simulated:
        yield simulated


@dataclass(frozen=True)
class ServeConfig:
    """A config file for `aftm-gateway serve --config <path>` listening on `base`."""

    port: int
    path: Path

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@pytest.fixture
def serve_config(account: SimulatedAccount, tmp_path: Path) -> ServeConfig:
    """`serve` on a free loopback port, SQLite in `tmp_path`, app `app`/`pw`, `account` as the primary."""
    config = ServeConfig(port=free_port(), path=tmp_path / "gw.yaml")
    config.path.write_text(yaml.safe_dump({
        "listen": {"host": "127.0.0.1", "port": config.port}, "public_url": config.base,
        "store": f"sqlite:///{tmp_path / 'gw.db'}", "clients": [{"user_name": "app", "password": "pw"}],
        "accounts": [{"name": "primary", "login_url": account.url, "user_name": "api_primary", "password": "pw"}],
    }))
    return config
