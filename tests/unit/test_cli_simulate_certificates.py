"""`aftm-gateway simulate`'s certificate-login options: read when complete, refused with a reason otherwise."""

from __future__ import annotations

import argparse
from pathlib import Path

from gateway.cli import _simulator_certificates
from tests.support.certificate_login import key_pair


def _args(**given: object) -> argparse.Namespace:
    options: dict[str, object] = {"client_certificate": None, "server_key": None, "server_certificate": None,
                                  "certificate_only": False}
    options.update(given)
    return argparse.Namespace(**options)


def test_all_three_files_are_read(tmp_path: Path) -> None:
    pair = key_pair("sim-server")
    for name, text in (("client.pem", key_pair("sim-user").certificate), ("key.pem", pair.key),
                       ("cert.pem", pair.certificate)):
        (tmp_path / name).write_text(text)
    read = _simulator_certificates(_args(client_certificate=str(tmp_path / "client.pem"),
                                         server_key=str(tmp_path / "key.pem"),
                                         server_certificate=str(tmp_path / "cert.pem"), certificate_only=True))
    assert read == {"client_certificate": key_pair("sim-user").certificate, "server_key": pair.key,
                    "server_certificate": pair.certificate}


def test_incomplete_options_are_refused_with_a_reason() -> None:
    assert _simulator_certificates(_args(certificate_only=True)) == "--certificate-only needs --client-certificate"
    assert _simulator_certificates(_args(client_certificate="c.pem")) == \
        "--client-certificate needs --server-key and --server-certificate"
    assert _simulator_certificates(_args(server_key="k.pem")) == \
        "--server-key and --server-certificate only apply with --client-certificate"
    assert _simulator_certificates(_args()) == {}
