"""The RSA primitives of Responsys's certificate login: "encrypt with the private key", "decrypt with the
certificate", and the base64 the challenges travel in.

The vendor's flow (REST `auth_type=server` then `auth_type=client`; SOAP `authenticateServer` then
`loginWithCertificate`) has each side prove it holds a private key by RSA-*encrypting* the other side's
random challenge with it; the other side RSA-decrypts with the public key of the certificate it was
given and compares. That is PKCS#1 v1.5 block type 1 over the raw challenge bytes, without a
DigestInfo: what Java's `Cipher("RSA/ECB/PKCS1Padding")` in ENCRYPT mode with a private key and
OpenSSL's `RSA_private_encrypt(..., RSA_PKCS1_PADDING)` produce (the vendor's sample clients use
those). The padding is deterministic, so any correct implementation gives the same bytes.

`cryptography` 47 and later make that block with OpenSSL: `sign(data, PKCS1v15(), NoDigestInfo())` pads
the raw bytes as type 1 without a DigestInfo and runs OpenSSL's private-key operation (blinded CRT, a
faulty CRT result caught by its own check against the public exponent), and releases the GIL meanwhile
(measured: 47.0 does, 46.0 did not). The pure-Python `pow` this module used before held the GIL for
about 6 ms per 2048-bit operation, so a storm of step-1 requests stole the event loop's time although
the work ran on a worker thread. OpenSSL takes about 0.4 ms, during which the other threads run. It is
still CPU work: callers run it off the event loop, ranked (`gateway.password_checks`).
"""

from __future__ import annotations

import base64
import binascii
import datetime
import secrets
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import NoDigestInfo
from cryptography.x509.oid import NameOID

from gateway.errors import PemError

CHALLENGE_BYTES = 32
MAX_CHALLENGE_BYTES = 117  # PKCS#1 v1.5 room in a 1024-bit block; the vendor's keys are at least that
# Smaller keys are refused at config load: a 512-bit key is factored in hours (anyone could then log in
# as the app or answer as the server), and below 1024 bits a 117-byte challenge does not fit the block.
MIN_KEY_BITS = 2048


@dataclass(frozen=True, slots=True)
class ServerAnswer:
    """Step 1's answer, whichever protocol carried it: the handle for step 2 (REST temporary
    `authToken`, SOAP `authSessionId`), the server's challenge, and the client's challenge as the
    server encrypted it with its private key."""

    handle: str
    server_challenge: bytes
    encrypted_client_challenge: bytes

    def __repr__(self) -> str:  # the handle is a credential for one step: never in a log line
        return "ServerAnswer(***)"


def load_private_key(pem: str) -> rsa.RSAPrivateKey:
    """An unencrypted PEM private key (PKCS#1 or PKCS#8), RSA only."""
    try:
        key = serialization.load_pem_private_key(pem.encode(), password=None)
    except (ValueError, TypeError) as exc:
        raise PemError(f"not an unencrypted PEM private key ({exc.__class__.__name__})") from None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise PemError("not an RSA private key (certificate login is RSA)")
    _check_size(key.key_size)
    return key


def load_certificate_key(pem: str) -> rsa.RSAPublicKey:
    """The RSA public key of a PEM X.509 certificate."""
    try:
        certificate = x509.load_pem_x509_certificate(pem.encode())
    except ValueError as exc:
        raise PemError(f"not a PEM X.509 certificate ({exc.__class__.__name__})") from None
    key = certificate.public_key()
    if not isinstance(key, rsa.RSAPublicKey):
        raise PemError("the certificate's key is not RSA (certificate login is RSA)")
    _check_size(key.key_size)
    return key


def _check_size(bits: int) -> None:
    if bits < MIN_KEY_BITS:
        raise PemError(f"a {bits}-bit RSA key is too small (at least {MIN_KEY_BITS} bits)")


def private_encrypt(key: rsa.RSAPrivateKey, data: bytes) -> bytes:
    """`data` in a PKCS#1 v1.5 type-1 block raised to the private exponent, by OpenSSL without the GIL.

    Raises ValueError when `data` does not fit the key's block (more than its size less 11 bytes).
    """
    limit = (key.key_size + 7) // 8 - 11
    if len(data) > limit:  # OpenSSL's own message talks of digests and salts
        raise ValueError(f"{len(data)} bytes do not fit a {key.key_size}-bit PKCS#1 v1.5 block")
    return key.sign(data, padding.PKCS1v15(), NoDigestInfo())


def public_decrypt(key: rsa.RSAPublicKey, blob: bytes) -> bytes | None:
    """What `private_encrypt` put in `blob` with the matching private key, or None."""
    try:
        return key.recover_data_from_signature(blob, padding.PKCS1v15(), NoDigestInfo())
    except (InvalidSignature, ValueError):
        return None


def matches(key: rsa.RSAPublicKey, blob: bytes, expected: bytes) -> bool:
    """True when `blob` is `expected` encrypted with the private key of `key`."""
    recovered = public_decrypt(key, blob)
    return recovered is not None and secrets.compare_digest(recovered, expected)


def new_challenge() -> bytes:
    return secrets.token_bytes(CHALLENGE_BYTES)


def encode(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def decode(text: str) -> bytes | None:
    """Base64 in either alphabet, padding optional (the vendor's Java sample sends URL-safe unpadded)."""
    cleaned = "".join(text.split()).replace("-", "+").replace("_", "/")
    cleaned += "=" * (-len(cleaned) % 4)
    try:
        return base64.b64decode(cleaned, validate=True)
    except (binascii.Error, ValueError):
        return None


def self_signed_pair(common_name: str, *, bits: int = 2048) -> tuple[str, str]:
    """(private key PEM, certificate PEM) of a new RSA key in a self-signed certificate valid one year.

    What an API user uploads to Responsys, or the simulator's own server certificate, made at run time.
    """
    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=365))
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()).decode()
    return key_pem, certificate.public_bytes(serialization.Encoding.PEM).decode()
