from __future__ import annotations

from collections.abc import Iterator

import pytest

from gateway_tools.simulator.server import SimulatedAccount


@pytest.fixture
def account() -> Iterator[SimulatedAccount]:
    """One simulated Responsys account (plain HTTP on loopback) for a gateway process to call."""
    with SimulatedAccount(name="primary", user_name="api_primary", password="pw") as simulated:
        yield simulated
