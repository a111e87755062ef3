"""The drill's deployment pieces on loopback: a throwaway CA and the gateway in a thread.

Nothing here is test code: the drill ships with the product, so it cannot lean on trustme or dnslib.
- `ThrowawayCA` issues a CA and one server certificate with the `cryptography` package (EC P-256, valid
  for a day) and writes them as PEM files; `tls_available()` says whether the package is importable.
- the DNS responder is `gateway_tools.loopback_dns.LoopbackDNS` (dnspython), shared with the tests.
- `drill_server` runs the gateway app under uvicorn on its own event loop in a thread (the harness's
  `ServerThread`), so the drill's clients never share a loop with the code they measure.
"""

from __future__ import annotations

import datetime
import socket
from pathlib import Path
from typing import Any

from gateway_tools.harness import ServerThread


def tls_available() -> bool:
    """True when the `cryptography` package can issue the drill's throwaway certificates."""
    try:
        import cryptography.x509  # noqa: F401
    except ImportError:
        return False
    return True


class ThrowawayCA:
    """A CA made at run time and one server certificate from it covering `names`."""

    def __init__(self, *, names: list[str]) -> None:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

        now = datetime.datetime.now(datetime.UTC)
        valid = (now - datetime.timedelta(minutes=5), now + datetime.timedelta(days=1))
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "aftm-gateway drill CA")])
        ca_cert = (
            x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
            .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(valid[0]).not_valid_after(valid[1])
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False,
                                         encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256())
        )
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(valid[0]).not_valid_after(valid[1])
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                           critical=False)
            .sign(ca_key, hashes.SHA256())
        )
        pem = serialization.Encoding.PEM
        self.ca_pem = ca_cert.public_bytes(pem)
        self.cert_pem = cert.public_bytes(pem)
        self.key_pem = key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())

    def write(self, directory: Path) -> tuple[str, str, str]:
        """(CA bundle, server certificate, server key) as PEM files in `directory`; the key is 0600."""
        directory.mkdir(parents=True, exist_ok=True)
        ca, cert, key = directory / "ca.pem", directory / "server.pem", directory / "server.key"
        ca.write_bytes(self.ca_pem)
        cert.write_bytes(self.cert_pem)
        key.touch(mode=0o600)
        key.write_bytes(self.key_pem)
        return str(ca), str(cert), str(key)


def drill_server(app: Any, sock: socket.socket) -> ServerThread:
    """`app` (the gateway, or the app's PIN receiver) under uvicorn on `sock`, on its own loop in a thread."""
    return ServerThread(app, sock=sock, name="drill", lifespan="on", timeout_graceful_shutdown=3, server_header=False)
