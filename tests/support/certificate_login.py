"""The client side of Responsys's certificate login, written from the vendor's pages, for tests.

REST ("Log in with username and certificates"): POST `auth_type=server`, `user_name`, `client_challenge`
(base64 of random bytes); the answer's `clientChallenge` must RSA-decrypt with the server certificate to
the bytes sent; then POST `auth_type=client`, `user_name`, `server_challenge` (the answer's
`serverChallenge` encrypted with the user's private key, base64) with the temporary `authToken` in
`Authorization`. SOAP: `authenticateServer(username, clientChallenge*)`, then `loginWithCertificate(
encryptedServerChallenge*)` under `AuthSessionHeader/authSessionId`, byte arrays as signed xsd:byte.

The RSA step here is deliberately not the gateway's (`gateway.protocols.rsa_challenge`, OpenSSL's blinded
CRT): it is the textbook `m^d mod n` over the PKCS#1 v1.5 type-1 block, so a test compares two implementations.
"""

from __future__ import annotations

import base64
import functools
import secrets
from dataclasses import dataclass
from typing import Any

import httpx
import zeep
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import NoDigestInfo

from gateway.protocols.rsa_challenge import self_signed_pair

LOGIN_PATH = "/rest/api/v1.3/auth/token"


@dataclass(frozen=True)
class KeyPair:
    key: str  # PEM private key
    certificate: str  # PEM certificate


@functools.cache
def key_pair(name: str) -> KeyPair:
    """A key pair per name, made once per test process (RSA key generation is slow)."""
    key, certificate = self_signed_pair(name)
    return KeyPair(key=key, certificate=certificate)


def encrypt_with_private_key(key_pem: str, data: bytes) -> bytes:
    """PKCS#1 v1.5 type-1 block of `data`, raised to the private exponent (no CRT, no blinding)."""
    key = serialization.load_pem_private_key(key_pem.encode(), password=None)
    assert isinstance(key, rsa.RSAPrivateKey)
    numbers = key.private_numbers()
    n = numbers.public_numbers.n
    size = (n.bit_length() + 7) // 8
    block = b"\x00\x01" + b"\xff" * (size - 3 - len(data)) + b"\x00" + data
    return pow(int.from_bytes(block, "big"), numbers.d, n).to_bytes(size, "big")


def decrypt_with_certificate(certificate_pem: str, blob: bytes) -> bytes:
    public_key = x509.load_pem_x509_certificate(certificate_pem.encode()).public_key()
    assert isinstance(public_key, rsa.RSAPublicKey)
    return public_key.recover_data_from_signature(blob, padding.PKCS1v15(), NoDigestInfo())


def new_client_challenge() -> bytes:
    # The vendor's Java sample: the decimal text of a random long, as bytes.
    return str(secrets.randbits(63)).encode()


@dataclass(frozen=True)
class RestServerStep:
    temporary_token: str
    server_challenge: bytes


def rest_authenticate_server(http: httpx.Client, base_url: str, *, user: str, server_certificate: str,
                             client_challenge: bytes | None = None) -> RestServerStep:
    """Step 1, and the check that the server holds the key of `server_certificate`."""
    challenge = client_challenge or new_client_challenge()
    answer = http.post(base_url + LOGIN_PATH, data={
        "user_name": user, "auth_type": "server",
        "client_challenge": base64.urlsafe_b64encode(challenge).decode().rstrip("=")})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert set(body) == {"authToken", "serverChallenge", "clientChallenge"}, body
    assert decrypt_with_certificate(server_certificate, base64.b64decode(body["clientChallenge"])) == challenge
    return RestServerStep(temporary_token=body["authToken"], server_challenge=base64.b64decode(body["serverChallenge"]))


def rest_login_with_client(http: httpx.Client, base_url: str, step: RestServerStep, *, user: str,
                           key: str) -> httpx.Response:
    """Step 2: the server challenge encrypted with the user's key, the temporary token in Authorization."""
    encrypted = encrypt_with_private_key(key, step.server_challenge)
    return http.post(base_url + LOGIN_PATH, headers={"Authorization": step.temporary_token}, data={
        "user_name": user, "auth_type": "client", "server_challenge": base64.b64encode(encrypted).decode()})


def rest_certificate_login(http: httpx.Client, base_url: str, *, user: str, pair: KeyPair,
                           server_certificate: str) -> dict[str, Any]:
    """Both steps; the final `{"authToken", "issuedAt", "endPoint"}`."""
    step = rest_authenticate_server(http, base_url, user=user, server_certificate=server_certificate)
    answer = rest_login_with_client(http, base_url, step, user=user, key=pair.key)
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


def signed_bytes(data: bytes) -> list[int]:
    return [b - 256 if b > 127 else b for b in data]


def unsigned_bytes(values: list[int]) -> bytes:
    return bytes(v & 0xFF for v in values)


def soap_certificate_login(client: zeep.Client, *, user: str, pair: KeyPair, server_certificate: str,
                           tamper: bool = False) -> str:
    """Both SOAP steps through zeep; the session id. `tamper` flips a bit of the answer (must fail)."""
    challenge = new_client_challenge()
    result = client.service.authenticateServer(username=user, clientChallenge=signed_bytes(challenge))
    assert decrypt_with_certificate(server_certificate, unsigned_bytes(result.encryptedClientChallenge)) == challenge
    answer = bytearray(encrypt_with_private_key(pair.key, unsigned_bytes(result.serverChallenge)))
    if tamper:
        answer[-1] ^= 1
    session_id = client.service.loginWithCertificate(
        encryptedServerChallenge=signed_bytes(bytes(answer)),
        _soapheaders={"AuthSessionHeader": {"authSessionId": result.authSessionId}})
    return str(session_id)
