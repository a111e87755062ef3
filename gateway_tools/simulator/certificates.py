"""The simulated account's certificate login: its server key pair, the API user's certificate, and the
challenges in flight between the two steps.

Vendor flow ("Log in with username and certificates", "Authentication with Certificates"; SOAP
`authenticateServer` / `loginWithCertificate`):
1. The client sends the user name and a random client challenge. The server answers a temporary
   handle (REST `authToken`, SOAP `authSessionId`), its own random server challenge, and the client
   challenge encrypted with the server's private key; the client decrypts that with the server
   certificate it downloaded and compares, which proves it talks to the real server.
2. The client sends the server challenge encrypted with its own private key, with the handle; the
   server decrypts with the certificate the user uploaded and compares. A match logs the user in.
A handle serves one attempt: used (right or wrong) or expired, it is gone, so a wrong answer cannot be
retried against the same server challenge.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from gateway.protocols import rsa_challenge

PENDING_LIFETIME = 300.0  # seconds a handle waits for step 2 (the vendor does not publish its figure)
MAX_PENDING = 1000  # handles kept at once; the oldest go first


@dataclass(frozen=True, slots=True)
class ServerChallenge:
    """Step 1's answer: the handle, the server's challenge, the client's challenge encrypted by the server."""

    handle: str
    server_challenge: bytes
    encrypted_client_challenge: bytes


class CertificateLogin:
    """Thread-safe; the RSA work is CPU-bound, so the listeners call it from a worker thread."""

    def __init__(self, *, client_certificate: str | None, server_key: str | None, server_certificate: str | None,
                 server_name: str, clock: Callable[[], float] = time.monotonic) -> None:
        if (server_key is None) != (server_certificate is None):
            raise ValueError("server_key and server_certificate go together")
        if client_certificate is not None and (server_key is None or server_certificate is None):
            # Made only for an account that uses it: RSA key generation costs a test suite real time.
            server_key, server_certificate = rsa_challenge.self_signed_pair(server_name)
        self.server_certificate = server_certificate  # PEM; None while no certificate login is configured
        self._server_key = rsa_challenge.load_private_key(server_key) if server_key is not None else None
        self._client_key = (rsa_challenge.load_certificate_key(client_certificate)
                            if client_certificate is not None else None)
        self._clock = clock
        self._lock = threading.Lock()
        self._pending: dict[str, tuple[bytes, float]] = {}  # handle -> (server challenge, issued at)

    @property
    def enabled(self) -> bool:
        """True when the API user has a certificate uploaded."""
        return self._client_key is not None

    def authenticate_server(self, client_challenge: bytes) -> ServerChallenge | None:
        """Step 1; None when the user has no certificate or the challenge does not fit an RSA block."""
        if self._client_key is None or self._server_key is None:
            return None
        if not 0 < len(client_challenge) <= rsa_challenge.MAX_CHALLENGE_BYTES:
            return None
        encrypted = rsa_challenge.private_encrypt(self._server_key, client_challenge)
        challenge = rsa_challenge.new_challenge()
        handle = secrets.token_urlsafe(32)
        with self._lock:
            self._expire()
            while len(self._pending) >= MAX_PENDING:
                del self._pending[next(iter(self._pending))]
            self._pending[handle] = (challenge, self._clock())
        return ServerChallenge(handle=handle, server_challenge=challenge, encrypted_client_challenge=encrypted)

    def login_with_certificate(self, handle: str | None, encrypted_server_challenge: bytes) -> bool:
        """Step 2: True when the handle is live and the answer decrypts to its challenge. Spends the handle."""
        if not handle or self._client_key is None:
            return False
        with self._lock:
            self._expire()
            pending = self._pending.pop(handle, None)
        if pending is None:
            return False
        return rsa_challenge.matches(self._client_key, encrypted_server_challenge, pending[0])

    def _expire(self) -> None:
        cutoff = self._clock() - PENDING_LIFETIME
        for handle in [h for h, (_, issued) in self._pending.items() if issued < cutoff]:
            del self._pending[handle]
