"""The account's side of certificate login answers only a genuine challenge from a server that proved its key."""

from __future__ import annotations

import pytest

from gateway.config import Account, parse_config
from gateway.errors import LoginRefused
from gateway.protocols import rsa_challenge
from gateway.upstreams.sessions import answer_server_challenge
from tests.support.certificate_login import encrypt_with_private_key, key_pair

CLIENT_CHALLENGE = b"12345678901234567"


def _account() -> Account:
    config = parse_config({"accounts": [{
        "name": "primary", "login_url": "https://login.example", "user_name": "api",
        "private_key": key_pair("api").key, "server_certificate": key_pair("server").certificate}]},
        environ={})
    return config.accounts[0]


def _server_answer(server_challenge: bytes, handle: str = "temporary-token") -> rsa_challenge.ServerAnswer:
    proof = encrypt_with_private_key(key_pair("server").key, CLIENT_CHALLENGE)  # the server holds its key
    return rsa_challenge.ServerAnswer(handle=handle, server_challenge=server_challenge,
                                      encrypted_client_challenge=proof)


def test_a_genuine_server_challenge_is_answered_with_the_account_key() -> None:
    answer = answer_server_challenge(_account(), CLIENT_CHALLENGE, _server_answer(b"s" * 32))
    public = rsa_challenge.load_certificate_key(key_pair("api").certificate)
    assert rsa_challenge.public_decrypt(public, answer) == b"s" * 32


@pytest.mark.parametrize("server_challenge", [b"d" * 118, b"d" * 245, b"d" * 300])
def test_a_server_challenge_too_large_to_be_one_is_a_refused_login_not_a_crash(server_challenge: bytes) -> None:
    with pytest.raises(LoginRefused, match="server challenge"):
        answer_server_challenge(_account(), CLIENT_CHALLENGE, _server_answer(server_challenge))


@pytest.mark.parametrize("handle", ["token\r\nX-Injected: 1", "tökén", "a b"])
def test_a_temporary_token_that_cannot_go_back_in_a_header_is_a_refused_login(handle: str) -> None:
    with pytest.raises(LoginRefused, match="temporary token"):
        answer_server_challenge(_account(), CLIENT_CHALLENGE, _server_answer(b"s" * 32, handle))
