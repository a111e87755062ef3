"""`aftm-gateway demo`: two simulated Responsys accounts, a simulated SMS aggregator and the gateway on
an embedded SQLite store.

Everything listens on loopback. The simulators speak plain HTTP here (the tests cover TLS); their
fault-control APIs are printed so a person can kill the primary and watch the gateway fail over, or
make the carrier fail a short code and watch an SMS go out from the long code.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from pathlib import Path

from gateway.config import parse_config
from gateway.edge.app import build_app
from gateway.edge.listener import server_config
from gateway_tools.harness import Listener, bind_socket
from gateway_tools.simulator.server import SimulatedAccount
from gateway_tools.simulator.sms import SimulatedSmsAggregator

SHORT_CODE, LONG_CODE = "98765", "+13125550100"

DEMO_CLIENT = ("demo-app", "demo-password")


def demo_config(*, port: int, data_dir: Path, primary: SimulatedAccount, failover: SimulatedAccount,
                primary_password: str, failover_password: str, admin_token: str,
                sms: SimulatedSmsAggregator | None = None,
                sms_password: str = "") -> dict[str, object]:
    config = _responsys_config(port=port, data_dir=data_dir, primary=primary, failover=failover,
                               primary_password=primary_password, failover_password=failover_password,
                               admin_token=admin_token)
    if sms is not None:
        config["sms"] = {"upstreams": [{"name": "sms1", "url": sms.url, "user_name": sms.state.user_name,
                                        "password": sms_password}],
                         "alternate_senders": {SHORT_CODE: [LONG_CODE]}}
        # The demo's callback receivers run on this machine, which callbacks otherwise refuse.
        config["callbacks"] = {"allow_networks": ["127.0.0.0/8", "::1/128"]}
    return config


def _responsys_config(*, port: int, data_dir: Path, primary: SimulatedAccount, failover: SimulatedAccount,
                      primary_password: str, failover_password: str, admin_token: str) -> dict[str, object]:
    return {
        "listen": {"host": "127.0.0.1", "port": port},
        "public_url": f"http://127.0.0.1:{port}",
        "store": f"sqlite:///{data_dir / 'gateway.db'}",
        "session_secret": secrets.token_hex(32),
        "admin": {"token": admin_token},
        "requests": {"deadline": 5.0},
        "failover": {"hold_time": 10.0, "probe_interval": 1.0},
        "clients": [{"user_name": DEMO_CLIENT[0], "password": DEMO_CLIENT[1]}],
        "accounts": [
            {"name": "primary", "login_url": primary.url, "soap_url": primary.url + _SOAP,
             "user_name": primary.state.user_name, "password": primary_password},
            {"name": "failover", "login_url": failover.url, "soap_url": failover.url + _SOAP,
             "user_name": failover.state.user_name, "password": failover_password, "api_prefix": "/rest/haApi",
             "soap_ha_operations": True},
        ],
    }


_SOAP = "/webservices/services/ResponsysWSService"


async def run_demo(*, port: int, data_dir: Path) -> None:
    sock = bind_socket("127.0.0.1", port)  # bound first: `--port 0` picks the port the banner names
    port = sock.getsockname()[1]
    passwords = {name: secrets.token_urlsafe(12) for name in ("primary", "failover", "sms")}
    admin_token = secrets.token_hex(32)  # a fixed demo token would be a known admin password on any host
    primary = SimulatedAccount(name="primary", user_name="api_primary", password=passwords["primary"])
    failover = SimulatedAccount(name="failover", user_name="api_failover", password=passwords["failover"],
                                secondary=True)
    sms = SimulatedSmsAggregator(name="sms1", user_name="api_sms1", password=passwords["sms"], default_after_ms=500)
    with primary, failover, sms:
        raw = demo_config(port=port, data_dir=data_dir, primary=primary, failover=failover,
                          primary_password=passwords["primary"], failover_password=passwords["failover"],
                          admin_token=admin_token, sms=sms, sms_password=passwords["sms"])
        config = parse_config(raw, environ={})
        app = build_app(config)
        # uvicorn's signal capture on: SIGTERM/Ctrl-C shut the demo down gracefully, then end the process.
        listener = Listener(app, sock=sock, config=server_config(app, config, host="127.0.0.1", port=port),
                            capture_signals=True)
        try:
            await listener.start()
        except RuntimeError:
            return  # uvicorn said why (e.g. the app's lifespan failed); there is nothing to show
        print(_banner(port, primary, failover, sms, admin_token), flush=True)
        with contextlib.suppress(asyncio.CancelledError):
            await listener.wait_closed()


def _banner(port: int, primary: SimulatedAccount, failover: SimulatedAccount, sms: SimulatedSmsAggregator,
            admin_token: str) -> str:
    base = f"http://127.0.0.1:{port}"
    user, password = DEMO_CLIENT
    return f"""
aftm-gateway demo is running.
  gateway:   {base}      (point the app's base URL here)
  app login: user_name={user} password={password}
  REST:      curl -s -d 'user_name={user}&password={password}&auth_type=password' {base}/rest/api/v1.3/auth/token
  SOAP WSDL: {base}/webservices/wsdl/ResponsysWS_Level1.wsdl
  status:    curl -s -H 'Authorization: Bearer {admin_token}' {base}/admin/status
  primary account  {primary.url}   faults: curl -s -X POST {primary.control_url}/mode -d '{{"mode":"refuse"}}'
  failover account {failover.url}
  SMS:       curl -s -u {user}:{password} -H 'Content-Type: application/xml' {base}/sms/v1/messages \\
               -d '<mtMessage alternateDelivery="true"><destination address="+18475551212"/>'\\
'<source address="{SHORT_CODE}"/><text>PIN 1234</text></mtMessage>'
  SMS aggregator {sms.url}   make the carrier fail the short code: curl -s -X POST {sms.control_url}/sms/rules \\
               -d '{{"action":"fail","source":"{SHORT_CODE}"}}'
  failures:  {base}/portal/failures (log in as admin / {admin_token}, or as {user})
Ready: {base}
""".strip()
