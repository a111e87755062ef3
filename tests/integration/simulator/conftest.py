from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from gateway_tools.simulator.server import SimulatedAccount

USER = "api_primary"
PASSWORD = "pw-primary-test"


@pytest.fixture
def make_account() -> Iterator[Callable[..., SimulatedAccount]]:
    """Start simulated accounts on ephemeral loopback ports; all stopped after the test."""
    started: list[SimulatedAccount] = []

    def make(**kwargs: Any) -> SimulatedAccount:
        options: dict[str, Any] = {"name": "primary", "user_name": USER, "password": PASSWORD}
        options.update(kwargs)
        account = SimulatedAccount(**options).start()
        started.append(account)
        return account

    yield make
    for account in started:
        account.stop()


@pytest.fixture
def account(make_account: Callable[..., SimulatedAccount]) -> SimulatedAccount:
    return make_account()


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    with httpx.Client(trust_env=False, timeout=10) as client:
        yield client


def rest_login(http: httpx.Client, base_url: str, *, user: str = USER, password: str = PASSWORD) -> str:
    answer = http.post(f"{base_url}/rest/api/v1.3/auth/token",
                       data={"user_name": user, "password": password, "auth_type": "password"})
    assert answer.status_code == 200, answer.text
    return str(answer.json()["authToken"])


def trigger_body(*emails: str) -> dict[str, Any]:
    return {"recipientData": [
        {"recipient": {"emailAddress": email, "listName": {"folderName": "Lists", "objectName": "CONTACTS"},
                       "recipientId": None, "customerId": None, "mobileNumber": None,
                       "emailFormat": "HTML_FORMAT"},
         "optionalData": [{"name": "ORDER", "value": "42"}]}
        for email in emails
    ]}
