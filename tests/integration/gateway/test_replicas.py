"""Two gateway replicas on one store agree on the failover state within a second."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable

import httpx
import pytest

from tests.integration.gateway.conftest import ADMIN_TOKEN, Deployment
from tests.integration.store.conftest import postgres_schema
from tests.support.servers import ServerThread, wait_until

AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


@pytest.fixture(params=["sqlite", "postgresql"])
async def replicas(request: pytest.FixtureRequest,
                   make_deployment: Callable[..., Deployment]) -> AsyncIterator[tuple[Deployment, ServerThread]]:
    """Replicas A (the deployment's gateway) and B on one store: a SQLite file, or a PostgreSQL schema."""
    async with contextlib.AsyncExitStack() as stack:
        overrides: dict[str, object] = {"failover": {"probe_interval": 60.0}}  # verdicts come from A's traffic
        if request.param == "postgresql":
            overrides["store"] = await stack.enter_async_context(postgres_schema())
        deployment = make_deployment(**overrides)
        stack.callback(deployment.stop_gateway)  # before the schema is dropped
        second = deployment.start_replica()
        stack.callback(second.stop)
        yield deployment, second


def _active(server_url: str) -> str:
    response = httpx.get(f"{server_url}/admin/status", headers=AUTH, trust_env=False, timeout=5)
    response.raise_for_status()
    active: str = response.json()["active"]
    return active


def test_a_manual_override_on_one_replica_is_followed_by_the_other(
        replicas: tuple[Deployment, ServerThread]) -> None:
    deployment, second = replicas
    assert _active(second.url) == "primary"
    with deployment.http() as client:
        client.post("/admin/override", json={"account": "failover"}, headers=AUTH).raise_for_status()
    wait_until(lambda: _active(second.url) == "failover", timeout=1.0, message="replica B to follow the override")


def test_a_health_verdict_on_one_replica_is_followed_by_the_other(
        replicas: tuple[Deployment, ServerThread]) -> None:
    deployment, second = replicas
    token = deployment.rest_token()
    deployment.primary.set_mode("refuse")
    assert deployment.send_email(token, "verdict@example.com").status_code == 200  # A ejects the primary
    assert deployment.admin_status()["active"] == "failover"
    wait_until(lambda: _active(second.url) == "failover", timeout=1.0, message="replica B to follow the verdict")
    status = httpx.get(f"{second.url}/admin/status", headers=AUTH, trust_env=False).json()
    # B's only probe of the primary ran at its start, while the primary was up: B learned it from A.
    assert status["failover"]["accounts"]["primary"]["healthy"] is False
