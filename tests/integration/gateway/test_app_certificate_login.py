"""Apps logging in to the gateway with the vendor's certificate flow (clients[].certificate), REST and
SOAP, with a client doing the RSA steps as the vendor's pages describe (tests.support.certificate_login)."""

from __future__ import annotations

import base64
import logging
import threading
from collections.abc import Iterator

import httpx
import pytest
import requests
import zeep
import zeep.exceptions
from lxml import etree

from gateway.edge.clients import SOURCE_MAX_FAILURES
from gateway.protocols import responsys_soap as soap
from tests.integration.gateway.conftest import APP_USER, CERT_APP, Deployment, delivered_to
from tests.support.certificate_login import (
    encrypt_with_private_key,
    key_pair,
    rest_authenticate_server,
    rest_certificate_login,
    rest_login_with_client,
    soap_certificate_login,
)
from tests.support.responsys_clients import merge_trigger_email_args, soap_session_header, zeep_client

LOGIN = "/rest/api/v1.3/auth/token"
SOAP = "/webservices/services/ResponsysWSService"


@pytest.fixture
def http(cert_deployment: Deployment) -> Iterator[httpx.Client]:
    with cert_deployment.http() as client:
        yield client


def _server_certificate() -> str:
    return key_pair("gateway-server").certificate


def test_rest_certificate_login_gives_a_token_that_sends(cert_deployment: Deployment, http: httpx.Client) -> None:
    login = rest_certificate_login(http, "", user=CERT_APP, pair=key_pair(CERT_APP),
                                   server_certificate=_server_certificate())
    assert login["endPoint"] == cert_deployment.url
    sent = cert_deployment.send_email(login["authToken"], "cert-app@example.com")
    assert sent.status_code == 200, sent.text
    assert delivered_to(cert_deployment.primary, "cert-app@") == 1


def test_the_two_steps_may_land_on_different_replicas(cert_deployment: Deployment, http: httpx.Client) -> None:
    step = rest_authenticate_server(http, "", user=CERT_APP, server_certificate=_server_certificate())
    other = cert_deployment.start_replica()
    try:
        with httpx.Client(base_url=other.url, trust_env=False, timeout=15) as second:
            answer = rest_login_with_client(second, "", step, user=CERT_APP, key=key_pair(CERT_APP).key)
    finally:
        other.stop()
    assert answer.status_code == 200, answer.text
    assert cert_deployment.send_email(answer.json()["authToken"], "cert-replica@example.com").status_code == 200


def test_a_temporary_token_serves_one_attempt(http: httpx.Client) -> None:
    step = rest_authenticate_server(http, "", user=CERT_APP, server_certificate=_server_certificate())
    first = rest_login_with_client(http, "", step, user=CERT_APP, key=key_pair(CERT_APP).key)
    replayed = rest_login_with_client(http, "", step, user=CERT_APP, key=key_pair(CERT_APP).key)
    assert first.status_code == 200
    assert replayed.status_code == 401 and replayed.json()["errorCode"] == "AUTHENTICATION_FAILED"


def test_no_key_challenge_or_temporary_token_reaches_the_log(cert_deployment: Deployment, http: httpx.Client,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    step = rest_authenticate_server(http, "", user=CERT_APP, server_certificate=_server_certificate())
    rest_login_with_client(http, "", step, user=CERT_APP, key=key_pair("intruder").key)  # a refusal is logged too
    logged = caplog.text
    assert caplog.records  # the gateway did log these requests
    for secret in (step.temporary_token, base64.b64encode(step.server_challenge).decode(), "PRIVATE KEY"):
        assert secret not in logged


def test_a_temporary_token_is_no_api_token(cert_deployment: Deployment, http: httpx.Client) -> None:
    step = rest_authenticate_server(http, "", user=CERT_APP, server_certificate=_server_certificate())
    sent = cert_deployment.send_email(step.temporary_token, "never@example.com")
    assert sent.status_code == 401 and sent.json()["errorCode"] == "INVALID_TOKEN"


def test_an_answer_from_another_key_is_refused(http: httpx.Client) -> None:
    step = rest_authenticate_server(http, "", user=CERT_APP, server_certificate=_server_certificate())
    wrong = rest_login_with_client(http, "", step, user=CERT_APP, key=key_pair("intruder").key)
    assert wrong.status_code == 401 and wrong.json()["errorCode"] == "AUTHENTICATION_FAILED"


def test_an_app_without_a_certificate_cannot_answer(http: httpx.Client) -> None:
    """The password app asks for a challenge: refused like an unknown user, after the same RSA work."""
    answer = http.post(LOGIN, data={"auth_type": "server", "user_name": APP_USER, "client_challenge": "MTIz"})
    assert answer.status_code == 401 and answer.json()["errorCode"] == "AUTHENTICATION_FAILED"


def test_step_two_for_another_user_name_is_refused(http: httpx.Client) -> None:
    step = rest_authenticate_server(http, "", user=CERT_APP, server_certificate=_server_certificate())
    answer = encrypt_with_private_key(key_pair(CERT_APP).key, step.server_challenge)
    other = http.post(LOGIN, headers={"Authorization": step.temporary_token},
                      data={"auth_type": "client", "user_name": APP_USER,
                            "server_challenge": base64.b64encode(answer).decode()})
    assert other.status_code == 401 and other.json()["errorCode"] == "AUTHENTICATION_FAILED"


@pytest.mark.parametrize("form, headers, status, code", [
    ({"auth_type": "kerberos", "user_name": CERT_APP}, {}, 400, "INVALID_PARAMETER"),
    ({"auth_type": "server", "user_name": CERT_APP}, {}, 400, "INVALID_PARAMETER"),
    ({"auth_type": "server", "user_name": CERT_APP, "client_challenge": "***"}, {}, 400, "INVALID_PARAMETER"),
    ({"auth_type": "server", "user_name": CERT_APP, "client_challenge": base64.b64encode(b"x" * 118).decode()},
     {}, 400, "INVALID_PARAMETER"),
    ({"auth_type": "client", "user_name": CERT_APP}, {}, 400, "INVALID_PARAMETER"),
    ({"auth_type": "client", "user_name": CERT_APP, "server_challenge": "MTIz"}, {}, 401, "AUTHENTICATION_FAILED"),
    ({"auth_type": "client", "user_name": CERT_APP, "server_challenge": "MTIz"}, {"Authorization": "x.y"}, 401,
     "AUTHENTICATION_FAILED"),
    ({"auth_type": "password", "user_name": CERT_APP, "password": ""}, {}, 401, "AUTHENTICATION_FAILED"),
])
def test_login_mistakes_get_the_vendor_error(http: httpx.Client, form: dict[str, str], headers: dict[str, str],
                                             status: int, code: str) -> None:
    answer = http.post(LOGIN, data=form, headers=headers)
    assert (answer.status_code, answer.json()["errorCode"]) == (status, code)


@pytest.fixture
def soap_client(cert_deployment: Deployment, http_session: requests.Session) -> zeep.Client:
    return zeep_client(cert_deployment.url, http_session)


def test_soap_certificate_login_gives_a_session_that_sends(cert_deployment: Deployment,
                                                           soap_client: zeep.Client) -> None:
    session_id = soap_certificate_login(soap_client, user=CERT_APP, pair=key_pair(CERT_APP),
                                        server_certificate=_server_certificate())
    result = soap_client.service.mergeTriggerEmail(**merge_trigger_email_args("cert-soap-app@example.com"),
                                                   _soapheaders=soap_session_header(session_id))
    assert result[0].success is True
    assert delivered_to(cert_deployment.primary, "cert-soap-app@") == 1


def test_soap_wrong_answer_is_an_account_fault(soap_client: zeep.Client) -> None:
    with pytest.raises(zeep.exceptions.Fault) as raised:
        soap_certificate_login(soap_client, user=CERT_APP, pair=key_pair(CERT_APP),
                               server_certificate=_server_certificate(), tamper=True)
    vendor = raised.value.detail[0]
    assert etree.QName(vendor).localname == "AccountFault"
    assert vendor.findtext("{urn:fault.ws.rsys.com}exceptionCode") == "AUTHENTICATION_FAILED"


def test_soap_login_with_certificate_without_its_header_is_a_fault(soap_client: zeep.Client) -> None:
    with pytest.raises(zeep.exceptions.Fault) as raised:
        soap_client.service.loginWithCertificate(encryptedServerChallenge=[1, 2, 3])
    assert raised.value.detail[0].findtext("{urn:fault.ws.rsys.com}exceptionCode") == "AUTHENTICATION_FAILED"


def test_a_temporary_token_sent_many_times_at_once_logs_in_once(cert_deployment: Deployment,
                                                                 http: httpx.Client) -> None:
    step = rest_authenticate_server(http, "", user=CERT_APP, server_certificate=_server_certificate())
    answer = base64.b64encode(encrypt_with_private_key(key_pair(CERT_APP).key, step.server_challenge)).decode()
    barrier = threading.Barrier(8)
    statuses: list[int] = []

    def replay() -> None:
        with httpx.Client(base_url=cert_deployment.url, trust_env=False, timeout=15) as client:
            barrier.wait(timeout=10)
            statuses.append(client.post(LOGIN, headers={"Authorization": step.temporary_token}, data={
                "user_name": CERT_APP, "auth_type": "client", "server_challenge": answer}).status_code)

    threads = [threading.Thread(target=replay) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert sorted(statuses) == [200] + [401] * 7


def _client_from(deployment: Deployment, address: str) -> httpx.Client:
    """An HTTP client whose connections come from `address` (any of 127.0.0.0/8 on loopback)."""
    return httpx.Client(base_url=deployment.url, trust_env=False, timeout=15,
                        transport=httpx.HTTPTransport(local_address=address))


def _step_one(client: httpx.Client) -> httpx.Response:
    return client.post(LOGIN, data={"auth_type": "server", "user_name": CERT_APP,
                                    "client_challenge": base64.b64encode(b"c" * 32).decode()})


def test_an_address_that_only_asks_for_challenges_is_throttled_while_the_app_logs_in(
        cert_deployment: Deployment, http: httpx.Client) -> None:
    """Each step 1 costs a private-key operation: it counts as a failure until its step 2 succeeds.
    Before, one address could ask with the real user name forever and was never refused."""
    with _client_from(cert_deployment, "127.0.5.1") as storm:
        statuses = [_step_one(storm).status_code for _ in range(SOURCE_MAX_FAILURES)]
        throttled = _step_one(storm)
    assert statuses == [200] * SOURCE_MAX_FAILURES, statuses
    assert throttled.status_code == 429, throttled.text[:500]
    assert throttled.json()["errorCode"] == "API_LIMIT_EXCEEDED"
    assert int(throttled.headers["retry-after"]) >= 1
    login = rest_certificate_login(http, "", user=CERT_APP, pair=key_pair(CERT_APP),
                                   server_certificate=_server_certificate())
    assert login["endPoint"] == cert_deployment.url


def test_an_app_that_completes_its_certificate_logins_is_never_throttled(cert_deployment: Deployment) -> None:
    with _client_from(cert_deployment, "127.0.5.2") as app:
        for _ in range(SOURCE_MAX_FAILURES + 5):
            rest_certificate_login(app, "", user=CERT_APP, pair=key_pair(CERT_APP),
                                   server_certificate=_server_certificate())


def test_soap_an_address_that_only_asks_for_challenges_gets_the_throttled_fault(
        cert_deployment: Deployment, soap_client: zeep.Client) -> None:
    envelope = soap.authenticate_server_request(CERT_APP, b"c" * 32)
    headers = {"Content-Type": "text/xml; charset=utf-8", "SOAPAction": '"authenticateServer"'}
    with _client_from(cert_deployment, "127.0.5.3") as storm:
        answers = [storm.post(SOAP, content=envelope, headers=headers) for _ in range(SOURCE_MAX_FAILURES + 1)]
    assert [a.status_code for a in answers[:-1]] == [200] * SOURCE_MAX_FAILURES, answers[-2].text[:500]
    throttled = answers[-1]
    assert throttled.status_code == 500 and b"API_LIMIT_EXCEEDED" in throttled.content, throttled.text[:500]
    assert int(throttled.headers["retry-after"]) >= 1
    session_id = soap_certificate_login(soap_client, user=CERT_APP, pair=key_pair(CERT_APP),
                                        server_certificate=_server_certificate())
    assert session_id
