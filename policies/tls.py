"""Which TLS the gateway accepts, as pure `ssl.SSLContext` builders.

Both directions share one floor: TLS 1.2. Responsys and every client the gateway serves speak 1.2 or
1.3; TLS 1.0/1.1 are deprecated by RFC 8996. Trust comes only from the arguments (or the system store
when no CA bundle is given), never from environment variables such as SSL_CERT_FILE: building the
context here and handing it to httpx with `trust_env=False` keeps routing and trust explicit.
"""

from __future__ import annotations

import os
import ssl

TLS_FLOOR = ssl.TLSVersion.TLSv1_2


def client_context(*, ca_bundle: str | None = None, client_cert: str | None = None,
                   client_key: str | None = None) -> ssl.SSLContext:
    """A context for calls to upstreams: TLS 1.2+, certificate and host name checked.

    `ca_bundle` (PEM) replaces the system store when given. `client_cert` (PEM, may hold the key too)
    with optional `client_key` presents a client certificate for mutual TLS.
    """
    if client_key is not None and client_cert is None:
        raise ValueError("tls.client_key is set without tls.client_cert: set both or neither")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # CERT_REQUIRED and check_hostname by default
    context.minimum_version = TLS_FLOOR
    context.verify_mode = ssl.CERT_REQUIRED
    context.check_hostname = True
    if ca_bundle is not None:
        context.load_verify_locations(cafile=ca_bundle)
    else:
        _load_system_store(context)
    if client_cert is not None:
        context.load_cert_chain(certfile=client_cert, keyfile=client_key)
    return context


def server_context(*, cert_file: str, key_file: str | None = None) -> ssl.SSLContext:
    """A context for the gateway's own HTTPS listener: TLS 1.2+, no client certificate asked."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = TLS_FLOOR
    context.load_cert_chain(certfile=cert_file, keyfile=key_file)
    return context


def _load_system_store(context: ssl.SSLContext) -> None:
    # OpenSSL's set_default_verify_paths() honours SSL_CERT_FILE/SSL_CERT_DIR; load the compiled-in
    # locations instead, so trust never comes from the environment.
    paths = ssl.get_default_verify_paths()
    cafile = paths.openssl_cafile if os.path.isfile(paths.openssl_cafile) else None
    capath = paths.openssl_capath if os.path.isdir(paths.openssl_capath) else None
    if cafile is not None or capath is not None:
        context.load_verify_locations(cafile=cafile, capath=capath)
