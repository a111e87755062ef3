from __future__ import annotations

from pathlib import Path

import pytest

from gateway.config import Secret, hash_password, load_config, parse_config
from gateway.errors import ConfigError

MINIMAL = {
    "accounts": [
        {"name": "primary", "login_url": "https://login2.responsys.net", "user_name": "api_p",
         "password_env": "PRIMARY_PW"},
        {"name": "failover", "login_url": "https://login5.responsys.net", "user_name": "api_f",
         "password_file": "secrets/failover"},
    ],
    "clients": [{"user_name": "app", "password_hash": hash_password("s3cret", iterations=1000)}],
}


def _problems(data: object, environ: dict[str, str] | None = None, base_dir: Path = Path()) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_config(data, environ=environ or {}, base_dir=base_dir)
    return caught.value.problems


def test_secrets_come_from_env_and_file_and_never_show(tmp_path: Path) -> None:
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "failover").write_text("file-secret\n")
    config = parse_config(MINIMAL, environ={"PRIMARY_PW": "env-secret"}, base_dir=tmp_path)
    assert config.accounts[0].password.reveal() == "env-secret"
    assert config.accounts[1].password.reveal() == "file-secret"
    assert "env-secret" not in repr(config) and "file-secret" not in repr(config)
    assert config.clients[0].check_password("s3cret") and not config.clients[0].check_password("nope")


def test_every_problem_is_reported_with_its_key(tmp_path: Path) -> None:
    data = {
        "accounts": [
            {"name": "primary", "login_url": "ftp://x", "user_name": "u", "password_env": "MISSING_PW",
             "colour": "red"},
            {"name": "primary", "login_url": "https://a.example", "user_name": "u", "password": "p"},
        ],
        "listen": {"port": "eighty"},
        "bogus": 1,
    }
    problems = _problems(data, base_dir=tmp_path)
    assert "accounts[0].password_env: MISSING_PW is not set" in problems
    assert any(p.startswith("accounts[0].colour: unknown key") for p in problems)
    assert any(p.startswith("bogus: unknown key") for p in problems)
    assert "listen.port: must be a whole number" in problems
    assert any(p.startswith("accounts[0].login_url:") for p in problems)
    assert any(p.startswith("accounts[1].name:") and "more than one" in p for p in problems)


def test_values_can_come_from_the_environment() -> None:
    data = {**MINIMAL, "public_url": "${PUBLIC_URL}", "listen": {"port": "${PORT:-9000}"}}
    data["accounts"] = [dict(MINIMAL["accounts"][0])]  # type: ignore[index]
    config = parse_config(data, environ={"PRIMARY_PW": "x", "PUBLIC_URL": "https://gw.example"})
    assert config.public_url == "https://gw.example"
    assert config.listen.port == 9000


def test_missing_required_keys_are_named() -> None:
    problems = _problems({"accounts": [{"name": "p"}]})
    assert {"accounts[0].login_url: required", "accounts[0].user_name: required"} <= set(problems)


def test_no_accounts_is_an_error() -> None:
    assert "accounts: at least one account is required" in _problems({"accounts": []})


def test_example_config_is_valid() -> None:
    example = Path(__file__).parents[2] / "examples" / "gateway.yaml"
    config = load_config(example, environ={"PRIMARY_PASSWORD": "a", "FAILOVER_PASSWORD": "b",
                                           "APP_PASSWORD": "c", "ADMIN_TOKEN": "d" * 32, "SESSION_SECRET": "e" * 32,
                                           "SMS_PW": "f", "APP_FDXML_SECRET": "g" * 32})
    assert [a.name for a in config.accounts] == ["primary", "failover"]
    assert config.sms.alternate_senders == {"98765": ["+13125550100"]}


def test_secret_equality_does_not_leak() -> None:
    assert Secret("a") == Secret("a") and Secret("a") != Secret("b")
    assert "a" not in str(Secret("a"))


SIGNING_KEYS = {"session_secret": "s", "admin": {"token": "1"},
                "clients": [{"user_name": "app", "password": "pw", "failure_post_url": "https://app.example/f",
                             "failure_post_secret": "short"}]}


def test_signing_keys_shorter_than_32_bytes_are_refused_with_what_to_do() -> None:
    problems = _problems({**MINIMAL, **SIGNING_KEYS}, environ={"PRIMARY_PW": "x"})
    hint = "must be at least 32 bytes (e.g. `openssl rand -hex 32`)"
    assert f"session_secret: {hint}; got 1" in problems
    assert f"admin.token: {hint}; got 1" in problems
    assert f"clients[0].failure_post_secret: {hint}; got 5" in problems


def test_signing_keys_count_the_bytes_of_the_configured_text(tmp_path: Path) -> None:
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "failover").write_text("file-secret\n")
    hex_16 = "0123456789abcdef" * 2  # secrets.token_hex(16): 32 characters of text is enough
    config = parse_config({**MINIMAL, "session_secret": hex_16, "admin": {"token": "é" * 16}},
                          environ={"PRIMARY_PW": "x"}, base_dir=tmp_path)
    assert config.session_secret is not None and config.admin.token is not None
    assert "got 31" in _problems({**MINIMAL, "session_secret": hex_16[:-1]}, environ={"PRIMARY_PW": "x"},
                                 base_dir=tmp_path)[0]


@pytest.mark.parametrize("name", ["team|app", "app\n", "tab\tname"])
def test_a_client_name_that_would_break_the_gateways_tokens_is_refused(name: str) -> None:
    # Tokens are `kind|client|issued|...`: a client named `team|app` logged in, but none of its tokens verified.
    data = {**MINIMAL, "clients": [{"user_name": name, "password_hash": hash_password("s3cret", iterations=1000)}]}
    assert "clients[0].user_name: printable characters other than '|' only" in _problems(data, {"PRIMARY_PW": "x"})
