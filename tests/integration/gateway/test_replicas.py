"""Two gateway replicas on one store agree on the failover state within a second, and on who logged out."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from urllib.parse import urlsplit

import httpx
import pytest
from lxml import etree

from gateway.edge.portal import COOKIE as PORTAL_COOKIE
from tests.integration.gateway.conftest import ADMIN_TOKEN, APP_PASSWORD, APP_USER, Deployment
from tests.support.servers import ServerThread, wait_until
from tests.support.stores import postgres_schema
from tests.support.tcp_proxy import tcp_proxy

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


# --- logout is shared -------------------------------------------------------------------------------

SOAP_PATH = "/webservices/services/ResponsysWSService"
SOAP_NS = "urn:ws.rsys.com"


def _envelope(body: str, session_id: str | None = None) -> bytes:
    header = (f'<soapenv:Header><ws:SessionHeader><ws:sessionId>{session_id}</ws:sessionId>'
              f'</ws:SessionHeader></soapenv:Header>') if session_id is not None else ""
    return (f'<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" xmlns:ws="{SOAP_NS}">'
            f'{header}<soapenv:Body>{body}</soapenv:Body></soapenv:Envelope>').encode()


def _soap(server_url: str, body: str, session_id: str | None = None) -> httpx.Response:
    return httpx.post(f"{server_url}{SOAP_PATH}", content=_envelope(body, session_id), trust_env=False, timeout=15,
                      headers={"Content-Type": "text/xml; charset=utf-8", "SOAPAction": '""'})


def _soap_login(server_url: str) -> str:
    answer = _soap(server_url, f"<ws:login><ws:username>{APP_USER}</ws:username>"
                               f"<ws:password>{APP_PASSWORD}</ws:password></ws:login>")
    assert answer.status_code == 200, answer.text
    session_id = etree.fromstring(answer.content).findtext(f".//{{{SOAP_NS}}}sessionId")
    assert session_id
    return session_id


def _soap_trigger(server_url: str, session_id: str) -> httpx.Response:
    return _soap(server_url, "<ws:triggerCustomEvent><ws:customEvent><ws:eventName>ORDER_PLACED</ws:eventName>"
                             "</ws:customEvent><ws:recipientData><ws:recipient><ws:listName>"
                             "<ws:folderName>Lists</ws:folderName><ws:objectName>CONTACTS</ws:objectName>"
                             "</ws:listName><ws:emailAddress>replica@example.com</ws:emailAddress>"
                             "<ws:emailFormat>HTML_FORMAT</ws:emailFormat></ws:recipient></ws:recipientData>"
                             "</ws:triggerCustomEvent>", session_id)


def _fault_code(answer: httpx.Response) -> str | None:
    return etree.fromstring(answer.content).findtext(".//{urn:fault.ws.rsys.com}exceptionCode")


def test_a_soap_session_logged_out_on_one_replica_is_refused_by_the_other_and_after_a_restart(
        replicas: tuple[Deployment, ServerThread]) -> None:
    deployment, second = replicas
    session_id = _soap_login(deployment.url)
    accepted = _soap_trigger(second.url, session_id)  # B knows the session now (and caches it)
    assert accepted.status_code == 200 and _fault_code(accepted) is None, accepted.text

    logout = _soap(deployment.url, "<ws:logout/>", session_id)
    assert logout.status_code == 200, logout.text
    refused = _soap_trigger(second.url, session_id)
    assert refused.status_code == 500 and _fault_code(refused) == "INVALID_SESSION_ID", refused.text

    deployment.stop_gateway()
    deployment.start_gateway()  # a new process's worth of state, on the same store
    again = _soap_trigger(deployment.url, session_id)
    assert again.status_code == 500 and _fault_code(again) == "INVALID_SESSION_ID", again.text
    fresh = _soap_login(deployment.url)  # other sessions are untouched
    assert _fault_code(_soap_trigger(second.url, fresh)) is None


def _portal_login(server_url: str) -> str:
    answer = httpx.post(f"{server_url}/portal/login", data={"user_name": APP_USER, "password": APP_PASSWORD},
                        trust_env=False, timeout=15)
    assert answer.status_code == 303, answer.text
    cookie = answer.cookies.get(PORTAL_COOKIE)
    assert cookie
    return cookie


def _portal_page(server_url: str, cookie: str) -> httpx.Response:
    return httpx.get(f"{server_url}/portal/failures", cookies={PORTAL_COOKIE: cookie}, trust_env=False, timeout=15)


def test_a_portal_cookie_logged_out_on_one_replica_is_refused_by_the_other(
        replicas: tuple[Deployment, ServerThread]) -> None:
    deployment, second = replicas
    cookie = _portal_login(deployment.url)
    assert _portal_page(second.url, cookie).status_code == 200
    logout = httpx.post(f"{deployment.url}/portal/logout", cookies={PORTAL_COOKIE: cookie}, trust_env=False,
                        timeout=15)
    assert logout.status_code == 303
    refused = _portal_page(second.url, cookie)
    assert refused.status_code == 303 and refused.headers["location"].startswith("/portal/login")


async def test_sessions_are_refused_with_a_retry_answer_while_the_store_is_unreachable(
        make_deployment: Callable[..., Deployment]) -> None:
    async with contextlib.AsyncExitStack() as stack:
        url = urlsplit(await stack.enter_async_context(postgres_schema()))
        proxy = await stack.enter_async_context(tcp_proxy(url.hostname or "127.0.0.1", url.port or 5432))
        # The proxy runs on this loop: start and stop the gateway (which talk to the store) off it.
        store = url._replace(netloc=f"{url.username}@127.0.0.1:{proxy.port}").geturl()
        deployment = await asyncio.to_thread(make_deployment, store=store)
        stack.push_async_callback(asyncio.to_thread, deployment.stop_gateway)
        async with httpx.AsyncClient(base_url=deployment.url, trust_env=False, timeout=15) as app:
            login = await app.post(SOAP_PATH, content=_envelope(
                f"<ws:login><ws:username>{APP_USER}</ws:username><ws:password>{APP_PASSWORD}</ws:password>"
                "</ws:login>"), headers={"Content-Type": "text/xml; charset=utf-8"})
            session_id = etree.fromstring(login.content).findtext(f".//{{{SOAP_NS}}}sessionId")
            assert session_id
            portal_login = await app.post("/portal/login", data={"user_name": APP_USER, "password": APP_PASSWORD})
            cookie = portal_login.cookies[PORTAL_COOKIE]
            await proxy.cut()
            during = await app.post(SOAP_PATH, content=_envelope("<ws:logout/>", session_id),
                                    headers={"Content-Type": "text/xml; charset=utf-8"})
            # The vendor's fault, saying to retry; not INVALID_SESSION_ID (a login loop), not a traceback.
            assert during.status_code == 500 and _fault_code(during) == "UNEXPECTED_EXCEPTION", during.text
            assert b"retry later" in during.content
            app.cookies.clear()
            portal = await app.get("/portal/failures", headers={"Cookie": f"{PORTAL_COOKIE}={cookie}"})
            assert portal.status_code == 503 and "try again" in portal.text
            forged = await app.get("/portal/failures", headers={"Cookie": f"{PORTAL_COOKIE}=forged.or-not"})
            assert forged.status_code == 303  # a cookie that is not even signed needs no store
            await proxy.restore()
            after = await app.post(SOAP_PATH, content=_envelope("<ws:logout/>", session_id),
                                   headers={"Content-Type": "text/xml; charset=utf-8"})
            assert after.status_code == 200, after.text
