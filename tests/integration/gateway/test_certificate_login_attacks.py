"""Certificate login (clients[].certificate) under a hostile client, a careless app and a third-party client:
what each of those found, kept as specifications (tests.support.certificate_login plays the app)."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest

from gateway.edge.clients import SOURCE_MAX_FAILURES
from tests.integration.gateway.conftest import APP_PASSWORD, APP_USER, Deployment
from tests.support.certificate_login import key_pair, rest_authenticate_server, rest_login_with_client

CERT_APP = "certapp"
LOGIN = "/rest/api/v1.3/auth/token"


@pytest.fixture
def gateway(make_deployment: Callable[..., Deployment]) -> Deployment:
    server = key_pair("gateway-server")
    return make_deployment(
        server_key=server.key, server_certificate=server.certificate,
        clients=[{"user_name": APP_USER, "password": APP_PASSWORD},
                 {"user_name": CERT_APP, "certificate": key_pair(CERT_APP).certificate}])


def _client_from(deployment: Deployment, address: str) -> httpx.Client:
    """An HTTP client whose connections come from `address` (any of 127.0.0.0/8 on loopback)."""
    return httpx.Client(base_url=deployment.url, trust_env=False, timeout=15,
                        transport=httpx.HTTPTransport(local_address=address))


def test_step_twos_are_answered_after_as_many_step_ones_as_the_source_may_ask(gateway: Deployment) -> None:
    """An app starting SOURCE_MAX_FAILURES workers behind one address asks for every challenge first. Each
    step 1 was answered, yet its step 2 was refused 429 by the wait those very step 1s had caused (and the
    temporary token was spent by the refusal): the step that takes the charge back could never run."""
    server_certificate = key_pair("gateway-server").certificate
    with _client_from(gateway, "127.0.7.1") as app:
        steps = [rest_authenticate_server(app, "", user=CERT_APP, server_certificate=server_certificate)
                 for _ in range(SOURCE_MAX_FAILURES)]
        answers = [rest_login_with_client(app, "", step, user=CERT_APP, key=key_pair(CERT_APP).key)
                   for step in steps]
        assert [a.status_code for a in answers] == [200] * SOURCE_MAX_FAILURES, answers[0].text
        # every charge was taken back: the address asks again at once
        rest_authenticate_server(app, "", user=CERT_APP, server_certificate=server_certificate)
