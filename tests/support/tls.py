"""Certificates for tests (trustme): a CA, server certificates for test names, contexts built from them.

Server certificates cover their names and the loopback addresses the test servers bind, so a test
can tell "the name was checked" from "the address was checked".
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path

import trustme

LOOPBACK_ADDRESSES = ("127.0.0.1", "127.0.0.2", "127.0.0.3")
TEST_NAMES = ("primary.test", "failover.test")


def server_context(ca: trustme.CA, *names: str, maximum: ssl.TLSVersion | None = None,
                   require_client_cert: bool = False, cover_loopback: bool = True) -> ssl.SSLContext:
    """A listener context with a certificate from `ca` for `names` (and, unless told, loopback IPs)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    addresses = LOOPBACK_ADDRESSES if cover_loopback else ()
    cert = ca.issue_cert(*(names or TEST_NAMES), *addresses)
    cert.configure_cert(context)
    if maximum is not None:
        context.maximum_version = maximum
    if require_client_cert:
        context.verify_mode = ssl.CERT_REQUIRED
        ca.configure_trust(context)
    return context


def legacy_server_context(ca: trustme.CA, *names: str) -> ssl.SSLContext:
    """A listener that speaks only TLS 1.0/1.1, as a neglected upstream would.

    OpenSSL 3 refuses these versions at its default security level, and Python warns when they are
    selected; both are lowered here, deliberately and only for this context.
    """
    context = server_context(ca, *names)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        context.minimum_version = ssl.TLSVersion.TLSv1
        context.maximum_version = ssl.TLSVersion.TLSv1_1
    context.set_ciphers("DEFAULT:@SECLEVEL=0")
    return context


@contextlib.contextmanager
def ca_bundle_file(ca: trustme.CA) -> Iterator[str]:
    """The CA as a PEM file path, for `policies.tls.client_context(ca_bundle=...)`."""
    with ca.cert_pem.tempfile() as path:
        yield path


def write_client_identity(ca: trustme.CA, directory: Path, name: str = "gateway.test") -> tuple[str, str]:
    """A client certificate and key from `ca`, written as PEM files; returns (cert_path, key_path)."""
    cert = ca.issue_cert(name)
    cert_path, key_path = directory / "client.pem", directory / "client.key"
    cert_path.write_bytes(b"".join(blob.bytes() for blob in cert.cert_chain_pems))
    key_path.write_bytes(cert.private_key_pem.bytes())
    return str(cert_path), str(key_path)


class BlockingTLSServer:
    """A minimal TLS listener on blocking sockets that behaves like nginx when a handshake fails.

    uvicorn (asyncio) drops the connection without flushing the TLS alert; real servers send it and
    linger-close, so the client learns why (protocol version, certificate required). Connections are
    served one at a time; a completed handshake gets a fixed `200 ok` and the connection is closed.
    """

    RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"

    def __init__(self, context: ssl.SSLContext, host: str = "127.0.0.1") -> None:
        self._context = context
        self._listener = socket.create_server((host, 0))
        self.host = host
        self.port: int = self._listener.getsockname()[1]
        self.failures: list[str] = []  # server-side handshake errors, by OpenSSL reason
        self._stopping = False
        self._thread = threading.Thread(target=self._serve, name=f"tls-{self.port}", daemon=True)

    def _serve(self) -> None:
        while True:
            conn, _ = self._listener.accept()
            if self._stopping:
                conn.close()
                return
            with conn:
                conn.settimeout(5)
                self._handle(self._context.wrap_socket(conn, server_side=True, do_handshake_on_connect=False))

    def _handle(self, tls: ssl.SSLSocket) -> None:
        try:
            tls.do_handshake()
            tls.recv(65536)
            tls.sendall(self.RESPONSE)
        except ssl.SSLError as exc:
            self.failures.append(exc.reason or str(exc))
            _linger_close(tls)
        except OSError:
            pass
        finally:
            tls.close()

    def start(self) -> BlockingTLSServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping = True
        with contextlib.suppress(OSError), socket.create_connection((self.host, self.port), timeout=5):
            pass  # wakes accept()
        self._thread.join(timeout=10)
        self._listener.close()

    def __enter__(self) -> BlockingTLSServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _linger_close(tls: ssl.SSLSocket) -> None:
    # Half-close and drain what the client already sent, so the kernel sends FIN, not RST: an RST
    # would discard the alert before the client reads it.
    with contextlib.suppress(OSError):
        tls.shutdown(socket.SHUT_WR)
        while tls.recv(65536):
            pass
