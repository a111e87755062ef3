"""Apps that log in to the gateway with the vendor's certificate flow (`clients[].certificate`).

The gateway plays the Responsys server's part ("Log in with username and certificates"; SOAP
`authenticateServer` / `loginWithCertificate`):
1. `authenticate_server`: the app sends its user name and a random challenge; the gateway answers a
   temporary handle, its own random server challenge, and the app's challenge encrypted with the
   gateway's `server_key` (the app checks it with `server_certificate`).
2. `login_with_certificate`: the app sends the server challenge encrypted with its private key and the
   handle; the gateway decrypts with the app's configured certificate and compares. A match is a login.

Stateless across replicas: the handle is signed with `session_secret` and carries a SHA-256 of the
server challenge and its issue time (`Credentials.issue_challenge`), so step 2 may land on any replica;
it is spent in the shared store on first use, right or wrong. The RSA work runs on the password-check
threads, ranked per source (`Credentials.run_login_work`); step 1 costs one private-key operation
whoever asks, so an unknown user name answers like a known one. Failures count against the source, and
so does every step 1 until its step 2 succeeds (`Credentials.login_completed`, which takes back that
charge only, where and to whom it was made): an address that only ever asks for challenges is throttled
after SOURCE_MAX_FAILURES of them, as one guessing passwords is, while its step 2s are never refused.
Keys, challenges and handles are never logged.
"""

from __future__ import annotations

import functools
import hashlib
import secrets
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric import rsa

from gateway.config import Config
from gateway.edge.clients import Credentials
from gateway.errors import CertificateRefused
from gateway.protocols import rsa_challenge


@dataclass(frozen=True, slots=True)
class _Step1:
    encrypted_client_challenge: bytes
    server_challenge: bytes


class AppCertificates:
    """The gateway's server side of certificate login, shared by the REST and SOAP surfaces."""

    def __init__(self, *, config: Config, credentials: Credentials) -> None:
        self._config = config
        self._credentials = credentials
        self._server_key = (rsa_challenge.load_private_key(config.server_key.reveal())
                            if config.server_key is not None else None)

    async def authenticate_server(self, user_name: str, client_challenge: bytes, *,
                                  source: str | None) -> rsa_challenge.ServerAnswer:
        """Step 1. Raises CertificateRefused, or TooManyFailedLogins when the source must wait."""
        if not 0 < len(client_challenge) <= rsa_challenge.MAX_CHALLENGE_BYTES:
            raise CertificateRefused("INVALID_PARAMETER", "client_challenge must be 1 to 117 bytes")
        server_key = self._server_key
        if server_key is None:
            raise CertificateRefused("AUTHENTICATION_FAILED", "Certificate login is not enabled")
        # Charged as a failure whatever the name (an unknown name is one already; a known one until its
        # step 2 succeeds), so neither the throttle nor the time taken says which names exist.
        step = await self._credentials.run_login_work(
            functools.partial(_encrypt_client_challenge, server_key, client_challenge), source=source, charge=True)
        if self._client_key(user_name) is None:  # after the RSA step: unknown names cost the same
            raise CertificateRefused("AUTHENTICATION_FAILED", "Authentication failed")
        return rsa_challenge.ServerAnswer(
            handle=self._credentials.issue_challenge(user_name, step.server_challenge, source=source),
            server_challenge=step.server_challenge, encrypted_client_challenge=step.encrypted_client_challenge)

    async def login_with_certificate(self, handle: str | None, answer: bytes, *, source: str | None,
                                     user_name: str | None = None) -> str:
        """Step 2: the client name logged in. Raises CertificateRefused, TooManyFailedLogins or StoreError.

        `user_name`, when the protocol sends it (REST), must be the one step 1 was for.
        """
        spent = await self._credentials.spend_challenge(handle, source=source)
        key = self._client_key(spent.client) if spent is not None else None
        if spent is None or key is None or (user_name is not None and user_name != spent.client):
            self._credentials.login_failed(source)
            raise CertificateRefused("AUTHENTICATION_FAILED", "Authentication failed")
        # Paid for by its step 1's charge: the wait that charge caused must not refuse the step taking it back.
        ok = await self._credentials.run_login_work(
            functools.partial(_answer_matches, key, answer, spent.challenge_digest), source=source, paid=True)
        if not ok:
            self._credentials.login_failed(source)
            raise CertificateRefused("AUTHENTICATION_FAILED", "Authentication failed")
        self._credentials.login_completed(source, charged_at=spent.charged_at)
        return spent.client

    def _client_key(self, user_name: str) -> rsa.RSAPublicKey | None:
        client = self._config.client(user_name)
        if client is None or client.certificate is None:
            return None
        return _certificate_key(client.certificate)


@functools.lru_cache(maxsize=1024)
def _certificate_key(pem: str) -> rsa.RSAPublicKey:
    return rsa_challenge.load_certificate_key(pem)  # checked at config load: it parses


def _encrypt_client_challenge(server_key: rsa.RSAPrivateKey, client_challenge: bytes) -> _Step1:
    return _Step1(encrypted_client_challenge=rsa_challenge.private_encrypt(server_key, client_challenge),
                  server_challenge=rsa_challenge.new_challenge())


def _answer_matches(key: rsa.RSAPublicKey, answer: bytes, challenge_digest: bytes) -> bool:
    recovered = rsa_challenge.public_decrypt(key, answer)
    return recovered is not None and secrets.compare_digest(hashlib.sha256(recovered).digest(), challenge_digest)
