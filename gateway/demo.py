"""`aftm-gateway demo`: two simulated Responsys accounts and the gateway on an embedded SQLite store.

Everything listens on loopback. The simulators speak plain HTTP here (the tests cover TLS); their
fault-control APIs are printed so a person can kill the primary and watch the gateway fail over.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import socket
from pathlib import Path

import uvicorn

from gateway.app import build_app
from gateway.config import parse_config
from gateway.simulator.server import SimulatedAccount

DEMO_CLIENT = ("demo-app", "demo-password")


def demo_config(*, port: int, data_dir: Path, primary: SimulatedAccount, failover: SimulatedAccount,
                primary_password: str, failover_password: str) -> dict[str, object]:
    return {
        "listen": {"host": "127.0.0.1", "port": port},
        "public_url": f"http://127.0.0.1:{port}",
        "store": f"sqlite:///{data_dir / 'gateway.db'}",
        "session_secret": secrets.token_hex(16),
        "admin": {"token": "demo-admin-token"},
        "requests": {"deadline": 5.0},
        "failover": {"hold_time": 10.0, "probe_interval": 1.0},
        "clients": [{"user_name": DEMO_CLIENT[0], "password": DEMO_CLIENT[1]}],
        "accounts": [
            {"name": "primary", "login_url": primary.url, "soap_url": primary.url + _SOAP,
             "user_name": primary.state.user_name, "password": primary_password},
            {"name": "failover", "login_url": failover.url, "soap_url": failover.url + _SOAP,
             "user_name": failover.state.user_name, "password": failover_password, "api_prefix": "/rest/haApi"},
        ],
    }


_SOAP = "/webservices/services/ResponsysWSService"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def run_demo(*, port: int, data_dir: Path) -> None:
    port = port or _free_port()
    passwords = {"primary": secrets.token_urlsafe(12), "failover": secrets.token_urlsafe(12)}
    primary = SimulatedAccount(name="primary", user_name="api_primary", password=passwords["primary"])
    failover = SimulatedAccount(name="failover", user_name="api_failover", password=passwords["failover"],
                                secondary=True)
    with primary, failover:
        raw = demo_config(port=port, data_dir=data_dir, primary=primary, failover=failover,
                          primary_password=passwords["primary"], failover_password=passwords["failover"])
        config = parse_config(raw, environ={})
        server = _ReadyServer(uvicorn.Config(build_app(config), host="127.0.0.1", port=port, log_config=None,
                                             access_log=False))
        serving = asyncio.create_task(server.serve())
        ready = asyncio.create_task(server.ready.wait())
        await asyncio.wait({serving, ready}, return_when=asyncio.FIRST_COMPLETED)
        ready.cancel()
        if server.started:
            print(_banner(port, primary, failover), flush=True)
        with contextlib.suppress(asyncio.CancelledError):
            await serving


class _ReadyServer(uvicorn.Server):
    """uvicorn with an event set once the app's lifespan started and the socket listens."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.ready = asyncio.Event()

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started:
            self.ready.set()


def _banner(port: int, primary: SimulatedAccount, failover: SimulatedAccount) -> str:
    base = f"http://127.0.0.1:{port}"
    user, password = DEMO_CLIENT
    return f"""
aftm-gateway demo is running.
  gateway:   {base}      (point the app's base URL here)
  app login: user_name={user} password={password}
  REST:      curl -s -d 'user_name={user}&password={password}&auth_type=password' {base}/rest/api/v1.3/auth/token
  SOAP WSDL: {base}/webservices/wsdl/ResponsysWS_Level1.wsdl
  status:    curl -s -H 'Authorization: Bearer demo-admin-token' {base}/admin/status
  primary account  {primary.url}   faults: curl -s -X POST {primary.control_url}/mode -d '{{"mode":"refuse"}}'
  failover account {failover.url}
Ready: {base}
""".strip()
