from __future__ import annotations

import ssl
from pathlib import Path

import pytest
import trustme

from policies.tls import client_context, server_context


def test_client_context_refuses_anything_below_tls_1_2() -> None:
    assert client_context().minimum_version is ssl.TLSVersion.TLSv1_2


def test_client_context_verifies_certificate_and_host_name() -> None:
    context = client_context()
    assert context.verify_mode is ssl.CERT_REQUIRED
    assert context.check_hostname is True


def test_client_context_trusts_only_the_given_bundle(tmp_path: Path) -> None:
    ca = trustme.CA()
    bundle = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(bundle))
    context = client_context(ca_bundle=str(bundle))
    assert len(context.get_ca_certs()) == 1


def test_client_context_ignores_ssl_cert_file_from_the_environment(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    ca = trustme.CA()
    bundle = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(bundle))
    without = client_context().cert_store_stats()["x509_ca"]
    monkeypatch.setenv("SSL_CERT_FILE", str(bundle))
    monkeypatch.setenv("SSL_CERT_DIR", str(tmp_path))
    assert client_context().cert_store_stats()["x509_ca"] == without


def test_client_context_loads_a_client_certificate(tmp_path: Path) -> None:
    ca = trustme.CA()
    cert = ca.issue_cert("gateway.test")
    cert_path, key_path = tmp_path / "client.pem", tmp_path / "client.key"
    cert.cert_chain_pems[0].write_to_path(str(cert_path))
    cert.private_key_pem.write_to_path(str(key_path))
    client_context(client_cert=str(cert_path), client_key=str(key_path))  # raises if unusable


def test_client_key_without_certificate_is_a_configuration_error() -> None:
    with pytest.raises(ValueError, match=r"client_key is set without tls\.client_cert"):
        client_context(client_key="/nonexistent.key")


def test_server_context_has_the_same_floor_and_asks_no_client_certificate(tmp_path: Path) -> None:
    cert = trustme.CA().issue_cert("gateway.test")
    cert_path, key_path = tmp_path / "server.pem", tmp_path / "server.key"
    cert.cert_chain_pems[0].write_to_path(str(cert_path))
    cert.private_key_pem.write_to_path(str(key_path))
    context = server_context(cert_file=str(cert_path), key_file=str(key_path))
    assert context.minimum_version is ssl.TLSVersion.TLSv1_2
    assert context.verify_mode is ssl.CERT_NONE
