"""Certificate login in the configuration: accounts with a private key instead of a password."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from gateway.config import parse_config
from gateway.errors import ConfigError
from gateway.protocols.rsa_challenge import self_signed_pair
from tests.support.certificate_login import key_pair


def _account(**keys: Any) -> dict[str, Any]:
    return {"name": "primary", "login_url": "https://login.example", "user_name": "api", **keys}


def _problems(account: dict[str, Any], base_dir: Path = Path()) -> list[str]:
    try:
        parse_config({"accounts": [account]}, environ={}, base_dir=base_dir)
    except ConfigError as exc:
        return exc.problems
    return []


def test_account_with_a_key_file_needs_no_password(tmp_path: Path) -> None:
    (tmp_path / "api.key").write_text(key_pair("api").key)
    config = parse_config({"accounts": [_account(private_key_file="api.key", certificate=key_pair("api").certificate,
                                                 server_certificate=key_pair("server").certificate)]},
                          environ={}, base_dir=tmp_path)
    account = config.accounts[0]
    assert account.password is None and account.private_key is not None
    assert "PRIVATE KEY" not in repr(account)


def test_account_needs_a_password_or_a_private_key() -> None:
    assert any(p.startswith("accounts[0]: needs password") for p in _problems(_account()))


def test_private_key_needs_the_server_certificate() -> None:
    problems = _problems(_account(private_key=key_pair("api").key))
    assert any(p.startswith("accounts[0].server_certificate: required with private_key") for p in problems)


def test_a_certificate_of_another_key_is_refused() -> None:
    problems = _problems(_account(private_key=key_pair("api").key, certificate=key_pair("other").certificate,
                                  server_certificate=key_pair("server").certificate))
    assert "accounts[0].certificate: is not the certificate of private_key" in problems


def test_unreadable_pems_are_named() -> None:
    problems = _problems(_account(private_key="-----BEGIN PRIVATE KEY-----\nnope\n-----END PRIVATE KEY-----",
                                  server_certificate="not a pem"))
    assert any(p.startswith("accounts[0].private_key: not an unencrypted PEM private key") for p in problems)
    assert "accounts[0].server_certificate: must be a PEM document (-----BEGIN ...)" in problems


def test_certificates_without_a_key_are_refused() -> None:
    problems = _problems(_account(password="pw", server_certificate=key_pair("server").certificate))
    assert "accounts[0]: certificate and server_certificate need private_key" in problems


def _with_clients(clients: list[dict[str, Any]], **top: Any) -> list[str]:
    try:
        parse_config({"accounts": [_account(password="pw")], "clients": clients, **top}, environ={})
    except ConfigError as exc:
        return exc.problems
    return []


def test_a_certificate_app_needs_the_gateway_key_pair() -> None:
    problems = _with_clients([{"user_name": "app", "certificate": key_pair("app").certificate}])
    assert "server_key: required (with server_certificate) when a client has a certificate" in problems


def test_a_certificate_app_needs_no_password() -> None:
    server = key_pair("server")
    assert _with_clients([{"user_name": "app", "certificate": key_pair("app").certificate}],
                         server_key=server.key, server_certificate=server.certificate) == []


def test_the_gateway_certificate_must_be_its_key_s() -> None:
    problems = _with_clients([], server_key=key_pair("server").key, server_certificate=key_pair("app").certificate)
    assert "server_certificate: is not the certificate of server_key" in problems


def test_rsa_keys_under_2048_bits_are_refused_wherever_configured() -> None:
    small_key, small_certificate = self_signed_pair("small", bits=1024)
    server = key_pair("server")
    problems = _problems(_account(private_key=small_key, server_certificate=server.certificate))
    assert "accounts[0].private_key: a 1024-bit RSA key is too small (at least 2048 bits)" in problems
    problems = _problems(_account(private_key=server.key, server_certificate=small_certificate))
    assert "accounts[0].server_certificate: a 1024-bit RSA key is too small (at least 2048 bits)" in problems
    problems = _with_clients([{"user_name": "app", "certificate": small_certificate}],
                             server_key=server.key, server_certificate=server.certificate)
    assert "clients[0].certificate: a 1024-bit RSA key is too small (at least 2048 bits)" in problems
    problems = _with_clients([{"user_name": "app", "certificate": server.certificate}],
                             server_key=small_key, server_certificate=small_certificate)
    assert "server_key/server_certificate: a 1024-bit RSA key is too small (at least 2048 bits)" in problems
