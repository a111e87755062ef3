"""Accounts whose API users are certificate-only: the gateway logs in upstream with the vendor's
certificate flow, REST and SOAP, and again after the vendor invalidates the token or session."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import trustme

from gateway_tools.simulator.server import SimulatedAccount
from tests.integration.gateway.conftest import APP_PASSWORD, APP_USER, Deployment, delivered_to
from tests.support.certificate_login import key_pair
from tests.support.responsys_clients import merge_trigger_email_args, plain_session, soap_session_header, zeep_client
from tests.support.tls import server_context


@pytest.fixture
def certificate_only_accounts(test_ca: trustme.CA) -> Iterator[Callable[[], dict[str, SimulatedAccount]]]:
    """Primary and failover whose API users refuse password login (requested before the deployment,
    so they stop after its gateway)."""
    started: list[SimulatedAccount] = []

    def start() -> dict[str, SimulatedAccount]:
        accounts = {}
        for name, host, secondary in (("primary", "127.0.0.2", False), ("failover", "127.0.0.3", True)):
            account = SimulatedAccount(
                name=name, user_name=f"api_{name}", password=None, host=host, secondary=secondary,
                ssl_context=server_context(test_ca, f"{name}.test"),
                client_certificate=key_pair(f"api_{name}").certificate).start()
            started.append(account)
            accounts[name] = account
        return accounts

    yield start
    for account in started:
        account.stop()


@pytest.fixture
def cert_deployment(certificate_only_accounts: Callable[[], dict[str, SimulatedAccount]],
                    make_deployment: Callable[..., Deployment], tmp_path: Path) -> Deployment:
    deployment = make_deployment(start=False)
    deployment.primary.stop()
    deployment.failover.stop()
    accounts = certificate_only_accounts()
    deployment.primary, deployment.failover = accounts["primary"], accounts["failover"]
    configured = deployment.raw_config("http://unused")["accounts"]
    for entry in configured:
        simulated = accounts[entry["name"]]
        del entry["password"]
        key_file = tmp_path / f"{entry['name']}.key.pem"
        key_file.write_text(key_pair(f"api_{entry['name']}").key)
        entry["private_key_file"] = str(key_file)
        entry["certificate"] = key_pair(f"api_{entry['name']}").certificate
        entry["server_certificate"] = simulated.server_certificate
        entry["login_url"] = f"https://{entry['name']}.test:{simulated.port}"
        entry["soap_url"] = f"{entry['login_url']}/webservices/services/ResponsysWSService"
    deployment.overrides = {"accounts": configured}
    deployment.start_gateway()
    return deployment


def test_rest_sends_through_certificate_login_and_log_in_again_after_invalidation(
        cert_deployment: Deployment) -> None:
    token = cert_deployment.rest_token()
    first = cert_deployment.send_email(token, "cert-rest-1@example.com")
    assert first.status_code == 200, first.text
    assert cert_deployment.primary.stats()["rest_logins"] == 1
    cert_deployment.primary.invalidate()
    again = cert_deployment.send_email(token, "cert-rest-2@example.com")
    assert again.status_code == 200, again.text
    assert cert_deployment.primary.stats()["rest_logins"] == 2
    assert delivered_to(cert_deployment.primary, "cert-rest-") == 2


def test_soap_sends_through_certificate_login_and_log_in_again_after_invalidation(
        cert_deployment: Deployment) -> None:
    with plain_session() as session:
        client = zeep_client(cert_deployment.url, session)
        session_id = client.service.login(username=APP_USER, password=APP_PASSWORD)
        first = client.service.mergeTriggerEmail(**merge_trigger_email_args("cert-soap-1@example.com"),
                                                 _soapheaders=soap_session_header(session_id))
        assert cert_deployment.primary.stats()["soap_logins"] == 1
        cert_deployment.primary.invalidate()
        again = client.service.mergeTriggerEmail(**merge_trigger_email_args("cert-soap-2@example.com"),
                                                 _soapheaders=soap_session_header(session_id))
    assert [first[0].success, again[0].success] == [True, True]
    assert cert_deployment.primary.stats()["soap_logins"] == 2
    assert delivered_to(cert_deployment.primary, "cert-soap-") == 2


def test_server_that_cannot_prove_the_configured_certificate_gets_no_answer(
        certificate_only_accounts: Callable[[], dict[str, SimulatedAccount]],
        make_deployment: Callable[..., Deployment], tmp_path: Path) -> None:
    """The primary's configured server certificate is another server's: the gateway refuses to answer
    its challenge (no token is ever issued there) and the send goes to the failover account."""
    deployment = make_deployment(start=False)
    deployment.primary.stop()
    deployment.failover.stop()
    accounts = certificate_only_accounts()
    deployment.primary, deployment.failover = accounts["primary"], accounts["failover"]
    configured: list[dict[str, Any]] = deployment.raw_config("http://unused")["accounts"]
    for entry in configured:
        simulated = accounts[entry["name"]]
        del entry["password"]
        entry["private_key"] = key_pair(f"api_{entry['name']}").key
        entry["server_certificate"] = (accounts["failover"].server_certificate if entry["name"] == "primary"
                                       else simulated.server_certificate)
        entry["login_url"] = f"https://{entry['name']}.test:{simulated.port}"
        entry["soap_url"] = f"{entry['login_url']}/webservices/services/ResponsysWSService"
    deployment.overrides = {"accounts": configured}
    deployment.start_gateway()
    sent = deployment.send_email(deployment.rest_token(), "cert-mitm@example.com")
    assert sent.status_code == 200, sent.text
    assert deployment.primary.stats()["rest_logins"] == 0
    assert delivered_to(deployment.failover, "cert-mitm@") == 1
