"""Certificate login (clients[].certificate), its per-source charge, and the REST paths the gateway answers
itself, under a hostile client, a careless app and a third-party client: what each of those found, kept as
specifications (tests.support.certificate_login plays the app unless a test writes its own)."""

from __future__ import annotations

import base64
import json
import secrets
import urllib.parse
import urllib.request

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import NoDigestInfo

from gateway.edge.clients import SOURCE_MAX_FAILURES
from tests.integration.gateway.conftest import APP_PASSWORD, APP_USER, CERT_APP, Deployment
from tests.support.certificate_login import (
    decrypt_with_certificate,
    encrypt_with_private_key,
    key_pair,
    rest_authenticate_server,
    rest_login_with_client,
)
from tests.support.raw_http import exchange, request_head

LOGIN = "/rest/api/v1.3/auth/token"


def _client_from(deployment: Deployment, address: str) -> httpx.Client:
    """An HTTP client whose connections come from `address` (any of 127.0.0.0/8 on loopback)."""
    return httpx.Client(base_url=deployment.url, trust_env=False, timeout=15,
                        transport=httpx.HTTPTransport(local_address=address))


def test_step_twos_are_answered_after_as_many_step_ones_as_the_source_may_ask(cert_deployment: Deployment) -> None:
    """An app starting SOURCE_MAX_FAILURES workers behind one address asks for every challenge first. Each
    step 1 was answered, yet its step 2 was refused 429 by the wait those very step 1s had caused (and the
    temporary token was spent by the refusal): the step that takes the charge back could never run."""
    server_certificate = key_pair("gateway-server").certificate
    with _client_from(cert_deployment, "127.0.7.1") as app:
        steps = [rest_authenticate_server(app, "", user=CERT_APP, server_certificate=server_certificate)
                 for _ in range(SOURCE_MAX_FAILURES)]
        answers = [rest_login_with_client(app, "", step, user=CERT_APP, key=key_pair(CERT_APP).key)
                   for step in steps]
        assert [a.status_code for a in answers] == [200] * SOURCE_MAX_FAILURES, answers[0].text
        # every charge was taken back: the address asks again at once
        rest_authenticate_server(app, "", user=CERT_APP, server_certificate=server_certificate)


def _posts_received(deployment: Deployment) -> list[bytes]:
    """The targets the accounts were POSTed (the gateway's own background calls are GETs)."""
    received = deployment.primary.received() + deployment.failover.received()
    return [target for method, target in received if method == "POST"]


@pytest.mark.parametrize("app_path", [
    "/rest/api/v1.3/auth/token/",
    "/rest/api//v1.3/auth/token",
    "/rest/api/v1.3/auth/token;jsessionid=1",
    "/rest/api/v1.3/Auth/Toke%6E",
    "/rest/api/v1.3/campaigns/welcome/email/",
    "/rest/api/v1.3/campaigns/welcome/email;x",
])
def test_a_login_or_send_spelt_as_a_servlet_reads_it_is_the_vendors_404_and_goes_nowhere(
        cert_deployment: Deployment, app_path: str) -> None:
    """The login in another spelling went upstream with the account's token and the app's form: where the
    server merges `//`, drops `;params` or a trailing `/` (servlet containers do), `auth_type=token` answers
    the app a fresh token of the account itself. A send so spelt went past its AFTM twin and the outbox."""
    token = cert_deployment.rest_token()
    before = _posts_received(cert_deployment)
    with cert_deployment.http() as http:
        answer = http.post(app_path, headers={"Authorization": token},
                           data={"auth_type": "token", "user_name": APP_USER, "password": APP_PASSWORD})
    assert answer.status_code == 404, answer.text
    assert answer.json()["errorCode"] == "RESOURCE_NOT_FOUND"
    assert _posts_received(cert_deployment) == before


@pytest.mark.parametrize(("method", "app_path", "status", "code"), [
    ("OPTIONS", "/rest/API/v1.3/campaigns/welcome/email", 404, "RESOURCE_NOT_FOUND"),
    ("OPTIONS", "/rest/api/V1.3/auth/token", 404, "RESOURCE_NOT_FOUND"),
    ("TRACE", "/rest/api/v1.3/Campaigns/welcome/email", 404, "RESOURCE_NOT_FOUND"),
    ("OPTIONS", "/rest/api/v1.3/campaigns/welcome/email", 405, "INVALID_REQUEST"),
    ("OPTIONS", "/rest/api/v1.3/auth/token", 405, "INVALID_REQUEST"),
])
def test_a_method_no_rest_route_takes_gets_the_vendors_error_shape(
        cert_deployment: Deployment, method: str, app_path: str, status: int, code: str) -> None:
    """OPTIONS on a mis-cased REST path was Starlette's plain-text 405, not the vendor's 404 every other
    method gets; on a vendor path, a plain-text 405 an app's REST client cannot read."""
    with cert_deployment.http() as http:
        answer = http.request(method, app_path)
    assert answer.status_code == status, answer.text
    assert answer.json()["errorCode"] == code
    if status == 405:
        assert "POST" in answer.headers["allow"]


def test_a_rest_path_with_a_doubled_leading_slash_is_the_vendors_404(cert_deployment: Deployment) -> None:
    """An app joining `https://gateway/` and `/rest/...` asks for `//rest/...`: a plain-text "Not Found"
    its REST client cannot read as the vendor's error."""
    answer = exchange(cert_deployment.url, request_head("POST", b"//rest/api/v1.3/auth/token", [
        ("Content-Type", "application/x-www-form-urlencoded"), ("Content-Length", "0")]))
    assert answer.status == 404, answer.text
    assert json.loads(answer.body)["errorCode"] == "RESOURCE_NOT_FOUND"


def _form(**fields: str) -> dict[str, str]:
    return {"Content-Type": "application/x-www-form-urlencoded", **fields}


def test_base64_sent_without_form_encoding_is_read_as_sent(cert_deployment: Deployment) -> None:
    """`curl -d "client_challenge=$(base64 ...)"` sends `+` as is, which a form decodes to a space: the
    gateway read other bytes than the app's, encrypted those, and the app (rightly) took the gateway for an
    impostor; step 2's answer likewise failed. A space is never base64, so it can only have been a `+`."""
    challenge = bytes([0x69, 0xBF, 0xBE]) * 8
    raw = base64.b64encode(challenge)
    assert raw == b"ab++" * 8  # as a form: `ab  ` (spaces), which read as `abab...`, 12 other bytes
    with cert_deployment.http() as http:
        step = http.post(LOGIN, headers=_form(), content=b"auth_type=server&user_name=certapp&client_challenge=" + raw)
        assert step.status_code == 200, step.text
        body = step.json()
        server_certificate = key_pair("gateway-server").certificate
        assert decrypt_with_certificate(server_certificate, base64.b64decode(body["clientChallenge"])) == challenge
        answer = encrypt_with_private_key(key_pair(CERT_APP).key, base64.b64decode(body["serverChallenge"]))
        login = http.post(LOGIN, headers=_form(Authorization=body["authToken"]), content=(
            b"auth_type=client&user_name=certapp&server_challenge=" + base64.b64encode(answer)))
    assert login.status_code == 200, login.text


def _stdlib_post(url: str, fields: dict[str, str], authorization: str | None = None) -> dict[str, str]:
    request = urllib.request.Request(url, data=urllib.parse.urlencode(fields).encode(), method="POST")
    if authorization is not None:
        request.add_header("Authorization", authorization)  # raw, as the vendor's sample sets it
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(request, timeout=15) as answer:
        body: dict[str, str] = json.loads(answer.read())
    return body


def test_a_client_written_like_the_vendors_java_sample_logs_in_and_sends(cert_deployment: Deployment) -> None:
    """Standard library HTTP and `cryptography`'s RSA, as the vendor's Java sample does it: the decimal text
    of a random long as the challenge, URL-safe unpadded base64 out, the strict standard alphabet in, the
    temporary token raw in `Authorization`."""
    server = x509.load_pem_x509_certificate(key_pair("gateway-server").certificate.encode()).public_key()
    key = serialization.load_pem_private_key(key_pair(CERT_APP).key.encode(), password=None)
    assert isinstance(server, rsa.RSAPublicKey) and isinstance(key, rsa.RSAPrivateKey)
    challenge = str(secrets.randbits(63)).encode()

    def unpadded(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).decode().rstrip("=")

    step = _stdlib_post(cert_deployment.url + LOGIN, {"user_name": CERT_APP, "auth_type": "server",
                                              "client_challenge": unpadded(challenge)})
    encrypted_client_challenge = base64.b64decode(step["clientChallenge"], validate=True)
    recovered = server.recover_data_from_signature(encrypted_client_challenge, padding.PKCS1v15(), NoDigestInfo())
    assert recovered == challenge
    answer = key.sign(base64.b64decode(step["serverChallenge"], validate=True), padding.PKCS1v15(), NoDigestInfo())
    login = _stdlib_post(cert_deployment.url + LOGIN, {"user_name": CERT_APP, "auth_type": "client",
                                               "server_challenge": unpadded(answer)}, authorization=step["authToken"])
    assert login["endPoint"] == cert_deployment.url
    assert cert_deployment.send_email(login["authToken"], "java-like@example.com").status_code == 200


def _wrong_password(client: httpx.Client, user: str) -> httpx.Response:
    return client.post(LOGIN, data={"auth_type": "password", "user_name": user, "password": "guess"})


def test_a_step_two_takes_back_only_the_charge_of_its_own_step_one(cert_deployment: Deployment) -> None:
    """The key's holder may finish a login from another address, but the failure taken back must be the
    one its step 1 was charged. It was one of the step 2's address: an address waiting for its wrong
    passwords was let guess again by each certificate login finished there (one step 1 elsewhere each)."""
    with _client_from(cert_deployment, "127.0.8.2") as guesser:
        guesses = [_wrong_password(guesser, f"name{i}").status_code for i in range(SOURCE_MAX_FAILURES)]
        assert guesses == [401] * SOURCE_MAX_FAILURES
        assert _wrong_password(guesser, "one-more").status_code == 429
        with _client_from(cert_deployment, "127.0.8.1") as elsewhere:
            step = rest_authenticate_server(elsewhere, "", user=CERT_APP,
                                            server_certificate=key_pair("gateway-server").certificate)
        finished = rest_login_with_client(guesser, "", step, user=CERT_APP, key=key_pair(CERT_APP).key)
        assert finished.status_code == 200, finished.text
        assert _wrong_password(guesser, "one-more").status_code == 429


@pytest.mark.parametrize(("method", "app_path"), [
    ("GET", "/rest/api"), ("POST", "/rest/api"), ("GET", "/rest/Api"), ("POST", "/rest/asyncApi"),
    ("GET", "/rest"), ("POST", "/REST"),
])
def test_a_rest_family_without_its_slash_is_the_vendors_404_never_a_redirect(
        cert_deployment: Deployment, method: str, app_path: str) -> None:
    """`/rest/api` was Starlette's 307 to `http://<Host header>/rest/api/` (plain http even behind TLS, and
    a POST re-sent there went upstream as `/rest/api/`), `/rest/Api` a 307 to a 404, `/rest` plain text."""
    with cert_deployment.http() as http:
        answer = http.request(method, app_path)
    assert answer.status_code == 404, (answer.status_code, answer.headers.get("location"))
    assert answer.json()["errorCode"] == "RESOURCE_NOT_FOUND"


@pytest.mark.parametrize("target", [b"/REST/API/v1.3/a%2fb", b"//rest/api/v1.3/a%2fb"])
def test_an_unsafe_target_on_a_mis_spelt_rest_path_is_refused_in_the_rest_shape(cert_deployment: Deployment,
                                                                                target: bytes) -> None:
    """The target guard named the surface by the path as spelt: `/REST/...` got `{"error": ...}`."""
    answer = exchange(cert_deployment.url, request_head("GET", target))
    assert answer.status == 400, answer.text
    assert json.loads(answer.body)["errorCode"] == "INVALID_REQUEST"
