"""The processes a benchmark run compares: a fast upstream, nginx, HAProxy, dnsmasq and the gateway.

Everything listens on 127.0.0.1 with ports chosen here, runs from a temporary folder, and is stopped
when the run ends (also on errors and Ctrl-C) by the `contextlib.ExitStack` that started it.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import trustme
import yaml

from gateway_tools.harness import free_port, stop_process

SEND_BODY = (b'{"recipientData":[{"recipient":{"emailAddress":"bench@example.com","listName":{"folderName":"F",'
             b'"objectName":"L"},"emailFormat":"HTML_FORMAT"},"optionalData":[]}]}')
SEND_PATH = "/rest/api/v1.3/campaigns/bench/email"
UPSTREAM_NAME = "upstream.test"
APP_USER, APP_PASSWORD = "bench", "bench-password"


def wait_for_port(port: int, process: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args!r} exited with {process.returncode} before listening")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listened on 127.0.0.1:{port} within {timeout}s")


def require(*programs: str) -> list[str]:
    """The programs that are missing (the caller says how to install them)."""
    return [p for p in programs if shutil.which(p) is None]


_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """Linux: the child gets SIGTERM when the bench dies, even by SIGKILL (e.g. a test's timeout)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


@contextlib.contextmanager
def sigterm_unwinds() -> Iterator[None]:
    """SIGTERM raises KeyboardInterrupt like Ctrl-C, so every `finally`/ExitStack stops its processes."""

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@dataclass
class Stack:
    """Starts processes and stops them all on close (also on errors, Ctrl-C, SIGTERM and the bench's death)."""

    workdir: Path
    stack: contextlib.ExitStack

    def spawn(self, name: str, command: list[str], *, port: int,
              env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        log = (self.workdir / f"{name}.log").open("wb")
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=self.workdir,
                                   env={**os.environ, **(env or {})}, preexec_fn=_die_with_parent)

        def stop() -> None:
            stop_process(process, grace=10)
            log.close()

        self.stack.callback(stop)
        try:
            wait_for_port(port, process)
        except RuntimeError as exc:
            log.flush()
            tail = (self.workdir / f"{name}.log").read_text(errors="replace")[-2000:]
            raise RuntimeError(f"{name}: {exc}\n{tail}") from None
        return process


@dataclass(frozen=True)
class Certificates:
    ca_file: str
    cert_file: str  # key and chain in one PEM


def make_certificates(workdir: Path) -> Certificates:
    ca = trustme.CA()
    cert = ca.issue_cert(UPSTREAM_NAME, "127.0.0.1")
    ca.cert_pem.write_to_path(str(workdir / "ca.pem"))
    cert.private_key_and_cert_chain_pem.write_to_path(str(workdir / "upstream.pem"))
    return Certificates(ca_file=str(workdir / "ca.pem"), cert_file=str(workdir / "upstream.pem"))


_NGINX_HEAD = """daemon off;
worker_processes 1;
pid {workdir}/{name}.pid;
error_log {workdir}/{name}.error.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  client_body_temp_path {workdir}/tmp-{name};
  proxy_temp_path {workdir}/tmp-{name};
  fastcgi_temp_path {workdir}/tmp-{name};
  uwsgi_temp_path {workdir}/tmp-{name};
  scgi_temp_path {workdir}/tmp-{name};
  keepalive_requests 1000000;
"""


def start_upstream(stack: Stack, certs: Certificates) -> tuple[int, int]:
    """A fast HTTPS upstream answering a Responsys login and trigger like the vendor (nginx, fixed JSON)."""
    port = free_port()
    conf = _NGINX_HEAD.format(workdir=stack.workdir, name="upstream") + f"""
  server {{
    listen 127.0.0.1:{port} ssl;
    ssl_certificate {certs.cert_file};
    ssl_certificate_key {certs.cert_file};
    default_type application/json;
    location = /rest/api/v1.3/auth/token {{
      return 200 '{{"authToken":"bench-token","issuedAt":1,"endPoint":"https://$http_host"}}';
    }}
    location / {{ return 200 '[{{"errorMessage":null,"success":true,"recipientId":1}}]'; }}
  }}
}}
"""
    path = stack.workdir / "upstream.conf"
    path.write_text(conf)
    process = stack.spawn("upstream", ["nginx", "-c", str(path), "-p", str(stack.workdir)], port=port)
    return port, process.pid


def start_nginx_proxy(stack: Stack, certs: Certificates, upstream_port: int) -> tuple[int, int]:
    port = free_port()
    conf = _NGINX_HEAD.format(workdir=stack.workdir, name="proxy") + f"""
  upstream responsys {{ server 127.0.0.1:{upstream_port}; keepalive 256; }}
  server {{
    listen 127.0.0.1:{port};
    location / {{
      proxy_pass https://responsys;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_ssl_verify on;
      proxy_ssl_trusted_certificate {certs.ca_file};
      proxy_ssl_name {UPSTREAM_NAME};
      proxy_ssl_server_name on;
      proxy_ssl_protocols TLSv1.2 TLSv1.3;
      proxy_ssl_session_reuse on;
    }}
  }}
}}
"""
    path = stack.workdir / "proxy.conf"
    path.write_text(conf)
    process = stack.spawn("nginx-proxy", ["nginx", "-c", str(path), "-p", str(stack.workdir)], port=port)
    return port, process.pid


def start_haproxy(stack: Stack, certs: Certificates, upstream_port: int) -> tuple[int, int]:
    port = free_port()
    conf = f"""global
  nbthread 1
  maxconn 4096
defaults
  mode http
  timeout connect 5s
  timeout client 30s
  timeout server 30s
  http-reuse always
frontend gateway
  bind 127.0.0.1:{port}
  default_backend responsys
backend responsys
  server upstream 127.0.0.1:{upstream_port} ssl verify required ca-file {certs.ca_file} sni str({UPSTREAM_NAME}) \
verifyhost {UPSTREAM_NAME} ssl-min-ver TLSv1.2
"""
    path = stack.workdir / "haproxy.cfg"
    path.write_text(conf)
    process = stack.spawn("haproxy", ["haproxy", "-f", str(path), "-db"], port=port)
    return port, process.pid


def start_dnsmasq(stack: Stack) -> int:
    """A loopback resolver answering the upstream's name, with a long TTL the gateway must ignore."""
    port = free_port()
    # dnsmasq serves TCP on the same port as UDP, so the readiness wait can connect to it.
    stack.spawn("dnsmasq", [
        "dnsmasq", "--keep-in-foreground", f"--port={port}", "--listen-address=127.0.0.1",
        "--bind-interfaces", "--no-resolv", "--no-hosts", f"--address=/{UPSTREAM_NAME}/127.0.0.1",
        "--local-ttl=3600", f"--pid-file={stack.workdir / 'dnsmasq.pid'}", "--user=root",
    ], port=port)
    return port


@dataclass(frozen=True)
class Gateway:
    port: int
    token: str  # an app token (gateway login) for the Authorization header
    pid: int  # the process serving requests (with --workers N: the parent)


def start_gateway(stack: Stack, certs: Certificates, upstream_port: int, *, name: str,
                  dns_port: int | None = None, workers: int = 1, variant: str | None = None,
                  root: Path | None = None) -> Gateway:
    """The real gateway on one account; returns its port, an app token and its pid.

    By default `aftm-gateway serve` (build_app under uvicorn, uvloop + httptools). `variant` runs
    `python -m bench.variants NAME CONFIG` instead: the same build_app and Runtime with one change the
    bench makes from outside (see bench/variants.py), to measure a hot-path idea before anyone edits it.
    `root` runs the gateway of another checkout (bench.ab: two versions side by side in one run).
    """
    port = free_port()
    host = UPSTREAM_NAME if dns_port is not None else "127.0.0.1"
    config = {
        "listen": {"host": "127.0.0.1", "port": port},
        "public_url": f"http://127.0.0.1:{port}",
        "store": f"sqlite:///{stack.workdir / (name + '.db')}",
        "tls": {"ca_bundle": certs.ca_file},
        "dns": {"nameservers": ["127.0.0.1"], "port": dns_port or 53},
        "clients": [{"user_name": APP_USER, "password": APP_PASSWORD}],
        "accounts": [{"name": "bench", "login_url": f"https://{host}:{upstream_port}", "user_name": "api",
                      "password": "api-password"}],
    }
    path = stack.workdir / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    if variant is None:
        command = [sys.executable, "-m", "gateway.cli", "serve", "--config", str(path), "--workers", str(workers)]
    else:
        command = [sys.executable, "-m", "bench.variants", variant, str(path)]
    env = {"AFTM_LOG_LEVEL": "WARNING", "PYTHONPATH": str(root or Path(__file__).parents[1])}
    process = stack.spawn(name, command, port=port, env=env)
    response = httpx.post(f"http://127.0.0.1:{port}/rest/api/v1.3/auth/token", trust_env=False,
                          data={"user_name": APP_USER, "password": APP_PASSWORD, "auth_type": "password"})
    response.raise_for_status()
    token = str(response.json()["authToken"])
    # a few sends first, so the gateway's upstream login and first connections are not in the measurement
    for _ in range(workers * 4):
        httpx.post(f"http://127.0.0.1:{port}{SEND_PATH}", content=SEND_BODY, trust_env=False,
                   headers={"Authorization": token, "Content-Type": "application/json"}).raise_for_status()
    return Gateway(port=port, token=token, pid=process.pid)
