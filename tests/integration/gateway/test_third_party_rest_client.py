"""The unmodified `responsysrest` PyPI client, pointed at the gateway instead of Responsys.

How far the library can be configured (responsysrest 0.1.12, read from its source):
- `Configuration` and `Credentials` are plain objects; nothing is read from disk unless the app calls
  `configuration.auto()`/`credentials.auto()` (which walk the current directory for JSON files), so the
  test builds both in memory.
- The `login_url` setter ignores its argument and always builds `http://login<pod>.responsys.net/...`;
  the value lives in the name-mangled attribute behind the property, which is what an app has to set.
- `api_url` is read-only in effect (its setter does nothing): always `rest/api/v<api_version>`, which
  is the family the gateway serves. Every later call goes to the `endPoint` of the login answer, the
  gateway's `public_url`: the library never learns an account's address.
- The client logs in again before every call (`_get_context`), with `requests` (no session object).
- `trigger_custom_event` raises NotImplementedError in this version, so the send is an email trigger.
"""

from __future__ import annotations

import pytest

from tests.integration.gateway.conftest import APP_PASSWORD, APP_USER, Deployment, delivered_to
from tests.support import responsys_clients
from tests.support.responsys_clients import ResponsysRestClient


def responsysrest_client(deployment: Deployment, *, password: str = APP_PASSWORD) -> ResponsysRestClient:
    # The only change an app makes: its login URL (see the module docstring for why it is set this way).
    return responsys_clients.responsysrest_client(deployment.url, user_name=APP_USER, password=password)


def test_unmodified_client_sends_through_the_gateway_and_survives_failover(deployment: Deployment) -> None:
    client = responsysrest_client(deployment)
    first = client.send_email_message("lib@example.com", "API", "WELCOME")
    assert isinstance(first, list) and first[0]["success"] is True, first
    assert len(deployment.primary.deliveries()) == 1
    assert delivered_to(deployment.primary, "lib@example.com") == 1
    assert deployment.failover.deliveries() == []
    # The library logged in to the gateway; the gateway logged in to the account once, itself.
    assert deployment.primary.stats()["rest_logins"] == 1

    deployment.primary.set_mode("refuse")
    second = client.send_email_message("lib-failover@example.com", "API", "WELCOME")
    assert isinstance(second, list) and second[0]["success"] is True, second
    assert delivered_to(deployment.failover, "lib-failover@example.com") == 1
    assert delivered_to(deployment.primary, "lib-failover@example.com") == 0
    assert len(deployment.primary.deliveries()) == 1
    # The failover account serves /rest/haApi: the gateway rewrote the library's /rest/api call.
    assert [d.path for d in deployment.failover.deliveries()] == ["/rest/haApi/v1.3/campaigns/WELCOME/email"]


def test_unmodified_client_with_a_wrong_password_gets_the_vendor_error(deployment: Deployment) -> None:
    client = responsysrest_client(deployment, password="wrong")
    # The library reads the login answer's authToken without checking the status: a vendor-shaped
    # refusal surfaces as a KeyError there, exactly as it would against Responsys itself.
    with pytest.raises(KeyError, match="authToken"):
        client.send_email_message("nobody@example.com", "API", "WELCOME")
    assert deployment.primary.deliveries() == [] and deployment.primary.stats()["rest_logins"] == 0
