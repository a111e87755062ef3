"""The drill's SMS part: one-time PINs to a short code whose carrier fails them, delivered by long code.

The simulated SMS aggregator fails every message from the short code (a failed delivery receipt a
moment after the send, or a refusal at submission for some destinations); the gateway must re-send
each PIN once from the long code and tell the app through linked callbacks. Half the PINs ask for
`ALL` receipts (expected: the original's failure with `fwdToMessageId`, then the alternate's success
with `fwdFromMessageId`), half for `FINAL` (expected: only the alternate's success). The app's
callback server is a real HTTP listener on loopback.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections import defaultdict
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx
from lxml import etree
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway.protocols.xml import parse_untrusted
from gateway_tools.drill.env import drill_server
from gateway_tools.harness import ServerThread, bind_socket
from gateway_tools.simulator.sms import SimulatedSmsAggregator

SMS_NAME, SMS_ADDRESS = "sms.drill.test", "127.0.0.5"
SHORT_CODE, LONG_CODE = "98765", "+13125550100"
PINS = 12  # at scale 1; at least 4
REFUSED_EVERY = 4  # every 4th PIN is refused at submission instead of failing by receipt


@dataclass(frozen=True)
class Callback:
    message_id: str
    is_error: bool
    fwd_to: str | None
    fwd_from: str | None
    description: str


@dataclass
class CallbackServer:
    """The app's callback endpoint: parses each callback and files it by the PIN's submitterMessageId."""

    received: dict[str, list[Callback]] = field(default_factory=lambda: defaultdict(list))
    lock: threading.Lock = field(default_factory=threading.Lock)
    thread: ServerThread | None = None

    async def _take(self, request: Request) -> Response:
        root = parse_untrusted(await request.body())
        status = root.find("status")
        callback = Callback(message_id=root.get("messageId", ""), fwd_to=root.get("fwdToMessageId"),
                            fwd_from=root.get("fwdFromMessageId"),
                            is_error=status is not None and status.get("isError") == "true",
                            description=(status.findtext("description") if status is not None else "") or "")
        with self.lock:
            self.received[root.get("submitterMessageId", "")].append(callback)
        return Response(status_code=200)

    async def start(self) -> str:
        self.thread = await drill_server(Starlette(routes=[Route("/pins", self._take, methods=["POST"])]),
                                         bind_socket(backlog=256)).start_async()
        return f"{self.thread.url}/pins"

    def stop(self) -> None:
        if self.thread is not None:
            self.thread.stop()

    def for_pin(self, submitter: str) -> list[Callback]:
        with self.lock:
            return list(self.received.get(submitter, []))


@dataclass(frozen=True)
class SmsSetup:
    aggregator: SimulatedSmsAggregator
    callbacks: CallbackServer
    callback_url: str


@contextlib.asynccontextmanager
async def sms_listeners(*, password: str, ssl_context: Any) -> AsyncIterator[SmsSetup]:
    aggregator = SimulatedSmsAggregator(name="sms1", user_name="api_sms1", password=password, host=SMS_ADDRESS,
                                        ssl_context=ssl_context, default_after_ms=50)
    callbacks = CallbackServer()
    try:
        await asyncio.to_thread(aggregator.start)
        url = await callbacks.start()
        yield SmsSetup(aggregator=aggregator, callbacks=callbacks, callback_url=url)
    finally:
        callbacks.stop()
        await asyncio.to_thread(aggregator.stop)


def gateway_config(*, scheme: str, aggregator: SimulatedSmsAggregator, password: str) -> dict[str, Any]:
    return {
        "sms": {"upstreams": [{"name": "sms1", "url": f"{scheme}://{SMS_NAME}:{aggregator.port}",
                               "user_name": "api_sms1", "password": password}],
                "alternate_senders": {SHORT_CODE: [LONG_CODE]}},
        # The app's callback server runs on loopback here, which callbacks otherwise refuse.
        "callbacks": {"allow_networks": ["127.0.0.0/8"], "timeout": 2.0},
    }


def _pin_message(index: int, *, level: str, callback_url: str) -> bytes:
    root = etree.Element("mtMessage", submitterMessageId=f"pin-{index}", alternateDelivery="true")
    etree.SubElement(root, "destination", address=f"+1847555{index:04d}", type="MDN")
    etree.SubElement(root, "source", address=SHORT_CODE, type="SC")
    etree.SubElement(root, "text").text = f"Your one-time PIN is {100000 + index * 7919 % 900000}"
    etree.SubElement(root, "receiptOption", callbackUrl=callback_url).text = level
    return bytes(etree.tostring(root, xml_declaration=True, encoding="UTF-8"))


def _as_expected(callbacks: list[Callback], *, level: str) -> bool:
    """ALL: the original's failure pointing at the alternate, then the alternate's success pointing back.
    FINAL: only the alternate's success."""
    successes = [c for c in callbacks if not c.is_error and c.fwd_from]
    if level == "FINAL":
        return len(callbacks) == 1 and len(successes) == 1
    failures = [c for c in callbacks if c.is_error and c.fwd_to]
    return (len(callbacks) == 2 and len(failures) == 1 and len(successes) == 1
            and failures[0].fwd_to == successes[0].message_id and successes[0].fwd_from == failures[0].message_id
            and callbacks[0] is failures[0])


async def run_pins(*, gateway_url: str, user: str, password: str, setup: SmsSetup, scale: float,
                   out: list[str]) -> int:
    """Send the PINs, wait (bounded) for their callbacks, print what happened; 1 when a PIN was lost."""
    aggregator, callbacks = setup.aggregator, setup.callbacks
    count = max(4, round(PINS * scale))
    for index in range(count):
        destination = f"+1847555{index:04d}"
        action = "refuse" if index % REFUSED_EVERY == REFUSED_EVERY - 1 else "fail"
        aggregator.rule(action, source=SHORT_CODE, destination=destination,
                        description="Carrier: short code blocked" if action == "refuse" else "Carrier: undeliverable",
                        error_code="1401" if action == "refuse" else "1001")
    levels = {f"pin-{i}": "ALL" if i % 2 == 0 else "FINAL" for i in range(count)}
    async with httpx.AsyncClient(base_url=gateway_url, auth=(user, password), timeout=10.0, trust_env=False) as app:
        answers = await asyncio.gather(*(
            app.post("/sms/v1/messages", content=_pin_message(i, level=levels[f"pin-{i}"],
                                                               callback_url=setup.callback_url),
                     headers={"Content-Type": "application/xml"}) for i in range(count)))
        accepted = sum(1 for answer in answers if answer.status_code == 201)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(20.0, 40.0 * scale)
        while loop.time() < deadline and not all(  # noqa: ASYNC110 (polls listeners on other threads)
                _as_expected(callbacks.for_pin(pin), level=level) for pin, level in levels.items()):
            await asyncio.sleep(0.1)
        await asyncio.sleep(0.3)  # a late, unexpected extra callback would show in the counts below
        statuses: dict[str, list[str]] = {}
        for pin in levels:
            listed = (await app.get("/sms/v1/messages", params={"submitterMessageId": pin})).json()["messages"]
            statuses[pin] = sorted(f"{m['source']['address']}:{m['status']}" for m in listed)
    by_sender = aggregator.counts().get("by_sender", {})
    delivered_by_long_code = sum(1 for s in statuses.values() if f"{LONG_CODE}:Delivered" in s)
    forwarded = sum(1 for s in statuses.values() if f"{SHORT_CODE}:Forwarded" in s)
    right = {level: sum(1 for pin, lv in levels.items() if lv == level
                        and _as_expected(callbacks.for_pin(pin), level=level)) for level in ("ALL", "FINAL")}
    wanted = {level: sum(1 for lv in levels.values() if lv == level) for level in ("ALL", "FINAL")}
    out.append("")
    out.append(f"SMS alternate delivery: {count} PINs to short code {SHORT_CODE} (carrier fails every one: "
               f"{count // REFUSED_EVERY} refused at submission, the rest by failed receipt)")
    out.append(f"  accepted {accepted}, forwarded to long code {forwarded}, delivered from {LONG_CODE} "
               f"{delivered_by_long_code}, aggregator took from {SHORT_CODE}: {by_sender.get(SHORT_CODE, 0)}, "
               f"from {LONG_CODE}: {by_sender.get(LONG_CODE, 0)}")
    out.append(f"  callbacks as expected: ALL {right['ALL']}/{wanted['ALL']} (original failed with fwdToMessageId, "
               f"then alternate delivered with fwdFromMessageId), FINAL {right['FINAL']}/{wanted['FINAL']} "
               f"(alternate delivered only)")
    example = next((pin for pin, level in levels.items() if level == "ALL"), None)
    if example is not None:
        for callback in callbacks.for_pin(example):
            link = f"fwdTo={callback.fwd_to}" if callback.fwd_to else f"fwdFrom={callback.fwd_from}"
            out.append(f"  {example} callback: isError={str(callback.is_error).lower()} {link} "
                       f"({callback.description})")
    ok = (accepted == count and delivered_by_long_code == count and forwarded == count
          and right == wanted and by_sender.get(LONG_CODE, 0) == count)
    out.append("SMS " + ("passed" if ok else "FAILED: a PIN was not delivered by long code or a callback was wrong"))
    return 0 if ok else 1
