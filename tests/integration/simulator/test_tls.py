"""TLS on the account listener, including a TLS-1.1-only upstream."""

from __future__ import annotations

import ssl
import warnings
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
import trustme

from gateway_tools.simulator.server import SimulatedAccount
from tests.integration.simulator.conftest import rest_login


def _cert_files(ca: trustme.CA, directory: Path) -> tuple[str, str]:
    cert = ca.issue_cert("127.0.0.1", "primary.test")
    cert_path, key_path = directory / "sim.pem", directory / "sim.key"
    cert_path.write_bytes(b"".join(blob.bytes() for blob in cert.cert_chain_pems))
    key_path.write_bytes(cert.private_key_pem.bytes())
    return str(cert_path), str(key_path)


def _client_context(ca: trustme.CA, *, minimum: ssl.TLSVersion) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ca.configure_trust(context)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        context.minimum_version = minimum
    if minimum < ssl.TLSVersion.TLSv1_2:
        context.set_ciphers("DEFAULT:@SECLEVEL=0")
    return context


def _negotiated(answer: httpx.Response) -> str:
    return str(answer.extensions["network_stream"].get_extra_info("ssl_object").version())


def test_tls_listener_reports_an_https_endpoint(make_account: Callable[..., SimulatedAccount],
                                                test_ca: trustme.CA, tmp_path: Path) -> None:
    cert, key = _cert_files(test_ca, tmp_path)
    account = make_account(tls_cert=cert, tls_key=key)

    with httpx.Client(verify=_client_context(test_ca, minimum=ssl.TLSVersion.TLSv1_2), trust_env=False) as http:
        answer = http.post(f"{account.url}/rest/api/v1.3/auth/token",
                           data={"user_name": "api_primary", "password": "pw-primary-test", "auth_type": "password"})

    assert account.url.startswith("https://")
    assert answer.json()["endPoint"] == account.url


def test_tls_1_1_capped_listener_serves_a_permissive_client(make_account: Callable[..., SimulatedAccount],
                                                             test_ca: trustme.CA, tmp_path: Path) -> None:
    cert, key = _cert_files(test_ca, tmp_path)
    account = make_account(tls_cert=cert, tls_key=key, tls_max_version="1.1")

    with httpx.Client(verify=_client_context(test_ca, minimum=ssl.TLSVersion.TLSv1), trust_env=False) as http:
        token = rest_login(http, account.url)
        with http.stream("GET", f"{account.url}/rest/api/ratelimit", headers={"Authorization": token}) as answer:
            negotiated = _negotiated(answer)

    assert answer.status_code == 200
    assert negotiated == "TLSv1.1"


def test_tls_1_1_capped_listener_is_refused_by_a_tls_1_2_client(make_account: Callable[..., SimulatedAccount],
                                                                 test_ca: trustme.CA, tmp_path: Path) -> None:
    cert, key = _cert_files(test_ca, tmp_path)
    account = make_account(tls_cert=cert, tls_key=key, tls_max_version="1.1")

    with httpx.Client(verify=_client_context(test_ca, minimum=ssl.TLSVersion.TLSv1_2), trust_env=False) as http, \
            pytest.raises(httpx.ConnectError) as raised:
        rest_login(http, account.url)

    assert isinstance(raised.value.__context__, ssl.SSLError) or "SSL" in str(raised.value).upper()
    assert account.stats()["rest_logins"] == 0
