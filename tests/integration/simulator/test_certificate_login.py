"""The simulated account's certificate login, REST and SOAP, with real RSA on both sides."""

from __future__ import annotations

import base64
from collections.abc import Callable

import httpx
import pytest
import requests
import zeep
import zeep.exceptions
from lxml import etree

from gateway_tools.simulator.server import SimulatedAccount
from tests.integration.simulator.conftest import PASSWORD, USER, trigger_body
from tests.support.certificate_login import (
    encrypt_with_private_key,
    key_pair,
    rest_authenticate_server,
    rest_certificate_login,
    rest_login_with_client,
    soap_certificate_login,
)
from tests.support.responsys_clients import soap_session_header, zeep_client

SEND = "/rest/api/v1.3/campaigns/Welcome/email"


@pytest.fixture
def cert_account(make_account: Callable[..., SimulatedAccount]) -> SimulatedAccount:
    """An account whose API user is certificate-only (password login refused)."""
    return make_account(password=None, client_certificate=key_pair("api-user").certificate)


@pytest.fixture
def soap(cert_account: SimulatedAccount, http_session: requests.Session) -> zeep.Client:
    return zeep_client(cert_account.url, http_session, timeout=10)


def _server_certificate(account: SimulatedAccount) -> str:
    assert account.server_certificate is not None
    return account.server_certificate


def test_rest_certificate_login_issues_a_token_that_sends(cert_account: SimulatedAccount,
                                                          http: httpx.Client) -> None:
    login = rest_certificate_login(http, cert_account.url, user=USER, pair=key_pair("api-user"),
                                   server_certificate=_server_certificate(cert_account))
    assert login["endPoint"] == cert_account.url
    sent = http.post(cert_account.url + SEND, json=trigger_body("a@example.com"),
                     headers={"Authorization": login["authToken"]})
    assert sent.status_code == 200, sent.text
    assert cert_account.stats()["rest_logins"] == 1


def test_rest_temporary_token_is_not_an_api_token(cert_account: SimulatedAccount, http: httpx.Client) -> None:
    step = rest_authenticate_server(http, cert_account.url, user=USER,
                                    server_certificate=_server_certificate(cert_account))
    sent = http.post(cert_account.url + SEND, json=trigger_body("a@example.com"),
                     headers={"Authorization": step.temporary_token})
    assert sent.status_code == 401
    assert sent.json()["errorCode"] == "INVALID_TOKEN"


def test_rest_answer_signed_with_another_key_is_refused_and_spends_the_token(
        cert_account: SimulatedAccount, http: httpx.Client) -> None:
    step = rest_authenticate_server(http, cert_account.url, user=USER,
                                    server_certificate=_server_certificate(cert_account))
    wrong = rest_login_with_client(http, cert_account.url, step, user=USER, key=key_pair("intruder").key)
    assert wrong.status_code == 401
    assert wrong.json()["errorCode"] == "AUTHENTICATION_FAILED"
    right_but_late = rest_login_with_client(http, cert_account.url, step, user=USER, key=key_pair("api-user").key)
    assert right_but_late.status_code == 401
    assert cert_account.stats()["rest_logins"] == 0


def test_rest_answer_to_another_challenge_is_refused(cert_account: SimulatedAccount, http: httpx.Client) -> None:
    first = rest_authenticate_server(http, cert_account.url, user=USER,
                                     server_certificate=_server_certificate(cert_account))
    second = rest_authenticate_server(http, cert_account.url, user=USER,
                                      server_certificate=_server_certificate(cert_account))
    answer = encrypt_with_private_key(key_pair("api-user").key, first.server_challenge)
    crossed = http.post(cert_account.url + "/rest/api/v1.3/auth/token",
                        headers={"Authorization": second.temporary_token},
                        data={"user_name": USER, "auth_type": "client",
                              "server_challenge": base64.b64encode(answer).decode()})
    assert crossed.status_code == 401
    assert crossed.json()["errorCode"] == "AUTHENTICATION_FAILED"


@pytest.mark.parametrize("form, code", [
    ({"auth_type": "server", "user_name": USER}, "INVALID_PARAMETER"),
    ({"auth_type": "server", "user_name": USER, "client_challenge": "***"}, "INVALID_PARAMETER"),
    ({"auth_type": "server", "user_name": "someone_else", "client_challenge": "MTIz"}, "AUTHENTICATION_FAILED"),
    ({"auth_type": "client", "user_name": USER}, "INVALID_PARAMETER"),
    ({"auth_type": "client", "user_name": USER, "server_challenge": "MTIz"}, "AUTHENTICATION_FAILED"),
    ({"auth_type": "password", "user_name": USER, "password": PASSWORD}, "AUTHENTICATION_FAILED"),
    ({"auth_type": "kerberos", "user_name": USER}, "INVALID_PARAMETER"),
])
def test_rest_login_mistakes_get_the_vendor_error(cert_account: SimulatedAccount, http: httpx.Client,
                                                  form: dict[str, str], code: str) -> None:
    answer = http.post(cert_account.url + "/rest/api/v1.3/auth/token", data=form)
    assert answer.status_code in (400, 401)
    assert answer.json()["errorCode"] == code


def test_account_without_a_user_certificate_refuses_certificate_login(account: SimulatedAccount,
                                                                       http: httpx.Client) -> None:
    answer = http.post(account.url + "/rest/api/v1.3/auth/token",
                       data={"auth_type": "server", "user_name": USER, "client_challenge": "MTIz"})
    assert answer.status_code == 401
    assert answer.json()["errorCode"] == "AUTHENTICATION_FAILED"


def test_soap_certificate_login_opens_a_session_that_sends(cert_account: SimulatedAccount,
                                                           soap: zeep.Client) -> None:
    session_id = soap_certificate_login(soap, user=USER, pair=key_pair("api-user"),
                                        server_certificate=_server_certificate(cert_account))
    result = soap.service.triggerCustomEvent(
        customEvent={"eventName": "Signup"},
        recipientData=[{"recipient": {"emailAddress": "a@example.com", "emailFormat": "HTML_FORMAT",
                                      "listName": {"folderName": "Lists", "objectName": "CONTACTS"}},
                        "optionalData": [{"name": "SKU", "value": "1"}]}],
        _soapheaders=soap_session_header(session_id))
    assert result[0].success is True
    assert cert_account.stats()["soap_logins"] == 1


def test_soap_wrong_answer_is_an_authentication_fault(cert_account: SimulatedAccount, soap: zeep.Client) -> None:
    with pytest.raises(zeep.exceptions.Fault) as fault:
        soap_certificate_login(soap, user=USER, pair=key_pair("api-user"),
                               server_certificate=_server_certificate(cert_account), tamper=True)
    assert b"AUTHENTICATION_FAILED" in _text(fault.value.detail)
    assert cert_account.stats()["soap_logins"] == 0


def test_soap_password_login_is_refused_for_a_certificate_only_user(soap: zeep.Client) -> None:
    with pytest.raises(zeep.exceptions.Fault) as fault:
        soap.service.login(username=USER, password=PASSWORD)
    assert b"INVALID_PASSWORD" in _text(fault.value.detail)


def _text(detail: object) -> bytes:
    assert isinstance(detail, etree._Element)
    return bytes(etree.tostring(detail))
