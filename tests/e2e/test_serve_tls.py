"""`aftm-gateway serve` as a real process serving HTTPS: the listener has the TLS 1.2 floor too."""

from __future__ import annotations

import socket
import ssl
import subprocess
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import trustme
import yaml

from tests.support.servers import free_port, stop_process, wait_until


@pytest.fixture
def https_gateway(tmp_path: Path) -> Iterator[tuple[int, trustme.CA]]:
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    cert.private_key_and_cert_chain_pem.write_to_path(str(tmp_path / "gateway.pem"))
    port = free_port()
    config = {
        "listen": {"host": "127.0.0.1", "port": port, "tls_cert": str(tmp_path / "gateway.pem"),
                   "tls_key": str(tmp_path / "gateway.pem")},
        "public_url": f"https://127.0.0.1:{port}",
        "store": f"sqlite:///{tmp_path / 'gw.db'}",
        "accounts": [{"name": "primary", "login_url": "https://127.0.0.1:9", "user_name": "u", "password": "p"}],
    }
    (tmp_path / "gateway.yaml").write_text(yaml.safe_dump(config))
    command = [sys.executable, "-m", "gateway.cli", "serve", "--config", str(tmp_path / "gateway.yaml")]
    log = (tmp_path / "gateway.log").open("wb")
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=log)
    try:
        yield port, ca
    finally:
        stop_process(process, grace=15)
        log.close()


def _healthz(port: int, context: ssl.SSLContext) -> int:
    return httpx.get(f"https://127.0.0.1:{port}/healthz", verify=context, trust_env=False, timeout=5).status_code


def test_https_listener_refuses_tls_below_1_2(https_gateway: tuple[int, trustme.CA]) -> None:
    port, ca = https_gateway
    modern = ssl.create_default_context()
    ca.configure_trust(modern)

    def up() -> bool:
        try:
            return _healthz(port, modern) == 200
        except httpx.TransportError:
            return False

    wait_until(up, timeout=20, message="the HTTPS gateway to answer")
    legacy = ssl.create_default_context()
    ca.configure_trust(legacy)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        legacy.minimum_version = ssl.TLSVersion.TLSv1
        legacy.maximum_version = ssl.TLSVersion.TLSv1_1
    legacy.set_ciphers("DEFAULT:@SECLEVEL=0")
    with pytest.raises(httpx.ConnectError):
        _healthz(port, legacy)
    with socket.create_connection(("127.0.0.1", port)) as raw, \
            modern.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
        assert tls.version() in ("TLSv1.2", "TLSv1.3")
