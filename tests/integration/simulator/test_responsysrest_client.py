"""The unmodified `responsysrest` PyPI client logs in and triggers an email against the simulator."""

from __future__ import annotations

from gateway_tools.simulator.server import SimulatedAccount
from tests.integration.simulator.conftest import PASSWORD, USER
from tests.support.responsys_clients import ResponsysRestClient, responsysrest_client


def _client(account: SimulatedAccount) -> ResponsysRestClient:
    return responsysrest_client(account.url, user_name=USER, password=PASSWORD)


def test_responsysrest_client_logs_in_and_triggers_an_email(account: SimulatedAccount) -> None:
    client = _client(account)

    result = client.send_email_message(["a@example.com", "b@example.com"], "API", "WELCOME",
                                       optional_data=[{"ORDER": "1"}, {"ORDER": "2"}])

    assert [r["success"] for r in result] == [True, True]
    assert account.stats()["rest_logins"] == 1
    assert [d.recipient for d in account.deliveries()] == ["EMAIL_ADDRESS_:a@example.com",
                                                          "EMAIL_ADDRESS_:b@example.com"]


def test_responsysrest_client_sends_without_optional_data(account: SimulatedAccount) -> None:
    # With no optional data the client sends "optionalData": [{}]; the account accepts it.
    result = _client(account).send_email_message("a@example.com", "API", "WELCOME")

    assert result[0]["success"] is True
