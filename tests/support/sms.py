"""An SMS deployment on loopback: the simulated aggregator behind TLS and DNS, the gateway, an app's receiver.

A conftest activates the fixtures (`make_sms`, `sms`) by importing them (`tests/integration/sms`,
`tests/integration/reporting`).

- `sms1.test` resolves to 127.0.0.4 (and `sms2.test` to 127.0.0.5 when a test starts a second
  aggregator) through the real DNS server on loopback; the aggregators serve TLS with certificates from
  the test CA (trustme), which is all the gateway trusts.
- The gateway runs under uvicorn in a thread on an ephemeral port with an SQLite store in `tmp_path`
  (a restart reuses the store), beside one simulated Responsys account (`primary.test`, 127.0.0.2).
- The app's callback receiver is a real HTTP server on 127.0.0.1, allowed by
  `callbacks.allow_networks: ["127.0.0.0/8"]` (tests of the refusal override that).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import trustme
from lxml import etree
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway.protocols.xml import parse_untrusted
from gateway_tools.loopback_dns import LoopbackDNS
from gateway_tools.simulator.server import SimulatedAccount
from gateway_tools.simulator.sms import SimulatedSmsAggregator
from tests.support.gateway import GatewayHost, merge_config, start_account
from tests.support.servers import ServerThread, wait_until
from tests.support.tls import server_context

APP_USER, APP_PASSWORD = "app", "app-password"
SHORT_CODE, LONG_CODE = "98765", "+13125550100"
LONELY_SHORT_CODE = "55555"  # a short code with no long code
DESTINATION = "+18475551212"
SMS_PASSWORD = "sms1-password"


@dataclass(frozen=True, slots=True)
class Posted:
    path: str
    headers: dict[str, str]
    body: bytes

    @property
    def xml(self) -> etree._Element:
        return parse_untrusted(self.body)


class CallbackReceiver:
    """The app's callback endpoint: records every POST, answers `status` (200 unless a test changes it)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._posts: list[Posted] = []
        self.status = 200
        self.server = ServerThread(Starlette(routes=[Route("/{path:path}", self._take, methods=["POST"])]),
                                   lifespan="off")

    async def _take(self, request: Request) -> Response:
        posted = Posted(request.url.path, dict(request.headers), await request.body())
        with self._lock:
            self._posts.append(posted)
        return Response(status_code=self.status)

    @property
    def posts(self) -> list[Posted]:
        with self._lock:
            return list(self._posts)

    def url(self, path: str = "/callback") -> str:
        return f"{self.server.url}{path}"

    def wait_for(self, count: int, *, timeout: float = 15.0) -> list[Posted]:
        wait_until(lambda: len(self.posts) >= count, timeout=timeout, message=f"{count} callbacks")
        return self.posts


def mt_message(*, text: str = "123857AB12", destination: str = DESTINATION, source: str = SHORT_CODE,
               alternate: bool = True, level: str | None = "ALL", callback_url: str | None = None,
               submitter: str = "239487234987234") -> bytes:
    """An app's mtMessage, shaped like the vendor's example."""
    root = etree.Element("mtMessage", submitterMessageId=submitter)
    if alternate:
        root.set("alternateDelivery", "true")
    etree.SubElement(root, "destination", carrier="102", address=destination, type="MDN")
    etree.SubElement(root, "source", address=source, type="LC" if source.startswith("+") else "SC")
    etree.SubElement(root, "text").text = text
    if level is not None:
        option = etree.SubElement(root, "receiptOption")
        option.text = level
        if callback_url is not None:
            option.set("callbackUrl", callback_url)
    etree.SubElement(root, "transaction", id="6439376297230")
    return bytes(etree.tostring(root, xml_declaration=True, encoding="UTF-8"))


@dataclass
class SmsDeployment(GatewayHost):
    ca: trustme.CA
    ca_file: str
    store_path: Path
    dns: LoopbackDNS
    account: SimulatedAccount
    aggregator: SimulatedSmsAggregator
    receiver: CallbackReceiver
    overrides: dict[str, Any] = field(default_factory=dict)
    gateway: ServerThread | None = None
    extra: list[SimulatedSmsAggregator] = field(default_factory=list)

    def raw_config(self, public_url: str) -> dict[str, Any]:
        base: dict[str, Any] = {
            "public_url": public_url,
            "store": f"sqlite:///{self.store_path}",
            "dns": {"nameservers": [self.dns.nameserver], "port": self.dns.port, "timeout": 1.0},
            "tls": {"ca_bundle": self.ca_file},
            "upstream": {"connect_timeout": 1.0, "read_timeout": 2.0},
            "failover": {"failure_threshold": 3, "window": 10.0, "hold_time": 1.0, "probe_interval": 0.5},
            "clients": [{"user_name": APP_USER, "password": APP_PASSWORD}],
            "accounts": [{"name": "primary", "login_url": f"https://primary.test:{self.account.port}",
                          "user_name": "api_primary", "password": "primary-password"}],
            "sms": {
                "upstreams": [{"name": "sms1", "url": f"https://sms1.test:{self.aggregator.port}",
                               "user_name": "api_sms1", "password": SMS_PASSWORD}],
                "alternate_senders": {SHORT_CODE: [LONG_CODE], LONELY_SHORT_CODE: []},
            },
            "callbacks": {"allow_networks": ["127.0.0.0/8"], "timeout": 2.0},
        }
        return merge_config(base, self.overrides)



    def with_second_upstream(self) -> SimulatedSmsAggregator:
        """Start `sms2` and configure both aggregators, sms1 first (call before starting the gateway)."""
        second = self.start_second_aggregator()
        self.overrides["sms"] = {"upstreams": [
            {"name": "sms1", "url": f"https://sms1.test:{self.aggregator.port}", "user_name": "api_sms1",
             "password": SMS_PASSWORD},
            {"name": "sms2", "url": f"https://sms2.test:{second.port}", "user_name": "api_sms2",
             "password": "sms2-password"}]}
        return second

    def start_second_aggregator(self) -> SimulatedSmsAggregator:
        second = SimulatedSmsAggregator(name="sms2", user_name="api_sms2", password="sms2-password",
                                        host="127.0.0.5", ssl_context=server_context(self.ca, "sms2.test")).start()
        self.dns.set("sms2.test", ["127.0.0.5"])
        self.extra.append(second)
        return second

    # --- an app's view -------------------------------------------------------------------------

    def http(self, **kwargs: Any) -> httpx.Client:
        kwargs.setdefault("auth", (APP_USER, APP_PASSWORD))
        return httpx.Client(base_url=self.url, timeout=15.0, trust_env=False, **kwargs)

    def submit(self, body: bytes | None = None, *, content_type: str = "application/xml", **message: Any) -> str:
        """Submit an mtMessage (default: the vendor's example to the receiver); return the messageId."""
        if body is None:
            message.setdefault("callback_url", self.receiver.url())
            body = mt_message(**message)
        with self.http() as client:
            response = client.post("/sms/v1/messages", content=body, headers={"Content-Type": content_type})
        assert response.status_code == 201, response.text
        message_id = etree.fromstring(response.content).get("messageId")
        assert message_id
        return message_id

    def status(self, message_id: str) -> dict[str, Any]:
        with self.http() as client:
            response = client.get(f"/sms/v1/messages/{message_id}")
        assert response.status_code == 200, response.text
        view: dict[str, Any] = response.json()
        return view

    def find(self, submitter: str) -> list[dict[str, Any]]:
        with self.http() as client:
            response = client.get("/sms/v1/messages", params={"submitterMessageId": submitter})
        assert response.status_code == 200, response.text
        found: list[dict[str, Any]] = response.json()["messages"]
        return found

    def wait_status(self, message_id: str, status: str, *, timeout: float = 15.0) -> dict[str, Any]:
        wait_until(lambda: self.status(message_id)["status"] == status, timeout=timeout,
                   message=f"message {message_id} to be {status}")
        return self.status(message_id)

    def receipt_url(self, upstream_message_id: str) -> str:
        """The receipt URL the gateway gave the aggregator for one of its messages."""
        for message in self.aggregator.messages():
            if message.message_id == upstream_message_id and message.callback_url is not None:
                return message.callback_url
        raise AssertionError(f"the aggregator has no message {upstream_message_id}")


def receipt(upstream_message_id: str, *, failed: bool, description: str = "Carrier failure",
            error_code: str = "1001") -> bytes:
    """A delivery receipt as an aggregator sends it."""
    root = etree.Element("mtMessageResponse", messageId=upstream_message_id)
    etree.SubElement(root, "type").text = "Carrier"
    status = etree.SubElement(root, "status", isError="true" if failed else "false")
    etree.SubElement(status, "description").text = description if failed else "Delivered"
    if failed:
        etree.SubElement(status, "errorCode").text = error_code
    return bytes(etree.tostring(root, xml_declaration=True, encoding="UTF-8"))


@pytest.fixture
def make_sms(test_ca: trustme.CA, dns_server: LoopbackDNS, ca_file: str,
             tmp_path: Path) -> Iterator[Callable[..., SmsDeployment]]:
    """Build (and afterwards tear down) an SMS deployment; keyword arguments override gateway config keys."""
    built: list[SmsDeployment] = []

    def build(*, start: bool = True, **overrides: Any) -> SmsDeployment:
        account = start_account(test_ca, name="primary", host="127.0.0.2", hostname="primary.test")
        aggregator = SimulatedSmsAggregator(name="sms1", user_name="api_sms1", password=SMS_PASSWORD,
                                            host="127.0.0.4", ssl_context=server_context(test_ca, "sms1.test"))
        receiver = CallbackReceiver()
        deployment = SmsDeployment(ca=test_ca, ca_file=ca_file, store_path=tmp_path / "gateway.db", dns=dns_server,
                                   account=account, aggregator=aggregator, receiver=receiver, overrides=overrides)
        built.append(deployment)
        aggregator.start()
        receiver.server.start()
        dns_server.set("primary.test", ["127.0.0.2"])
        dns_server.set("sms1.test", ["127.0.0.4"])
        if start:
            deployment.start_gateway()
        return deployment

    yield build
    for deployment in built:
        deployment.stop_gateway()
        for aggregator in (deployment.aggregator, *deployment.extra):
            aggregator.stop()
        deployment.receiver.server.stop()
        deployment.account.stop()


@pytest.fixture
def sms(make_sms: Callable[..., SmsDeployment]) -> SmsDeployment:
    return make_sms()
